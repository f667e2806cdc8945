"""The floor's figures (issue 19, point 6): many simulated workstations on 127.0.0.1 reporting to a real
floor, the threat alerts' latency to the wallboard and to a webhook, and what survives kill -9 and an
outage.

What runs, all real:
  - its own PostgreSQL cluster (initdb/pg_ctl in a temp folder, fsync on: tests/floor/pg.py);
  - the floor as a subprocess, `python -m callguard.floor.cli serve` over HTTPS (a self-signed
    certificate), with a webhook channel (rules: threat and help) to an HTTPS receiver in this script;
  - N workstations in `--procs` worker processes: each its own IncidentStore (SQLite, fsync at each
    commit) written through StoreSink(share="flagged"), and its own FloorLink (its sender and its
    notices long poll, the product's settings unless told otherwise) shipping the outbox over HTTPS;
  - a supervisor's wallboard: an admin logged in, reading /api/v1/floor/stream (SSE).

The event stream: each agent takes a call, then idles (`--call-s`, `--gap-s`, log-normal); a call is
calm, or tense (profanity, level tense, a prompt, acknowledged), or abusive (insults, tense then abusive,
prompts, limits stated, some transferred), or has a threat (`--threat-share`: the threat, the threat
alert prompt, acknowledged, released), or a help request (`--help-share`).

Latency: from just before StoreSink.on_event of the threat alert (or help request) on the workstation
to the alert's arrival (a) on the wallboard's SSE stream, (b) at the webhook receiver (time.time() on
one machine). Percentiles are nearest-rank.

Timeline: steady for `--steady-s`; kill -9 of the floor, restarted after `--down-s`; settle; kill -9 of
the PostgreSQL postmaster, restarted after `--down-s`; settle; the floor stopped (SIGTERM) for
`--outage-s`, restarted; settle; then no new call, the calls running end, every outbox drains. Then:
the events in PostgreSQL against every message queued in every outbox (none missing, none extra, no
(workstation, seq) twice, each call's seqs complete), each alert on the wallboard and at the webhook.

    python scripts/bench_floor.py                         # 500 workstations, the 10-minute outage
    python scripts/bench_floor.py --outage-s 60 --steady-s 300 --json out.json
    python scripts/bench_floor.py --quick --json out.json # 20 workstations, seconds-long faults (a test)

Exit status 1 when an event or an alert was lost (the latency goal is reported, not enforced: it is a
figure of the machine).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import http.server
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "tests" / "floor"):  # callguard, and the cluster helpers (pg.py)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import psycopg  # noqa: E402
from pg import (  # noqa: E402
    PgCluster,
    TlsCert,
    free_port,
    kill_postmaster,
    make_tls_cert,
    pg_bindir,
    restart_cluster,
    start_cluster,
    stop_cluster,
)

from callguard.core.config import FloorConfig as LinkSettings  # noqa: E402
from callguard.core.events import (  # noqa: E402
    Abuse,
    AgentAction,
    CallEnd,
    CallStart,
    Event,
    HelpRequest,
    LevelChange,
    Match,
    Prompt,
)
from callguard.floor import db  # noqa: E402
from callguard.live.floor_link import FloorEndpoint, FloorLink  # noqa: E402
from callguard.sinks.base import CallInfo  # noqa: E402
from callguard.sinks.store import IncidentStore, StoreSink  # noqa: E402

ADMIN_LOGIN = "bench-admin"
TEAM_SIZE = 50
QUEUES = ("billing", "support", "sales", "retention")
SSE_RECONNECT_S = 0.5


# --- the event stream -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamShape:
    call_s: float  # mean call duration
    gap_s: float  # mean idle time between an agent's calls
    threat_share: float
    help_share: float
    abusive_share: float = 0.06
    tense_share: float = 0.15


def lognormal(rng: random.Random, mean: float, sigma: float = 0.5) -> float:
    """A log-normal draw with this mean (call lengths and idle times are skewed, never negative)."""
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def abuse(t: float, category: str, severity: int, words: tuple[str, ...]) -> Abuse:
    match = Match(category, severity, words, " ".join(words))  # type: ignore[arg-type]
    return Abuse(t, "customer", category, severity, words, (match,), " ".join(words))  # type: ignore[arg-type]


def level(t: float, to: str, previous: str, reason: str) -> LevelChange:
    return LevelChange(t, "system", to, previous, reason)  # type: ignore[arg-type]


def prompt(t: float, prompt_id: str, at_level: str, title: str, *, alert: bool = False) -> Prompt:
    return Prompt(t, "system", prompt_id, at_level, title, alert=alert)  # type: ignore[arg-type]


def action(t: float, name: str) -> AgentAction:
    return AgentAction(t, "agent", name)  # type: ignore[arg-type]


def call_script(rng: random.Random, shape: StreamShape) -> list[Event]:
    """One call's events in time order, from CallStart to CallEnd."""
    duration = max(0.5, min(lognormal(rng, shape.call_s), 4 * shape.call_s))
    at = rng.uniform(0.2, 0.6) * duration  # when the trouble starts
    step = min(1.0, duration / 40)
    events: list[Event] = [CallStart(0.0, "system")]
    draw = rng.random()
    if draw < shape.threat_share:
        events += [
            abuse(at, "threat", 3, ("i know where you live",)),
            level(at + step * 0.1, "abusive", "calm", "threat"),
            prompt(at + step * 0.2, "threat-alert", "abusive", "Threat of violence", alert=True),
            action(at + step * 3, "acknowledged"),
            level(at + step * 4, "release", "abusive", "threat"),
            action(at + step * 5, "released"),
        ]
    elif draw < shape.threat_share + shape.abusive_share:
        events += [
            abuse(at, "insult", 2, ("idiot",)),
            level(at + step * 0.1, "tense", "calm", "insult"),
            prompt(at + step * 0.2, "tense-acknowledge", "tense", "Acknowledge the frustration"),
            abuse(at + step * 4, "insult", 2, ("moron",)),
            level(at + step * 4.1, "abusive", "tense", "insults"),
            prompt(at + step * 4.2, "abusive-limits", "abusive", "State the limits"),
            action(at + step * 6, "limits_stated"),
        ]
        if rng.random() < 0.3:
            events += [
                level(at + step * 8, "transfer", "abusive", "repeated"),
                action(at + step * 9, "transferred"),
            ]
    elif draw < shape.threat_share + shape.abusive_share + shape.tense_share:
        events += [
            abuse(at, "profanity", 1, ("damn",)),
            level(at + step * 0.1, "tense", "calm", "profanity"),
            prompt(at + step * 0.2, "tense-calm", "tense", "Stay calm"),
            action(at + step * 2, "acknowledged"),
        ]
    if rng.random() < shape.help_share and not any(isinstance(e, Prompt) and e.alert for e in events):
        events.append(HelpRequest(rng.uniform(0.3, 0.8) * duration, "agent", "irate caller, please come"))
    events.sort(key=lambda event: event.t)
    ends_at = max(duration, events[-1].t + step)
    events.append(CallEnd(ends_at, "system", ends_at, "api"))
    return events


def alert_kind(event: Event) -> str | None:
    """The floor alert this event makes, when it is one whose latency is measured."""
    if isinstance(event, Prompt) and event.alert:
        return "threat"
    return "help" if isinstance(event, HelpRequest) else None


# --- a worker process: simulated workstations --------------------------------------------------------------


@dataclass(frozen=True)
class LinkTuning:
    poll_s: float
    retry_max_s: float
    alert_timeout_s: float


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    workstations: list[tuple[str, str, str]]  # (name, credential, agent)
    folder: Path
    floor_port: int
    ca_file: Path
    shape: StreamShape
    tuning: LinkTuning
    seed: int


class SimulatedWorkstation:
    """One agent's workstation: its incident store, the store's sink, its floor link, its calls."""

    def __init__(self, name: str, credential: str, agent: str, spec: WorkerSpec, tls: ssl.SSLContext,
                 reports: Any) -> None:  # fmt: skip
        self.name = name
        self.agent = agent
        self.rng = random.Random(f"{spec.seed}:{name}")
        self.shape = spec.shape
        self.store = IncidentStore(spec.folder / f"{name}.sqlite")
        self.sink = StoreSink(self.store, share="flagged")
        settings = LinkSettings(
            url=f"https://127.0.0.1:{spec.floor_port}", ca_file=str(spec.ca_file), share="flagged",
            alert_timeout_s=spec.tuning.alert_timeout_s, retry_max_s=spec.tuning.retry_max_s,
            poll_s=spec.tuning.poll_s,
        )  # fmt: skip
        endpoint = FloorEndpoint("127.0.0.1", spec.floor_port, credential, tls)
        self.link = FloorLink(settings, endpoint, lambda: self.store, self._panel)
        self.sink.on_priority = self.link.wake  # as the daemon wires it
        self.reports = reports
        self.calls = 0
        self.events = 0
        self.call: CallInfo | None = None
        self.script: list[Event] = []
        # a random phase, so the floor sees a steady state from the start
        self.next_due = time.time() + self.rng.uniform(0, self.shape.gap_s + self.shape.call_s)

    def _panel(self, message: dict[str, Any]) -> None:
        """The agent's panel: the link's "Supervisor not reached" lines are counted."""
        if message.get("state") == "unreached":
            self.reports.put(
                ("unreached", self.name, message.get("call_id"), message.get("about"), time.time())
            )

    def step(self, *, winding_down: bool) -> bool:
        """Hand the next event to the store's sink; False when there is nothing more to do."""
        if self.call is None:
            if winding_down:
                return False
            self.calls += 1
            queue_name = QUEUES[self.calls % len(QUEUES)]
            call_id = f"{self.name}-c{self.calls:05d}"
            facts = {"call_id": call_id, "agent_name": self.agent, "queue": queue_name,
                     "language": self.rng.choice(("en", "fr")), "customer_name": "Customer"}  # fmt: skip
            self.call = CallInfo(call_id, facts, "api", time.time())
            self.script = call_script(self.rng, self.shape)
        event = self.script.pop(0)
        kind = alert_kind(event)
        detected = time.time()
        self.sink.on_event(self.call, event)
        self.events += 1
        if kind is not None:
            self.reports.put(("alert", self.name, self.call.call_id, kind, detected, time.time() - detected))
        if self.script:
            self.next_due = self.call.started_at + self.script[0].t
        else:
            self.call = None
            self.next_due = time.time() + lognormal(self.rng, self.shape.gap_s)
        return True


def worker_main(spec: WorkerSpec, reports: Any, wind_down: MpEvent, leave: MpEvent) -> None:
    """Run this worker's workstations until told to wind down, then drain their outboxes."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    # the links' own log lines ("floor not reached", "supervisor not reached"), one file per worker
    logging.basicConfig(filename=spec.folder / f"worker-{spec.index}.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s %(fields)s")  # fmt: skip
    logging.getLogger().handlers[0].addFilter(with_fields)
    tls = ssl.create_default_context(cafile=str(spec.ca_file))
    stations = [
        SimulatedWorkstation(name, cred, agent, spec, tls, reports) for name, cred, agent in spec.workstations
    ]
    for station in stations:
        station.link.start()
    reports.put(("ready", spec.index, len(stations)))
    due = [(station.next_due, i) for i, station in enumerate(stations)]
    last_progress = 0.0
    while not wind_down.is_set():
        due.sort()
        when, i = due[0]
        wind_down.wait(max(0.0, min(when - time.time(), 0.5)))
        if time.time() >= when and not wind_down.is_set():
            stations[i].step(winding_down=False)
            due[0] = (stations[i].next_due, i)
        if time.time() - last_progress > 2:
            last_progress = time.time()
            reports.put(("progress", spec.index, sum(s.events for s in stations), pending(stations)))
    for station in stations:  # the calls running end now, in order; no new call
        while station.step(winding_down=True):
            pass
    generated = {"calls": sum(s.calls for s in stations), "events": sum(s.events for s in stations)}
    reports.put(("wound_down", spec.index, generated))
    while not leave.is_set():
        reports.put(("progress", spec.index, generated["events"], pending(stations)))
        leave.wait(1.0)
    with ThreadPoolExecutor(32) as pool:  # each stop() joins two threads: in parallel
        list(pool.map(lambda s: s.link.stop(), stations))
    for station in stations:
        station.store.close()
    reports.put(("left", spec.index))


def with_fields(record: logging.LogRecord) -> bool:
    """callguard logs its details in `extra={"fields": ...}`: shown when present."""
    record.fields = getattr(record, "fields", "")
    return True


def pending(stations: list[SimulatedWorkstation]) -> int:
    return sum(station.store.outbox_pending_count() for station in stations)


# --- the floor's side: the floor process, the wallboard, the webhook receiver ----------------------------


class FloorProcess:
    """`python -m callguard.floor.cli serve --config F` as a subprocess, its output appended to a log."""

    def __init__(self, config_file: Path, port: int, tls: TlsCert, log_file: Path) -> None:
        self.config_file = config_file
        self.port = port
        self.tls = tls
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start it and wait until it answers over HTTPS; the seconds that took."""
        began = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "callguard.floor.cli", "serve", "--config", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            )  # fmt: skip
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"the floor exited ({self.process.returncode}): see {self.log_file}")
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"the floor did not answer within {timeout:g} s: see {self.log_file}")
            time.sleep(0.1)
        return time.monotonic() - began

    def answers(self) -> bool:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.tls.client_context(), timeout=2
        )
        try:
            conn.request("GET", "/api/v1/me")
            return conn.getresponse().status == 401
        except OSError:
            return False
        finally:
            conn.close()

    def kill(self) -> int:
        assert self.process is not None
        pid = self.process.pid
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return pid

    def stop(self) -> float:
        """SIGTERM (uvicorn's graceful shutdown); the seconds it took to exit."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - began

    @property
    def pid(self) -> int | None:
        return None if self.process is None or self.process.poll() is not None else self.process.pid


@dataclass
class Arrivals:
    """First arrival time of each alert, keyed (workstation, call_id, kind), and how it came."""

    first: dict[tuple[str, str, str], float] = field(default_factory=dict)
    copies: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, key: tuple[str, str, str], at: float, how: str) -> None:
        with self.lock:
            self.copies[how] += 1
            self.first.setdefault(key, at)


class Wallboard:
    """An admin's wallboard: logged in, reading the floor's SSE stream on a thread, reconnecting when the
    floor goes away (the page does the same; its first event, `state`, holds the open alerts)."""

    def __init__(self, port: int, tls: TlsCert, password: str) -> None:
        self.port = port
        self.tls = tls
        self.password = password
        self.arrivals = Arrivals()
        self.connects = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread = threading.Thread(target=self._run, name="wallboard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.close()
        self._thread.join(5)

    def _connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.tls.client_context(), timeout=40
        )

    def _login(self) -> str:
        conn = self._connection()
        try:
            body = json.dumps({"login": ADMIN_LOGIN, "password": self.password})
            conn.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            cookie = answer.getheader("set-cookie")
            if answer.status != 200 or cookie is None:
                raise OSError(f"login answered {answer.status}")
            return cookie.split(";", 1)[0]
        finally:
            conn.close()

    def _run(self) -> None:
        cookie = ""
        while not self._stop.is_set():
            try:
                cookie = cookie or self._login()
                self._read_stream(cookie)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.errors[type(error).__name__] += 1
                if "401" in str(error):
                    cookie = ""
            self._stop.wait(SSE_RECONNECT_S)

    def _read_stream(self, cookie: str) -> None:
        conn = self._conn = self._connection()
        try:
            conn.request(
                "GET", "/api/v1/floor/stream", headers={"Cookie": cookie, "Accept": "text/event-stream"}
            )
            response = conn.getresponse()
            if response.status != 200:
                raise OSError(f"the stream answered {response.status}")
            self.connects += 1
            name = ""
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self._on_event(name, json.loads(line[6:]), time.time())
                if self._stop.is_set():
                    return
        finally:
            conn.close()

    def _on_event(self, name: str, payload: dict[str, Any], at: float) -> None:
        if name in ("alert", "help"):
            self.arrivals.saw((payload["workstation"], payload["call_id"], payload["kind"]), at, "stream")
        elif name == "state":
            for alert in [*payload.get("alerts", []), *payload.get("help", [])]:
                self.arrivals.saw((alert["workstation"], alert["call_id"], alert["kind"]), at, "state")


class WebhookReceiver:
    """An HTTPS receiver of the floor's webhook channel, stamping each POST with its arrival time."""

    def __init__(self, tls: TlsCert) -> None:
        self.arrivals = Arrivals()
        self.posts: Counter[str] = Counter()  # per alert id (the payload's footer): a resend counts twice
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                receiver.record(body, at)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: arrivals are counted."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.server_context().wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/hooks/bench"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, body: dict[str, Any], at: float) -> None:
        [attachment] = body["attachments"]
        facts = {item["title"]: item["value"] for item in attachment["fields"]}
        self.posts[attachment["footer"]] += 1
        kind = "help" if attachment["color"] == "#ef6c00" else "threat"
        self.arrivals.saw((facts["Workstation"], facts["Call"], kind), at, "post")


# --- measuring ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 when it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def nearest_rank(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def latency_figures(delays: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(delays),
        "p50_s": nearest_rank(delays, 0.50),
        "p95_s": nearest_rank(delays, 0.95),
        "max_s": max(delays) if delays else None,
    }


@dataclass
class Timeline:
    started: float = field(default_factory=time.time)
    phases: list[tuple[float, str]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    cpu_steady: dict[str, float] = field(default_factory=dict)

    def enter(self, name: str) -> None:
        self.phases.append((time.time(), name))
        print(f"[{time.time() - self.started:7.1f} s] {name}", flush=True)

    def phase_at(self, moment: float) -> str:
        index = bisect.bisect_right([at for at, _ in self.phases], moment) - 1
        return self.phases[max(index, 0)][1]

    def fault(self, what: str, **facts: Any) -> None:
        self.faults.append({"what": what, "at_s": round(time.time() - self.started, 2), **facts})


@dataclass
class Collected:
    """What the workers report, gathered on a thread of the main process."""

    alerts: list[tuple[str, str, str, float, float]] = field(default_factory=list)
    unreached: list[tuple[str, str, str, float]] = field(default_factory=list)
    ready: int = 0
    wound_down: dict[int, dict[str, int]] = field(default_factory=dict)
    left: set[int] = field(default_factory=set)
    events: dict[int, int] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)

    def take(self, report: tuple[Any, ...]) -> None:
        kind, *rest = report
        if kind == "alert":
            self.alerts.append((rest[0], rest[1], rest[2], rest[3], rest[4]))
        elif kind == "unreached":
            self.unreached.append((rest[0], rest[1], rest[2], rest[3]))
        elif kind == "ready":
            self.ready += rest[1]
        elif kind == "progress":
            self.events[rest[0]], self.pending[rest[0]] = rest[1], rest[2]
        elif kind == "wound_down":
            self.wound_down[rest[0]] = rest[1]
        elif kind == "left":
            self.left.add(rest[0])


def collect(reports: Any, collected: Collected, stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(queue.Empty):
            collected.take(reports.get(timeout=0.2))


# --- the checks -----------------------------------------------------------------------------------------


def outbox_rows(folder: Path, name: str) -> list[tuple[int, str, str, float | None]]:
    with contextlib.closing(sqlite3.connect(f"file:{folder / name}.sqlite?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT seq, call_id, kind, sent_at FROM outbox ORDER BY seq").fetchall()


def check_delivery(dsn: str, folder: Path, names: list[str]) -> dict[str, Any]:
    """Every message of every outbox against the events in PostgreSQL."""
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT w.name, e.seq, e.call_id, e.kind FROM events e"
            " JOIN workstations w ON w.id = e.workstation_id"
        ).fetchall()
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY workstation_id, seq HAVING count(*) > 1) d"
        ).fetchone()
        alerts = conn.execute("SELECT kind, count(*) FROM alerts GROUP BY kind").fetchall()
        deliveries = conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall()
    in_pg: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)
    for name, seq, call_id, kind in stored:
        in_pg[name][int(seq)] = (call_id, kind)
    queued = missing = extra = different = unsent = 0
    calls = incomplete = misordered = 0
    for name in names:
        rows = outbox_rows(folder, name)
        queued += len(rows)
        unsent += sum(1 for row in rows if row[3] is None)
        mine = {seq: (call_id, kind) for seq, call_id, kind, _ in rows}
        floor_side = in_pg.get(name, {})
        missing += len(mine.keys() - floor_side.keys())
        extra += len(floor_side.keys() - mine.keys())
        different += sum(1 for seq in mine.keys() & floor_side.keys() if mine[seq] != floor_side[seq])
        per_call: dict[str, list[int]] = defaultdict(list)
        for seq, (call_id, _kind) in mine.items():
            per_call[call_id].append(seq)
        floor_calls: dict[str, list[int]] = defaultdict(list)
        for seq, (call_id, _kind) in floor_side.items():
            floor_calls[call_id].append(seq)
        for call_id, seqs in per_call.items():
            calls += 1
            if sorted(seqs) != sorted(floor_calls.get(call_id, [])):
                incomplete += 1
                continue
            kinds = [floor_side[seq][1] for seq in sorted(seqs)]
            if kinds[0] != "call_started" or kinds[-1] != "call_ended":
                misordered += 1
    return {
        "queued": queued,
        "in_postgres": len(stored),
        "missing": missing,
        "extra": extra,
        "different": different,
        "twice": int(twice[0]) if twice else 0,
        "unsent": unsent,
        "calls": calls,
        "calls_incomplete": incomplete,
        "calls_misordered": misordered,
        "alerts_in_postgres": {kind: int(n) for kind, n in alerts},
        "webhook_deliveries": {state: int(n) for state, n in deliveries},
    }


def link_errors(folder: Path) -> list[float]:
    """When the workstations' links logged "floor not reached" (each time the error changed)."""
    moments = []
    for log_file in folder.glob("worker-*.log"):
        for line in log_file.read_text(errors="replace").splitlines():
            if "floor not reached" in line:
                stamp, millis = line[:23].split(",")
                moments.append(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000)
    return moments


def alert_figures(
    collected: Collected,
    timeline: Timeline,
    wall: Arrivals,
    hook: Arrivals,
    alert_timeout_s: float,
    errors_at: list[float],
) -> dict[str, Any]:
    by_phase: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    lost: dict[str, list[str]] = {"wallboard": [], "webhook": []}
    write_s: list[float] = []
    for name, call_id, kind, detected, write in collected.alerts:
        phase = timeline.phase_at(detected)
        write_s.append(write)
        for where, arrivals in (("wallboard", wall), ("webhook", hook)):
            arrived = arrivals.first.get((name, call_id, kind))
            if arrived is None:
                lost[where].append(f"{name}/{call_id}/{kind}")
            else:
                by_phase[phase][where].append(arrived - detected)
    unreached = Counter(timeline.phase_at(at) for *_, at in collected.unreached)
    errors = Counter(timeline.phase_at(at) for at in errors_at)
    # the panel's "Supervisor not reached": how long after the detection, and the alerts it never came for
    detected_at = {(name, call_id): detected for name, call_id, _kind, detected, _w in collected.alerts}
    warned = {(name, call_id): at for name, call_id, _about, at in collected.unreached}
    warned_after = [at - detected_at[key] for key, at in warned.items() if key in detected_at]
    silent = [
        f"{name}/{call_id}: {wall.first[(name, call_id, kind)] - detected:.1f} s to the wallboard"
        for name, call_id, kind, detected, _w in collected.alerts
        if (name, call_id) not in warned
        and wall.first.get((name, call_id, kind), detected) - detected > alert_timeout_s
    ]
    phases = []
    for _, phase in timeline.phases:
        made = sum(1 for *_, detected, _w in collected.alerts if timeline.phase_at(detected) == phase)
        phases.append({
            "phase": phase,
            "alerts": made,
            "wallboard": latency_figures(by_phase[phase]["wallboard"]),
            "webhook": latency_figures(by_phase[phase]["webhook"]),
            "unreached_on_panel": unreached.get(phase, 0),
            "link_errors_logged": errors.get(phase, 0),
        })  # fmt: skip
    return {
        "phases": phases,
        "kinds": dict(Counter(kind for _, _, kind, _, _ in collected.alerts)),
        "lost": {where: len(keys) for where, keys in lost.items()},
        "lost_examples": {where: keys[:10] for where, keys in lost.items()},
        "store_write_s": latency_figures(write_s),
        "unreached_after_s": latency_figures(warned_after),
        "late_without_unreached": len(silent),
        "late_without_unreached_examples": silent[:10],
        "wallboard_copies": dict(wall.copies),
    }


# --- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    workstations: int
    procs: int
    steady_s: float
    down_s: float
    settle_s: float
    outage_s: float
    drain_timeout_s: float
    shape: StreamShape
    tuning: LinkTuning
    seed: int


def floor_toml(port: int, dsn: str, tls: TlsCert, webhook_url: str) -> str:
    def quoted(value: object) -> str:
        return json.dumps(str(value))

    return "\n".join([
        'listen = "127.0.0.1"', f"port = {port}", f"dsn = {quoted(dsn)}",
        f"cert_file = {quoted(tls.cert_file)}", f"key_file = {quoted(tls.key_file)}", "",
        "[channels.bench-hook]", 'type = "webhook"', f"url = {quoted(webhook_url)}",
        f"ca_file = {quoted(tls.cert_file)}", "send_resolved = false", "",
        "[rules.alerts]", 'kinds = ["threat", "help"]', 'channels = ["bench-hook"]', "",
    ])  # fmt: skip


def enrol_all(dsn: str, count: int) -> tuple[list[tuple[str, str, str]], str]:
    """Enrol the workstations (as `callguard floor enrol` does) and an admin; their credentials."""
    stations = []
    password = f"pw-{os.urandom(8).hex()}"
    with psycopg.connect(dsn) as conn:
        db.apply_migrations(conn)
        for i in range(count):
            name = f"ws-{i + 1:04d}"
            team = f"team-{i // TEAM_SIZE + 1:02d}"
            stations.append((name, db.enrol_workstation(conn, name, team), f"Agent {i + 1:04d}"))
        db.add_user(conn, ADMIN_LOGIN, "admin", None, "Bench Admin", password)
    return stations, password


def wait_until(condition: Any, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def sleep_reporting(seconds: float, timeline: Timeline, collected: Collected) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 30.0))
        if end - time.monotonic() > 1:
            print(f"[{time.time() - timeline.started:7.1f} s]   events {sum(collected.events.values())},"
                  f" outboxes pending {sum(collected.pending.values())}, alerts {len(collected.alerts)}",
                  flush=True)  # fmt: skip


def run_faults(plan: Plan, timeline: Timeline, collected: Collected, floor: FloorProcess, bindir: Path,
               cluster: PgCluster) -> None:  # fmt: skip
    timeline.enter("steady")
    cpu_before = sample_cpu(floor, cluster)
    sleep_reporting(plan.steady_s, timeline, collected)
    timeline.cpu_steady = cpu_during(cpu_before, sample_cpu(floor, cluster))

    timeline.enter("floor kill -9")
    pid = floor.kill()
    time.sleep(plan.down_s)
    timeline.fault("floor kill -9", pid=pid, down_s=plan.down_s, restart_s=round(floor.start(), 2))
    timeline.enter("after floor kill")
    sleep_reporting(plan.settle_s, timeline, collected)

    timeline.enter("postgres kill -9")
    pid = kill_postmaster(cluster)
    time.sleep(plan.down_s)
    timeline.fault("postgres kill -9", pid=pid, down_s=plan.down_s,
                   restart_s=round(restart_cluster(bindir, cluster), 2))  # fmt: skip
    timeline.enter("after postgres kill")
    sleep_reporting(plan.settle_s, timeline, collected)

    timeline.enter("floor stopped")
    stop_s = floor.stop()
    sleep_reporting(plan.outage_s, timeline, collected)
    timeline.fault("floor stopped", stop_s=round(stop_s, 2), outage_s=plan.outage_s,
                   restart_s=round(floor.start(), 2))  # fmt: skip
    timeline.enter("after outage")
    sleep_reporting(plan.settle_s, timeline, collected)


def sample_cpu(floor: FloorProcess, cluster: PgCluster) -> dict[str, float]:
    postmaster = cluster.postmaster_pid()
    pg_pids = [postmaster, *children_of(postmaster)] if postmaster else []
    workers = children_of(os.getpid())
    return {
        "at": time.monotonic(),
        "floor": cpu_seconds(floor.pid) if floor.pid else 0.0,
        "postgres": sum(cpu_seconds(pid) for pid in pg_pids),
        "workstations": sum(cpu_seconds(pid) for pid in workers if pid != floor.pid),
        "bench_main": time.process_time(),
    }


def cpu_during(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU % (of one core) of each part over the interval; the machine has os.cpu_count() cores."""
    wall = after["at"] - before["at"]
    return {
        f"{part}_cpu_pct": round(100 * (after[part] - before[part]) / wall, 1)
        for part in before
        if part != "at"
    }


def run(plan: Plan, folder: Path) -> dict[str, Any]:
    bindir = pg_bindir()
    cluster = start_cluster(bindir, durable=True)
    timeline = Timeline()
    reports: Any = mp.get_context("spawn").Queue()
    collected = Collected()
    stop_collecting = threading.Event()
    collector = threading.Thread(target=collect, args=(reports, collected, stop_collecting), daemon=True)
    collector.start()
    floor: FloorProcess | None = None
    wallboard: Wallboard | None = None
    workers: list[Any] = []
    try:
        tls = make_tls_cert(folder)
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE callguard_floor")
        dsn = cluster.dsn("callguard_floor")
        stations, password = enrol_all(dsn, plan.workstations)
        hook = WebhookReceiver(tls)
        hook.start()
        port = free_port()
        config_file = folder / "floor.toml"
        config_file.write_text(floor_toml(port, dsn, tls, hook.url))
        floor = FloorProcess(config_file, port, tls, folder / "floor.log")
        timeline.fault("floor started", start_s=round(floor.start(), 2))
        wallboard = Wallboard(port, tls, password)
        wallboard.start()
        context = mp.get_context("spawn")
        wind_down, leave = context.Event(), context.Event()
        for index in range(plan.procs):
            mine = stations[index :: plan.procs]
            spec = WorkerSpec(
                index, mine, folder / "workstations", port, tls.cert_file, plan.shape, plan.tuning, plan.seed
            )
            process = context.Process(target=worker_main, args=(spec, reports, wind_down, leave), daemon=True)
            process.start()
            workers.append(process)
        if not wait_until(lambda: collected.ready == plan.workstations, 300):
            raise RuntimeError(f"only {collected.ready} of {plan.workstations} workstations started")
        run_faults(plan, timeline, collected, floor, bindir, cluster)

        timeline.enter("wind-down and drain")
        wind_down.set()
        wound = wait_until(lambda: len(collected.wound_down) == plan.procs, 120)
        drained_in = time.monotonic()
        drained = wound and wait_until(
            lambda: len(collected.pending) == plan.procs and sum(collected.pending.values()) == 0
            and all(collected.events[i] == collected.wound_down[i]["events"] for i in range(plan.procs)),
            plan.drain_timeout_s,
        )  # fmt: skip
        timeline.fault(
            "drained" if drained else "NOT drained", drain_s=round(time.monotonic() - drained_in, 2)
        )
        expected = len(collected.alerts)
        wait_until(
            lambda: len(hook.arrivals.first) >= expected and len(wallboard.arrivals.first) >= expected, 60
        )
        leave.set()
        wait_until(lambda: len(collected.left) == plan.procs, 120)
        for process in workers:
            process.join(30)
        delivery = check_delivery(dsn, folder / "workstations", [name for name, _, _ in stations])
        errors_at = link_errors(folder / "workstations")
        alerts = alert_figures(
            collected, timeline, wallboard.arrivals, hook.arrivals, plan.tuning.alert_timeout_s, errors_at
        )
        alerts["webhook_posts"] = sum(hook.posts.values())
        alerts["webhook_resent"] = sum(n - 1 for n in hook.posts.values())
        alerts["wallboard_stream_connects"] = wallboard.connects
        floor_log = (folder / "floor.log").read_text(errors="replace")
        return {
            "generated": {
                "calls": sum(w["calls"] for w in collected.wound_down.values()),
                "events": sum(w["events"] for w in collected.wound_down.values()),
                "seconds": round(time.time() - timeline.started, 1),
            },
            "delivery": delivery,
            "alerts": alerts,
            "faults": timeline.faults,
            "cpu_steady": timeline.cpu_steady,
            "phases": [
                {"phase": name, "at_s": round(at - timeline.started, 2)} for at, name in timeline.phases
            ],
            "floor_log": {
                "lines": floor_log.count("\n"),
                "errors": floor_log.count(" ERROR "),
                "tracebacks": floor_log.count("Traceback"),
                "error_examples": [line[:300] for line in floor_log.splitlines() if " ERROR " in line][:8],
            },
            "ok": drained
            and all(delivery[key] == 0 for key in ("missing", "extra", "different", "twice", "unsent"))
            and delivery["calls_incomplete"] == 0
            and delivery["queued"] == delivery["in_postgres"] > 0
            and alerts["lost"] == {"wallboard": 0, "webhook": 0},
        }
    finally:
        if wallboard is not None:
            wallboard.stop()
        for process in workers:
            if process.is_alive():
                process.kill()
        if floor is not None and floor.pid is not None:
            floor.stop()
        stop_collecting.set()
        stop_cluster(bindir, cluster)


# --- output ---------------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.2f}"


def print_report(report: dict[str, Any]) -> None:
    machine, plan = report["machine"], report["plan"]
    gen, dl, alerts = report["generated"], report["delivery"], report["alerts"]
    print(
        f"\ncallguard floor benchmark: {plan['workstations']} workstations in {plan['procs']} processes;"
        f" {machine['cpus']} CPUs, load {machine['load_at_start']} at start, {machine['load_at_end']} at end"
    )
    print(f"generated: {gen['calls']} calls, {gen['events']} events in {gen['seconds']} s")
    print(
        f"delivery:  queued {dl['queued']}, in PostgreSQL {dl['in_postgres']}, missing {dl['missing']},"
        f" extra {dl['extra']}, twice {dl['twice']}, unsent {dl['unsent']}; calls {dl['calls']},"
        f" incomplete {dl['calls_incomplete']}, misordered {dl['calls_misordered']}"
    )
    lost = alerts["lost"]
    print(
        f"alerts:    {alerts['kinds']}; lost on the wallboard {lost['wallboard']}, at the webhook"
        f" {lost['webhook']}; webhook resends {alerts['webhook_resent']}"
    )
    print(
        "\nlatency, detection to (s)   n     wallboard p50   p95   max |  webhook p50   p95   max | unreached"
    )
    for row in alerts["phases"]:
        wall = " ".join(seconds(row["wallboard"][key]) for key in ("p50_s", "p95_s", "max_s"))
        hook = " ".join(seconds(row["webhook"][key]) for key in ("p50_s", "p95_s", "max_s"))
        print(
            f"  {row['phase']:<24} {row['alerts']:<5}        {wall} |        {hook}"
            f" | {row['unreached_on_panel']:<9} | {row['link_errors_logged']}"
        )
    print(
        f"'Supervisor not reached' on the panel after (s): {alerts['unreached_after_s']};"
        f" alerts later than alert_timeout_s with no such line: {alerts['late_without_unreached']}"
    )
    steady = next((row for row in alerts["phases"] if row["phase"] == "steady"), None)
    if steady and steady["wallboard"]["p95_s"] is not None and steady["webhook"]["p95_s"] is not None:
        met = steady["wallboard"]["p95_s"] <= 1.0 and steady["webhook"]["p95_s"] <= 1.0
        print(f"goal p95 <= 1 s in the steady phase: {'met' if met else 'NOT met'}")
    print("\nfaults:")
    for fault in report["faults"]:
        print("  " + ", ".join(f"{key} {value}" for key, value in fault.items()))
    print("CPU in the steady phase (% of one core):", report["cpu_steady"])
    log = report["floor_log"]
    print(f"floor log: {log['errors']} ERROR lines, {log['tracebacks']} tracebacks")
    print("result:", "nothing lost" if report["ok"] else "LOSS OR INCOMPLETE DELIVERY (see above)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 workstations, seconds-long calls and faults")
    parser.add_argument("--workstations", type=int, help="simulated workstations (default 500)")
    parser.add_argument("--procs", type=int, help="worker processes hosting them (default 2)")
    parser.add_argument("--steady-s", type=float, help="the steady phase before the faults (default 600)")
    parser.add_argument(
        "--down-s", type=float, help="floor or PostgreSQL dead after each kill -9 (default 10)"
    )
    parser.add_argument("--settle-s", type=float, help="after each fault (default 60)")
    parser.add_argument("--outage-s", type=float, help="the floor stopped (default 600)")
    parser.add_argument("--drain-timeout-s", type=float, help="for every outbox to empty (default 600)")
    parser.add_argument("--call-s", type=float, help="mean call duration (default 180)")
    parser.add_argument("--gap-s", type=float, help="mean idle time between an agent's calls (default 60)")
    parser.add_argument("--threat-share", type=float, help="calls with a threat (default 0.02)")
    parser.add_argument("--help-share", type=float, help="calls with a help request (default 0.01)")
    parser.add_argument("--poll-s", type=float, help="[floor] poll_s of the links (default the product's, 2)")
    parser.add_argument("--retry-max-s", type=float, help="[floor] retry_max_s (default the product's, 30)")
    parser.add_argument(
        "--alert-timeout-s", type=float, help="[floor] alert_timeout_s (default the product's, 5)"
    )
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (stores, floor log)")
    return parser


FULL = {
    "workstations": 500, "procs": 2, "steady_s": 600.0, "down_s": 10.0, "settle_s": 60.0, "outage_s": 600.0,
    "drain_timeout_s": 600.0, "call_s": 180.0, "gap_s": 60.0, "threat_share": 0.02, "help_share": 0.01,
    "poll_s": 2.0, "retry_max_s": 30.0, "alert_timeout_s": 5.0,
}  # fmt: skip
QUICK = FULL | {
    "workstations": 20, "procs": 1, "steady_s": 5.0, "down_s": 1.0, "settle_s": 3.0, "outage_s": 4.0,
    "drain_timeout_s": 60.0, "call_s": 3.0, "gap_s": 1.5, "threat_share": 0.25, "help_share": 0.1,
    "poll_s": 0.5, "retry_max_s": 1.0, "alert_timeout_s": 1.0,
}  # fmt: skip


def plan_of(args: argparse.Namespace) -> Plan:
    values = {key: (getattr(args, key) if getattr(args, key) is not None else default)
              for key, default in (QUICK if args.quick else FULL).items()}  # fmt: skip
    for key in ("workstations", "procs"):
        if values[key] < 1:
            raise SystemExit(f"--{key}: expected an integer of at least 1, got {values[key]}")
    for key in ("threat_share", "help_share"):
        if not 0 <= values[key] <= 1:
            raise SystemExit(f"--{key.replace('_', '-')}: expected a share from 0 to 1, got {values[key]}")
    for key in ("steady_s", "down_s", "settle_s", "outage_s", "drain_timeout_s", "call_s", "gap_s", "poll_s",
                "retry_max_s", "alert_timeout_s"):  # fmt: skip
        if values[key] <= 0:
            raise SystemExit(
                f"--{key.replace('_', '-')}: expected a number of seconds above 0, got {values[key]}"
            )
    return Plan(
        workstations=int(values["workstations"]), procs=int(min(values["procs"], values["workstations"])),
        steady_s=values["steady_s"], down_s=values["down_s"], settle_s=values["settle_s"],
        outage_s=values["outage_s"], drain_timeout_s=values["drain_timeout_s"],
        shape=StreamShape(values["call_s"], values["gap_s"], values["threat_share"], values["help_share"]),
        tuning=LinkTuning(values["poll_s"], values["retry_max_s"], values["alert_timeout_s"]), seed=args.seed,
    )  # fmt: skip


@contextlib.contextmanager
def work_folder(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="callguard-bench-floor-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    args = build_parser().parse_args()
    plan = plan_of(args)
    load_at_start = os.getloadavg()
    with work_folder(args.keep) as folder:
        report = run(plan, folder)
    report["plan"] = asdict(plan)
    report["machine"] = {
        "cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
        "load_at_start": [round(x, 2) for x in load_at_start],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
