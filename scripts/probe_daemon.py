"""Issue 17's probe, re-run: each of its 18 items tried against a real daemon over real HTTP.

    python scripts/probe_daemon.py              # every item (a few minutes)
    python scripts/probe_daemon.py --only 1,16  # some of them

Real daemons on free ports of 127.0.0.1 (their sound devices closed, or a recording played in as if
live), `callguard` commands in subprocesses, a real full disk (a small tmpfs, when run as root).
One line per item: its number, what was tried, PASS or FAIL with the figure or the evidence, or
SKIP with why (what needs a browser or systemd, or root, is never a PASS). Exit status 1 if any
item FAILs. Not a test (it takes minutes); tests/test_probe_daemon.py runs a fast subset.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from callguard.core.config import load_config
from callguard.live.daemon import Daemon, Replay, build_runtime
from callguard.live.server import MAX_CONNECTIONS, REQUEST_TIMEOUT_S
from callguard.testing import EventStream, api_request, daemon_config_file

try:
    from scripts import probe_api
except ImportError:  # run as `python scripts/probe_daemon.py`
    import probe_api  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "fixtures" / "sample" / "abusive_en_ulaw"
TOKEN = probe_api.TOKEN
# What a caller's personal data looks like as a recogniser writes it, and what must never show.
SPOKEN_PII = (
    "my card is four five three two one two three four five six seven eight nine zero one two"
    " and my email is john at example dot com call me on five five five one two three four five six seven"
)
WRITER = "run_daemon_writing_from_c"
PII_SEEN = ("four five three two", "john at example", "example dot com", "five five five one")


@dataclass(frozen=True)
class Result:
    item: int
    tried: str
    verdict: str  # PASS, FAIL or SKIP
    evidence: str

    def line(self) -> str:
        return f"{self.item:>2}  {self.verdict:4}  {self.tried}: {self.evidence}"


def passed(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- clients ---------------------------------------------------------------------------------------


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, Any, http.client.HTTPResponse]:
    return api_request(port, method, path, body, headers, token=token, timeout=15)


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Bytes as sent, the answer as received until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else 0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- daemons ---------------------------------------------------------------------------------------


class LogRecords(logging.Handler):
    """Every record of callguard's loggers in this process, for what the log must never hold."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_process_daemon(folder: Path, replay: Replay | None = None, **settings: Any) -> Daemon:
    config = daemon_config_file(
        folder, port=free_port(), token=TOKEN, daemon={"auto_calls": False} | settings
    )
    loaded = load_config(config)
    daemon = Daemon(config, loaded, build_runtime(loaded, ""), replay=replay)
    daemon.start(capture=False)
    return daemon


class DaemonProcess:
    """`python -P -m callguard.live.daemon --config FILE`, as the service unit runs it; its stderr kept."""

    def __init__(self, config: Path, port: int, writing_from_c: bool = False) -> None:
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = ["-m", "callguard.live.daemon", "--config", str(config)]
        if writing_from_c:  # the daemon, with C code writing to fd 2 once it is ready (then SIGTERM)
            command = [
                "-c",
                f"import sys; from pathlib import Path; from callguard.testing import {WRITER};"
                f" sys.exit({WRITER}(Path(sys.argv[1])))",
                str(config),
            ]
        self.process = subprocess.Popen(
            [sys.executable, "-P", *command],
            cwd=config.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.decode("utf-8", errors="replace").rstrip("\n"))

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any('"daemon ready"' in line for line in list(self.stderr)):
                return True
            time.sleep(0.1)
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(30)
        self._reader.join(5)


def store_of(config: Path) -> Path:
    return config.parent / "store" / "incidents.sqlite3"


# --- the items -------------------------------------------------------------------------------------


class Probe:
    """The daemons the items share, started when an item first needs them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.logs = LogRecords()
        logger = logging.getLogger("callguard")
        logger.addHandler(self.logs)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self._daemon: Daemon | None = None
        self.processes: list[DaemonProcess] = []

    @property
    def daemon(self) -> Daemon:
        if self._daemon is None:
            self._daemon = in_process_daemon(self.folder / "shared")
        return self._daemon

    @property
    def port(self) -> int:
        return self.daemon.server.port

    def close(self) -> None:
        if self._daemon is not None:
            self._daemon.shutdown()
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stop(signal.SIGKILL)

    def process_config(self, name: str, **settings: Any) -> tuple[Path, int]:
        """A config without a token whose store is in a folder the daemon makes (as the default
        ~/.local/share/callguard/ is): its token and database go there."""
        port = free_port()
        folder = self.folder / name
        config = daemon_config_file(folder, port=port, token="", daemon=settings)
        config.write_text(
            config.read_text().replace(str(folder / "incidents.sqlite3"), str(store_of(config)))
        )
        return config, port

    def start_process(self, config: Path, port: int, writing_from_c: bool = False) -> DaemonProcess:
        process = DaemonProcess(config, port, writing_from_c)
        self.processes.append(process)
        return process


def item_1(probe: Probe) -> Result:
    port = probe.port
    kept = ["call 42", "50%off", "appel-été", "電話-7"]
    failures = []
    for call_id in kept:
        path = f"/api/v1/calls/{quote(call_id, safe='')}"
        for method, route, body, want in (
            ("POST", "/api/v1/calls", {"call_id": call_id}, 201),
            ("POST", f"{path}/actions", {"action": "acknowledged"}, 200),
            ("POST", f"{path}/end", None, 200),
        ):
            status = call(port, method, route, body)[0]
            if status != want:
                failures.append(f"{call_id!r} {route.rsplit('/', 1)[-1]}: {status}")
    refused = {
        call_id: call(port, "POST", "/api/v1/calls", {"call_id": call_id})[0]
        for call_id in ("a/b", "x\r\ny", "")
    }
    failures += [f"{c!r} started: {s}" for c, s in refused.items() if s != 422]
    after = call(port, "POST", "/api/v1/calls", {"call_id": "after"})[0]
    call(port, "POST", "/api/v1/calls/after/end")
    if after != 201:
        failures.append(f"the next call: {after}")
    evidence = (
        f"{len(kept)} ids with space, %, non-ASCII started, acted on and ended; '/', CR-LF and empty"
        f" refused with 422; the next call {after}"
    )
    return Result(
        1,
        "call ids with space / % / non-ASCII / '/' / CR-LF",
        passed(not failures),
        "; ".join(failures) or evidence,
    )


def item_2(probe: Probe) -> Result:
    figures, ok = [], True
    for what, times in probe_api.measure_bursts(probe.port):
        done = sorted(t for t in times if t is not None)
        failed = len(times) - len(done)
        p99 = done[min(len(done) - 1, int(0.99 * len(done)))] * 1000 if done else float("inf")
        ok = ok and failed == 0 and p99 < 2000
        figures.append(f"{what} p99 {p99:.0f} ms, {failed} of {len(times)} failed")
    return Result(2, "10 bursts of 50 new connections", passed(ok), "; ".join(figures))


def item_3(probe: Probe) -> Result:
    port = probe.port
    held, panel = probe_api.measure_idle_flood(port)
    idle_failed = sum(t is None for t in panel)
    idle_p99 = max((t for t in panel if t is not None), default=float("inf")) * 1000
    # Slow headers: a request line, then a header line every 2 s, never the blank line that ends them.
    slow = []
    for _ in range(150):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(s)
    served: list[float | None] = []
    closed_at: dict[int, float] = {}
    started = time.monotonic()
    pending = set(range(len(slow)))
    while pending and time.monotonic() - started < 4 * REQUEST_TIMEOUT_S:
        answered = select.select([slow[i] for i in pending], [], [], 0)[0]
        for i in sorted(pending):
            if slow[i] not in answered:  # the server has neither answered (408) nor closed it: one more line
                with contextlib.suppress(OSError):
                    slow[i].sendall(b"X-Slow: 1\r\n")
                    continue
            closed_at[i] = time.monotonic() - started
            pending.discard(i)
        served.append(probe_api.request(port, "GET", "/api/v1/calls/current"))
        time.sleep(2)
    for s in slow:
        s.close()
    slow_failed = sum(t is None for t in served)
    longest = max(closed_at.values(), default=0.0)
    ok = idle_failed == 0 and slow_failed == 0 and len(closed_at) == len(slow)
    return Result(
        3,
        f"{MAX_CONNECTIONS + 150} idle and 150 slow-header connections",
        passed(ok),
        f"{held} idle held: panel p99 {idle_p99:.0f} ms, {idle_failed} of {len(panel)} failed;"
        f" slow headers: {len(closed_at)} of {len(slow)} closed by the server (last after {longest:.0f} s),"
        f" panel {slow_failed} of {len(served)} failed meanwhile",
    )


def replayed_call(folder: Path) -> tuple[Path, Path]:
    """The sample call's audio, with words that carry a card number, an e-mail and a phone number as a
    recogniser writes them (the sample's own have none), said after its first insult."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    words = json.loads(Path(f"{SAMPLE}.transcript.json").read_text())["words"]
    spoken = ("you stupid idiot " + SPOKEN_PII).split()  # a word every 0.3 s from 1 s
    said = [
        {"word": w, "start": round(1.0 + i * 0.3, 2), "end": round(1.25 + i * 0.3, 2), "speaker": "customer"}
        for i, w in enumerate(spoken)
    ]
    shift = round(1.25 + (len(spoken) - 1) * 0.3, 2) + 1.0
    moved = [{**w, "start": w["start"] + shift, "end": w["end"] + shift} for w in words]
    transcript = folder / "pii.transcript.json"
    transcript.write_text(json.dumps({"words": said + moved}), encoding="utf-8")
    audio, rate = sf.read(f"{SAMPLE}.wav", dtype="int16")
    wav = folder / "pii.wav"
    sf.write(
        wav, np.concatenate([np.zeros(int(shift * rate), dtype=np.int16), audio]), rate, subtype="PCM_16"
    )
    return wav, transcript


def item_4_and_8(probe: Probe) -> tuple[Result, Result]:
    folder = probe.folder / "replay"
    wav, transcript = replayed_call(folder)
    facts = json.loads(Path(f"{SAMPLE}.call.json").read_text()) | {"call_id": "PII-1"}
    daemon = in_process_daemon(folder, replay=Replay(wav, facts, transcript))
    stream = EventStream(daemon.server.port, TOKEN)
    try:
        found = stream.find(lambda m: m.get("event", {}).get("type") == "abuse", timeout=40)
        abuse = found[1] if found else None
        current = call(daemon.server.port, "GET", "/api/v1/calls/current")[1]
        stored: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while (
            not stored and time.monotonic() < deadline and daemon.store is not None
        ):  # the utterance's final
            daemon.sinks.flush(5)
            row = daemon.store.find_call("PII-1")
            stored = daemon.store.details(row)["transcripts"] if row else []
            time.sleep(0.5)
        wire = json.dumps([m for _, m in stream.messages]) + json.dumps(
            call(daemon.server.port, "GET", "/api/v1/calls/current")[1]
        )
        wire += json.dumps(current)
    finally:
        stream.close()
        daemon.shutdown()
    leaks = [s for s in (*PII_SEEN, "4532", "my card is") if s in wire]
    four = Result(
        4,
        "a customer says a card number and an e-mail with an insult; the SSE stream and /calls/current read",
        passed(abuse is not None and not leaks),
        "no abuse event on the stream in 40 s"
        if abuse is None
        else (
            f"leaked: {leaks}"
            if leaks
            else f"abuse event words {abuse['event'].get('words')}, no utterance, "
            f"none of {len(PII_SEEN)} spoken PII strings in {len(stream.messages)} messages and the state"
        ),
    )
    from callguard.core.redact import redact_text

    cases = {
        "four five three two, one two three four, five six seven eight, nine zero one two": "[card]",
        "five five five, one two three, four five six seven": "[phone]",
        "john at example dot com": "[email]",
        "john (at) example (dot) com": "[email]",
        "quatre cinq trois deux un deux trois quatre cinq six sept huit neuf zéro un deux": "[card]",
        "écrivez à jean arobase exemple point com": "écrivez à [email]",
        "it happened on 12 03 2024": "it happened on 12 03 2024",
    }
    wrong = {said: got for said, want in cases.items() if (got := redact_text(said)) != want}
    texts = " | ".join(t["text"] for t in stored)
    store_leaks = [s for s in PII_SEEN if s in texts]
    store_ok = bool(stored) and not store_leaks and "[card]" in texts and "[email]" in texts
    eight = Result(
        8,
        "spoken forms (EN/FR digits with pauses, 'at'/'dot', 'arobase', a date); stored words",
        passed(not wrong and store_ok),
        f"wrong: {wrong}; " * bool(wrong)
        + (
            f"{len(cases)} forms right; stored: {texts[:160]!r}"
            if store_ok
            else f"stored transcript: {texts[:200]!r}"
        ),
    )
    return four, eight


def item_5(probe: Probe) -> Result:
    daemon, port = probe.daemon, probe.port
    path = daemon.config.path(daemon.config.store.path)
    call(port, "POST", "/api/v1/calls", {"call_id": "S5", "customer_name": "Ms Lee"})
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    action = call(port, "POST", "/api/v1/calls/S5/actions", {"action": "limits_stated"})[0]
    end = call(port, "POST", "/api/v1/calls/S5/end")[0]
    health = call(port, "GET", "/health")[1]
    logged = any(r.getMessage() == "incident store recreated" for r in probe.logs.records)
    if not path.exists():
        return Result(5, "the store deleted while a call runs", "FAIL", "no store file after the delete")
    db = sqlite3.connect(path)
    row = db.execute("SELECT end_reason, customer_name FROM calls WHERE call_id = 'S5'").fetchone()
    actions = db.execute(
        "SELECT action FROM actions WHERE call = (SELECT id FROM calls WHERE call_id = 'S5')"
    ).fetchall()
    db.close()
    ok = (action, end) == (200, 200) and row == ("api", "Ms Lee") and actions == [("limits_stated",)]
    ok = ok and bool(health["store"]["recreated"]) and logged
    return Result(
        5,
        "the store's files deleted while a call runs, then an action and the end",
        passed(ok),
        f"call row after the delete {row}, actions {actions},"
        f" /health recreated={health['store']['recreated']!r},"
        f" logged={logged}",
    )


def item_6(probe: Probe) -> Result:
    port = probe.port
    head = (
        f"POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: -1\r\n\r\n"
    ).encode()
    before = rss_mb()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        body = b'{"call_id": "big", "customer_name": "' + b"x" * (1 << 20)
        with contextlib.suppress(OSError):
            for _ in range(100):  # 100 MB, if the server keeps reading
                s.sendall(body)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    grew = rss_mb() - before
    declared = raw_request(port, head.replace(b"-1", b"200000000"))
    fields = {
        n: call(port, "POST", "/api/v1/calls", {"call_id": "F6", "customer_name": "x" * n})[0]
        for n in (257, 60_000)
    }
    ok = (
        status_of(answer) == 400
        and grew < 50
        and status_of(declared) == 413
        and set(fields.values()) == {422}
    )
    return Result(
        6,
        "Content-Length -1 with a 100 MB body, a declared 200 MB, customer_name of 257 and 60,000 characters",
        passed(ok),
        f"-1: {status_of(answer)}, RSS +{grew:.0f} MB; 200 MB declared: {status_of(declared)};"
        f" long fields: {fields}",
    )


def replay_outputs(folder: Path, wav: Path, transcript: Path, *, raw: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    flags = ["--no-redact"] if raw else []
    events, out = folder / "events.jsonl", folder / "batch"
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "callguard.cli",
            "replay",
            str(wav),
            "--transcript",
            str(transcript),
            "--events",
            str(events),
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "callguard.cli",
            "replay",
            str(wav),
            "--out",
            str(out),
            "--report",
            "--jobs",
            "1",
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    reports = " ".join(p.read_text(encoding="utf-8") for p in out.glob("*.html") if p.name != "index.html")
    return {
        "timeline": shown.stdout + shown.stderr,
        "events.jsonl": events.read_text(encoding="utf-8") if events.exists() else "",
        "report": re.sub(r"<[^>]+>", " ", reports),
    }


def item_7(probe: Probe) -> Result:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sample = subprocess.run(
        [
            sys.executable,
            "-m",
            "callguard.cli",
            "replay",
            f"{SAMPLE}.wav",
            "--transcript",
            f"{SAMPLE}.transcript.json",
            "--call-info",
            f"{SAMPLE}.call.json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    folder = probe.folder / "replay7"
    wav, transcript = replayed_call(folder)
    (folder / "pii.call.json").write_text(Path(f"{SAMPLE}.call.json").read_text())
    found: dict[str, dict[str, list[str]]] = {}
    for raw in (False, True):
        where = folder / ("raw" if raw else "redacted")
        where.mkdir()
        outputs = replay_outputs(where, wav, transcript, raw=raw)
        found["raw" if raw else "redacted"] = {
            name: [s for s in PII_SEEN if s in " ".join(text.split())] for name, text in outputs.items()
        }
    leaks = {name: hits for name, hits in found["redacted"].items() if hits}
    blind = [name for name, hits in found["raw"].items() if not hits]  # where this probe could not see PII
    ok = sample.returncode == 0 and "PROMPT" in sample.stdout and not leaks and not blind
    return Result(
        7,
        "replay of tests/fixtures/sample/*.wav, and of it with spoken PII (timeline, events, report)",
        passed(ok),
        f"sample replayed (exit {sample.returncode}); by default no PII in timeline, events.jsonl, report"
        f" (with --no-redact all three show it)"
        if ok
        else f"leaks {leaks}; unseen with --no-redact {blind}; sample exit {sample.returncode}",
    )


def item_9_and_10(probe: Probe) -> tuple[Result, Result]:
    config, port = probe.process_config("modes")
    first = probe.start_process(config, port)
    ready = first.wait_ready()
    store = store_of(config)
    token_path = store.parent / "api-token"
    token = token_path.read_text().strip() if token_path.exists() else ""
    answered = call(port, "GET", "/api/v1/calls/current", token=token)[0] if ready and token else 0
    modes = {  # while it runs: SQLite removes the WAL at a clean close
        name: oct(p.stat().st_mode & 0o777)
        for name, p in (
            ("folder", store.parent),
            ("db", store),
            ("wal", Path(f"{store}-wal")),
            ("api-token", token_path),
        )
        if p.exists()
    }
    first.stop()
    again = probe.start_process(config, port)
    again.wait_ready()
    same = token_path.read_text().strip() == token if token_path.exists() else False
    second = call(port, "GET", "/api/v1/calls/current", token=token)[0] if token else 0
    again.stop()
    # an existing install: a config with IT's token and the store, all readable by others
    home = probe.folder / "install-home"
    loose_store = home / ".local" / "share" / "callguard" / "incidents.sqlite3"
    loose_store.parent.mkdir(parents=True)
    loose_store.write_bytes(b"")
    loose = probe.folder / "install-config" / "callguard.toml"
    loose.parent.mkdir()
    loose.write_text('[daemon]\ntoken = "set-by-it-0123456789abcdef"\n')
    for p, mode in ((loose, 0o644), (loose_store.parent, 0o755), (loose_store, 0o644)):
        p.chmod(mode)
    env = {
        **os.environ,
        "CALLGUARD_CONFIG_DIR": str(loose.parent),
        "SYSTEMD_USER_DIR": str(probe.folder / "units"),
        "HOME": str(home),
        "CALLGUARD_ALLOW_ROOT": "1",
        "PYTHONPATH": str(REPO),
    }
    installed = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_service.sh"), "--no-start", "--python", sys.executable],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    fixed = {
        name: oct(p.stat().st_mode & 0o777)
        for name, p in (("config", loose), ("store folder", loose_store.parent), ("store", loose_store))
    }
    want = {"folder": "0o700", "db": "0o600", "wal": "0o600", "api-token": "0o600"}
    nine_ok = modes == want and fixed == {"config": "0o600", "store folder": "0o700", "store": "0o600"}
    nine = Result(
        9,
        "modes of a daemon's store and token; install_service.sh on a 644 config with a token, a 755 store",
        passed(nine_ok and installed.returncode == 0),
        f"daemon: {modes}; after install_service.sh: {fixed}",
    )
    logged = [line for p in (first, again) for line in p.stderr if token and token in line]
    ten_ok = ready and bool(token) and answered == 200 and same and second == 200 and not logged
    ten = Result(
        10,
        "a daemon without daemon.token, started twice (python -P -m callguard.live.daemon)",
        passed(ten_ok),
        f"token kept in api-token ({len(token)} chars), the same after a restart: {same}, it authenticates"
        f" ({answered}, {second}); log lines holding it: {len(logged)} of {len(first.stderr + again.stderr)}",
    )
    return nine, ten


def item_11(probe: Probe) -> tuple[Result, Result]:
    daemon = in_process_daemon(probe.folder / "health")  # no sound device open: capture is lost
    stream = EventStream(daemon.server.port, TOKEN)
    try:
        found = stream.find(lambda m: m.get("kind") == "health", timeout=5)
        health = found[1] if found else None
    finally:
        stream.close()
        daemon.shutdown()
    ok = health is not None and health.get("listening") is False
    shown = json.dumps({k: health[k] for k in ("kind", "listening", "mode")}) if health else ""
    return Result(
        11,
        "the event stream of a daemon whose capture is lost",
        passed(ok),
        f"health message {shown}" if health else "none in 5 s",
    ), Result(
        11,
        "the panel says 'Not listening'",
        "SKIP",
        "needs a browser, which this script does not drive (tests/live/test_daemon_e2e.py reads it)",
    )


def item_12(probe: Probe) -> Result:
    import soundfile as sf

    wav = probe.folder / "one-hertz.wav"
    sf.write(wav, np.zeros(160_000, dtype=np.int16), 1, subtype="PCM_16")  # 320 KB: 44.4 h at 1 Hz
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "callguard.cli", "replay", str(wav)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - started
    error = done.stderr.strip().splitlines()[-1:]  # after the no-model notice, if any
    ok = done.returncode != 0 and took < 30 and "Traceback" not in done.stderr
    ok = (
        ok
        and bool(error)
        and error[0].startswith("callguard: error:")
        and str(wav) in error[0]
        and "1 Hz" in error[0]
    )
    return Result(
        12,
        "callguard replay of a 320 KB WAV at 1 Hz",
        passed(ok),
        f"exit {done.returncode} in {took:.1f} s: {error[-1:]}",
    )


def item_13(probe: Probe) -> Result:
    port = probe.port
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    before = len(probe.logs.records)
    answers = {
        "non-ASCII Authorization": status_of(
            raw_request(
                port,
                b"GET /api/v1/calls/current HTTP/1.1\r\n"
                + host
                + "Authorization: Bearer é€ñ\r\n\r\n".encode(),
            )
        ),
        "Content-Length: abc": status_of(
            raw_request(
                port,
                b"POST /api/v1/calls HTTP/1.1\r\n"
                + host
                + f"Authorization: Bearer {TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
            )
        ),
    }
    deep = b"[" * 20_000 + b"]" * 20_000
    answers["JSON nested 20,000 deep"] = status_of(
        raw_request(
            port,
            b"POST /api/v1/calls HTTP/1.1\r\n"
            + host
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(deep)).encode()
            + b"\r\n\r\n"
            + deep,
        )
    )
    time.sleep(0.2)
    tracebacks = [
        r.getMessage() for r in probe.logs.records[before:] if r.exc_info or r.levelno >= logging.ERROR
    ]
    ok = (
        answers["non-ASCII Authorization"] in (400, 401)
        and all(s == 400 for k, s in answers.items() if k != "non-ASCII Authorization")
        and not tracebacks
    )
    return Result(
        13,
        "bad headers and deep JSON",
        passed(ok),
        f"{answers}; errors or tracebacks logged: {len(tracebacks)}",
    )


def item_14(probe: Probe) -> Result:
    port = probe.port
    statuses = {
        host: call(port, "GET", "/health", headers={"Host": host})[0]
        for host in (
            "evil.example",
            f"rebind.attacker.example:{port}",
            f"localhost:{port}",
            f"127.0.0.1:{port}",
        )
    }
    ok = [statuses[h] for h in statuses][:2] == [421, 421] and all(
        s in (200, 503) for s in list(statuses.values())[2:]
    )
    return Result(
        14,
        "GET /health with foreign and own Host headers",
        passed(ok),
        f"{statuses} (503: no sound device here)",
    )


def item_15(probe: Probe) -> tuple[Result, Result]:
    port = probe.port
    status, answer, _ = call(port, "POST", "/api/v1/panel-links")
    url = str(answer.get("url", "")) if isinstance(answer, dict) else ""
    link = urlsplit(url)
    first = call(port, "GET", f"{link.path}?{link.query}", token=None)
    cookie_header = first[2].getheader("Set-Cookie") or ""
    cookie = cookie_header.split(";")[0]
    works = call(port, "GET", "/api/v1/calls/current", headers={"Cookie": cookie}, token=None)[0]
    again = call(port, "GET", f"{link.path}?{link.query}", token=None)[0]
    flags = [f for f in ("HttpOnly", "SameSite=Strict") if f in cookie_header]
    ok = (
        status == 201
        and TOKEN not in url
        and first[0] == 303
        and len(flags) == 2
        and works == 200
        and again == 401
    )
    return Result(
        15,
        "the one-time login link `callguard panel` asks for",
        passed(ok),
        f"link holds no token: {TOKEN not in url}; first visit {first[0]} with cookie {flags},"
        f" cookie reads the call ({works}); the same link again {again}",
    ), Result(
        15,
        "what a browser's history keeps after the link",
        "SKIP",
        "needs a browser, which this script does not drive",
    )


def item_16(probe: Probe) -> Result:
    port = probe.port
    statuses = {
        scheme: call(
            port, "GET", "/api/v1/calls/current", headers={"Authorization": f"{scheme} {TOKEN}"}, token=None
        )[0]
        for scheme in ("bearer", "BEARER", "Bearer")
    }
    wrong = call(port, "GET", "/api/v1/calls/current", headers={"Authorization": "bearer nope"}, token=None)[
        0
    ]
    ok = set(statuses.values()) == {200} and wrong == 401
    return Result(16, "the Bearer scheme in other cases", passed(ok), f"{statuses}, a wrong token {wrong}")


def item_17(probe: Probe) -> tuple[Result, Result]:
    unit = (REPO / "scripts" / "callguard.service").read_text()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    folder = probe.folder / "shadowed"
    (folder / "callguard").mkdir(parents=True)
    (folder / "callguard" / "__init__.py").write_text(
        'raise ImportError("a checkout shadowed the package")\n'
    )
    command = start.removeprefix("ExecStart=").replace("@PYTHON@", sys.executable).split()
    command = [*command[: command.index("--config")], "--help"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    as_unit = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    without = subprocess.run(
        [c for c in command if c != "-P"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    ok = as_unit.returncode == 0 and "WorkingDirectory=%h" in unit and "shadowed" in without.stderr
    return Result(
        17,
        "the unit's ExecStart run by hand from a folder holding a callguard/",
        passed(ok),
        f"with -P: exit {as_unit.returncode}; without -P: shadowed {'shadowed' in without.stderr};"
        f" WorkingDirectory=%h in the unit: {'WorkingDirectory=%h' in unit}",
    ), Result(
        17, "the unit started by systemd", "SKIP", "needs a systemd user session (none in this container)"
    )


def item_18(probe: Probe) -> list[Result]:
    results = []
    # kill -9 mid-call, then a start on the same store
    config, port = probe.process_config("killed")
    killed = probe.start_process(config, port)
    killed.wait_ready()
    token = (store_of(config).parent / "api-token").read_text().strip()
    started = call(port, "POST", "/api/v1/calls", {"call_id": "K9"}, token=token)[0]
    call(port, "POST", "/api/v1/calls/K9/actions", {"action": "acknowledged"}, token=token)
    time.sleep(0.5)
    killed.stop(signal.SIGKILL)
    restarted = probe.start_process(config, port)
    restarted.wait_ready()
    restarted.stop()
    db = sqlite3.connect(store_of(config))
    row = db.execute("SELECT ended_at IS NOT NULL, end_reason FROM calls WHERE call_id = 'K9'").fetchone()
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    results.append(
        Result(
            18,
            "kill -9 mid-call, then a start on the same store",
            passed(started == 201 and row == (1, "interrupted")),
            f"call row (ended, reason) {row}, integrity_check {integrity}",
        )
    )
    # every line the daemon wrote on stderr is JSON, C libraries' messages included
    config, port = probe.process_config("native")
    writer = probe.start_process(config, port, writing_from_c=True)
    writer.process.wait(120)
    writer.stop()
    lines = [line for p in probe.processes for line in p.stderr]
    broken = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            broken.append(line)
    native = sum('"callguard.native"' in line for line in lines)
    results.append(
        Result(
            18,
            "the stderr of every daemon process of this probe, one with C code writing to fd 2 (libc write,"
            " fprintf)",
            passed(bool(lines) and not broken and native >= 2),
            f"{len(lines)} lines, {len(broken)} not JSON{(': ' + repr(broken[0][:80])) if broken else ''};"
            f" {native} from C libraries as callguard.native records",
        )
    )
    # callguard incidents pointed at a foreign database
    foreign = probe.folder / "crm.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    cfg = daemon_config_file(probe.folder / "foreign", port=free_port(), token=TOKEN)
    cfg.write_text(cfg.read_text().replace(str(probe.folder / "foreign" / "incidents.sqlite3"), str(foreign)))
    done = subprocess.run(
        [sys.executable, "-m", "callguard.cli", "--config", str(cfg), "incidents"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    tables = sorted(r[0] for r in sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master"))
    results.append(
        Result(
            18,
            "callguard incidents pointed at a foreign database",
            passed(done.returncode != 0 and tables == ["customers"]),
            f"exit {done.returncode}: {done.stderr.strip()[-100:]!r}; its tables after: {tables}",
        )
    )
    results += disk_full(probe)
    return results


@contextlib.contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=700", "tmpfs", str(folder)], check=True
    )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """A file that takes every free block of `disk`."""
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def store_ok_after(port: int, freed: float, within: float = 15.0) -> float | None:
    """Seconds from `freed` until /health says the store is ok (None: not within `within`)."""
    while time.monotonic() - freed < within:
        if call(port, "GET", "/health")[1]["store"]["ok"]:
            return time.monotonic() - freed
        time.sleep(0.2)
    return None


def stored_calls(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Each stored call's end reason and its number of actions."""
    db = sqlite3.connect(path)
    try:
        stored = dict(db.execute("SELECT call_id, end_reason FROM calls").fetchall())
        actions = db.execute(
            "SELECT c.call_id, COUNT(a.id) FROM calls c LEFT JOIN actions a ON a.call = c.id"
            " GROUP BY c.call_id"
        ).fetchall()
    finally:
        db.close()
    return stored, dict(actions)


def daemon_on(disk: Path, folder: Path) -> Daemon:
    config = daemon_config_file(folder, port=free_port(), token=TOKEN, daemon={"auto_calls": False})
    config.write_text(
        config.read_text().replace(str(folder / "incidents.sqlite3"), str(disk / "incidents.sqlite3"))
    )
    loaded = load_config(config)
    daemon = Daemon(config, loaded, build_runtime(loaded, ""))
    daemon.start(capture=False)
    return daemon


def one_call(port: int, call_id: str) -> tuple[int, int, int]:
    return (
        call(port, "POST", "/api/v1/calls", {"call_id": call_id})[0],
        call(port, "POST", f"/api/v1/calls/{call_id}/actions", {"action": "limits_stated"})[0],
        call(port, "POST", f"/api/v1/calls/{call_id}/end")[0],
    )


def disk_full(probe: Probe) -> list[Result]:
    tried = "the store's disk (a 2 MB tmpfs) filled during a call, a call started, the disk freed"
    tried_at_start = "a daemon started on a full disk (no store yet), a call, the disk freed"
    if os.geteuid() != 0:
        return [Result(18, t, "SKIP", "mounting a small tmpfs needs root") for t in (tried, tried_at_start)]
    with small_disk(probe.folder / "small-disk", 2048) as disk:
        daemon = daemon_on(disk, probe.folder / "disk-full")
        port = daemon.server.port
        try:
            call(port, "POST", "/api/v1/calls", {"call_id": "BEFORE"})
            filler = fill(disk)
            posted = 0
            while posted < 5000 and not call(port, "GET", "/health")[1]["store"]["held"]:
                call(port, "POST", "/api/v1/calls/BEFORE/actions", {"action": "acknowledged"})
                posted += 1
            call(port, "POST", "/api/v1/calls/BEFORE/end")
            during = one_call(port, "DURING")
            full = call(port, "GET", "/health")
            filler.unlink()
            recovered = store_ok_after(port, time.monotonic())
        finally:
            daemon.shutdown()
        stored, counts = stored_calls(disk / "incidents.sqlite3")
    ok = during == (201, 200, 200) and full[0] == 503 and recovered is not None
    ok = ok and stored.get("DURING") == "api" and counts.get("DURING") == 1 and counts.get("BEFORE") == posted
    first = Result(
        18,
        tried,
        passed(ok),
        f"full after {posted} actions: /health {full[0]}, {full[1]['store']['held']} events held"
        f" ({full[1]['store']['error'][:40]!r}); the call during it answered {during};"
        f" /health ok {f'{recovered:.1f} s' if recovered is not None else 'never'} after the disk was freed,"
        f" no write meanwhile; stored: {stored}, actions {counts} (posted {posted} before)",
    )
    with small_disk(probe.folder / "full-disk", 1024) as disk:
        filler = fill(disk)
        daemon = daemon_on(disk, probe.folder / "full-at-start")
        port = daemon.server.port
        try:
            at_start = call(port, "GET", "/health")[1]["store"]
            answered = one_call(port, "EARLY")
            filler.unlink()
            recovered = store_ok_after(port, time.monotonic())
        finally:
            daemon.shutdown()
        stored, counts = stored_calls(disk / "incidents.sqlite3")
    ok = not at_start["ok"] and answered == (201, 200, 200) and recovered is not None
    ok = ok and stored == {"EARLY": "api"} and counts == {"EARLY": 1}
    second = Result(
        18,
        tried_at_start,
        passed(ok),
        f"/health at start: store ok {at_start['ok']} ({at_start['error'][-50:]!r}); the call answered"
        f" {answered}; store ok {f'{recovered:.1f} s' if recovered is not None else 'never'} after the"
        f" disk was freed; stored: {stored}, actions {counts}",
    )
    return [first, second]


# --- running -------------------------------------------------------------------------------------


def run(items: set[int], probe: Probe) -> list[Result]:
    results: list[Result] = []
    checks: list[tuple[set[int], Callable[[Probe], Result | tuple[Result, ...] | list[Result]]]] = [
        ({1}, item_1),
        ({2}, item_2),
        ({3}, item_3),
        ({4, 8}, item_4_and_8),
        ({5}, item_5),
        ({6}, item_6),
        ({7}, item_7),
        ({9, 10}, item_9_and_10),
        ({11}, item_11),
        ({12}, item_12),
        ({13}, item_13),
        ({14}, item_14),
        ({15}, item_15),
        ({16}, item_16),
        ({17}, item_17),
        ({18}, item_18),
    ]
    for numbers, check in checks:
        if not numbers & items:
            continue
        try:
            found = check(probe)
        except Exception as exc:  # one item's crash is that item's FAIL, the others still run
            found = [
                Result(n, check.__name__, "FAIL", f"the probe itself failed: {type(exc).__name__}: {exc}")
                for n in sorted(numbers)
            ]
        for result in [found] if isinstance(found, Result) else list(found):
            if result.item in items:
                print(result.line(), flush=True)
                results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated item numbers (default: all 18)")
    args = parser.parse_args(argv)
    items = {int(n) for n in args.only.split(",") if n.strip()} or set(range(1, 19))
    with tempfile.TemporaryDirectory() as folder:
        probe = Probe(Path(folder))
        try:
            results = run(items, probe)
        finally:
            probe.close()
    counts = {v: sum(r.verdict == v for r in results) for v in ("PASS", "FAIL", "SKIP")}
    print(f"-- {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
