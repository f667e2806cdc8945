"""`callguard daemon`: live capture, one call at a time, prompts pushed to the panel, all stored.

Threads and who owns what:
- the audio threads (PortAudio) only queue blocks (capture.py);
- the worker owns the current call: it feeds audio to the CallSession, runs
  API commands (start, end, action) between blocks, writes the store and
  publishes to the panel, so the session is never touched by two threads;
- the HTTP threads (server.py) hand commands to the worker and wait for them;
- the main thread handles signals, the capture watchdog and config reloads.

A reload (SIGHUP, or the config file changing) builds and checks a whole new
configuration (lexicons, prompts, models) off the worker; an invalid one is
logged with its key and the old one stays. A valid one applies as soon as no
call is running, so a call never changes rules half-way.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import queue
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from callguard.audio.framing import Framer
from callguard.core.config import Config, find_config, load_config
from callguard.core.errors import CallguardError, ConfigError
from callguard.core.events import ROLES, Abuse, BreakTaken, CallEnd, CallStart, Event, HelpRequest, Role
from callguard.core.outcome import CallFold
from callguard.core.redact import shown_words
from callguard.live.floor_link import FloorLink, start_floor_link
from callguard.live.server import ApiError, EventHub, PanelServer
from callguard.live.speakers import STEPS, Degradation, SpeakerThreads
from callguard.sinks.base import BackgroundSinks, CallInfo, Sink
from callguard.sinks.desktop import DesktopNotifySink
from callguard.sinks.log import LogSink
from callguard.sinks.store import IncidentStore, StoreSink
from callguard.sources.devices import CapturedBlock, CaptureSet, specs_from_config
from callguard.sources.files import RecordingPlayback
from callguard.stages.gate import NonSpeechGate
from callguard.stages.sidecar import load_sidecar
from callguard.stages.speech_clock import SPEECH_FLOOR_DBFS
from callguard.stages.vad import VoiceActivityDetector

# What a CTI's call ids look like (any printable text, spaces and non-ASCII included) without what
# would break a URL path segment or a log line: '/', control characters, or no end.
CALL_ID = re.compile(r"[^/\x00-\x1f\x7f]{1,128}")
log = logging.getLogger("callguard.live.daemon")
T = TypeVar("T")

# What the panel's timeline and live stream carry (transcripts stay off the screen and the wire).
PANEL_EVENT_TYPES = {
    "prompt",
    "level",
    "abuse",
    "shouting",
    "action",
    "notice",
    "language",
    "summary",
    "call_end",
    "help",
}
COMMAND_TIMEOUT_S = 15.0
HEALTH_POLL_S = 1.0  # how soon the panel hears that capture was lost or came back
SINK_QUEUE = 50_000  # store writes and notifications waiting for a slow disk: minutes of events


# --- structured logs -----------------------------------------------------------------------------


_RESERVED_LOG_KEYS = {"ts", "level", "logger", "msg", "exception"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            entry[key if key not in _RESERVED_LOG_KEYS else f"{key}_"] = value  # never hide the log level
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


_log_stream: TextIO | None = None  # the real stderr, once fd 2 is captured (native_stderr)


class _RealStderrHandler(logging.StreamHandler):
    """The log handler once fd 2 is captured. A record it cannot write has nowhere to go: the
    logging module's report of it would go to fd 2, come back as a record, and fail again."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr) if _log_stream is None else _RealStderrHandler(_log_stream)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("callguard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_native_stderr(level: str) -> None:
    """From now on what C libraries (PortAudio, ALSA) print on stderr is logged as JSON records of
    `callguard.native`, and only the log handler writes to the real stderr."""
    global _log_stream
    from callguard.live.native_stderr import capture_native_stderr

    if _log_stream is None:
        _log_stream = capture_native_stderr()
    setup_logging(level)


def log_fields(**values: Any) -> dict[str, Any]:
    return {"fields": values}


# --- speech activity, for calls started without a CTI connector ---------------------------------


class SpeechActivity:
    """Per-role speech detection over the live audio between calls (no recogniser), to start a call
    on sustained speech: the same front end as a call's, frames, the padded VAD and the non-speech
    gate, so that hold music, tones and line noise do not start one. During a call it is not fed:
    the call's own gated frames tell its silence (CallSession.silent_for), in audio time."""

    def __init__(self, config: Config) -> None:
        audio = config.audio
        # A call starts on auto_call_speech_s of speech within this window.
        window_s = config.daemon.auto_call_speech_s * 1.5 + 0.3
        self._frame_s = audio.frame_ms / 1000
        frames = max(1, round(window_s / self._frame_s))
        self._stages = {
            role: (
                Framer(role, audio.rate, audio.frame_ms),
                VoiceActivityDetector(config.vad, audio.rate, audio.frame_ms, role),
                NonSpeechGate(config.gate, audio.rate, audio.frame_ms) if config.gate.enabled else None,
            )
            for role in ROLES
        }
        self._recent: dict[Role, collections.deque[bool]] = {
            role: collections.deque(maxlen=frames) for role in ROLES
        }

    def push(self, role: Role, pcm: np.ndarray) -> None:
        framer, vad, gate = self._stages[role]
        for frame in framer.push(pcm):
            decided, _ = vad.process(frame)
            if gate is not None:
                decided = [out for f in decided for out in gate.process(f)[0]]
            for f in decided:  # the Framer measured the level
                self._recent[role].append(f.speech and f.level_db > SPEECH_FLOOR_DBFS)

    def speech_seconds(self, role: Role) -> float:
        """Speech within the recent window, in seconds."""
        return sum(self._recent[role]) * self._frame_s

    def reset(self) -> None:
        """A call starts or ends: speech is counted afresh."""
        for role in ROLES:
            self._recent[role].clear()


# --- the call in progress ------------------------------------------------------------------------


@dataclass
class LiveCall:
    """The current call: the pipeline session plus what the panel shows of it."""

    call_id: str
    facts: dict[str, Any]
    source: str  # "api" or "auto"
    session: Any  # callguard.pipeline.session.CallSession
    info: CallInfo  # what the sinks know of it
    mode: str  # "speech" or "loudness-only"
    timeline: collections.deque[dict[str, Any]]
    started: float = field(default_factory=time.monotonic)
    language: str = ""  # as the call facts gave it, until the session decides
    speakers: SpeakerThreads | None = None  # each speaker's stages on its own thread
    degradation: Degradation = field(default_factory=Degradation)
    fold: CallFold = field(default_factory=CallFold)  # the call's outcome so far: level, prompts, actions

    def observe(self, event: Event, wire: dict[str, Any]) -> None:
        """`wire`: the event as the panel gets it (panel_form)."""
        self.fold.add(event)
        if wire["type"] in PANEL_EVENT_TYPES:
            self.timeline.append(wire)

    @property
    def level(self) -> str:
        return self.fold.outcome.level

    def state(self) -> dict[str, Any]:
        outcome = self.fold.outcome
        prompt, alert = outcome.prompt, outcome.alert
        return {
            "active": True,
            "call_id": self.call_id,
            "facts": self.facts,
            "source": self.source,
            "level": outcome.level,
            "t": round(time.monotonic() - self.started, 3),
            "prompt": prompt.to_dict() if prompt else None,
            "alert": alert.to_dict() if alert else None,
            "actions": list(outcome.actions),
            "timeline": list(self.timeline),
            "mode": self.mode,
            "language": outcome.language or self.language or self.facts.get("language", ""),
        }


@dataclass(frozen=True)
class Replay:
    """`callguard daemon --replay FILE`: one recorded call played in as if live, then the daemon idles."""

    path: Path
    facts: dict[str, Any]  # --call-info, as the CTI would have given them
    transcript: Path | None = None  # its words (a sidecar), instead of the recogniser's


@dataclass(frozen=True)
class Runtime:
    """Everything built from one configuration: swapped whole on reload."""

    config: Config
    shared: dict[str, Any]  # language -> callguard.pipeline.session.SharedResources
    models: dict[str, Any]  # language -> SpeechModel | None
    model_errors: dict[str, str]
    token: str


def build_runtime(config: Config, model_override: str, previous: Runtime | None = None) -> Runtime:
    """Load the models and check lexicons and prompts: raises ConfigError/ModelError on a bad config."""
    from callguard.models.catalogue import configured_model_name, missing_model_notice, model_for_language
    from callguard.pipeline.session import SharedResources
    from callguard.stages.asr import SpeechModel

    models: dict[str, Any] = {}
    errors: dict[str, str] = {}
    loaded: dict[Path, Any] = {}
    if previous is not None:  # keep models already in memory when their path did not change
        loaded = {m.path: m for m in previous.models.values() if m is not None}
    for lang in ("en", "fr"):
        path = model_for_language(config, lang, model_override)
        if path is None:
            errors[lang] = missing_model_notice(model_override or configured_model_name(config, lang), lang)
            models[lang] = None
            continue
        if path not in loaded:
            started = time.monotonic()
            loaded[path] = SpeechModel.load(path)
            log.info(
                "speech model loaded",
                extra=log_fields(lang=lang, path=str(path), seconds=round(time.monotonic() - started, 2)),
            )
        models[lang] = loaded[path]
    shared = {lang: SharedResources.build(config, models[lang]) for lang in ("en", "fr")}
    token = config.daemon.token
    if not token:
        token = (
            previous.token
            if previous is not None and not previous.config.daemon.token
            else kept_token(token_file(config))
        )
    return Runtime(config=config, shared=shared, models=models, model_errors=errors, token=token)


def panel_form(event: Event) -> dict[str, Any]:
    """An event as the panel and the API get it: what the agent needs, no transcript. An abuse
    event keeps its category, severity and reasons, and the words each match may show
    (shown_words: a lexicon match's, redacted like the store; a semantic match's none)."""
    data = event.to_dict()
    if not isinstance(event, Abuse):
        return data
    matches = [
        {**m, "words": list(shown_words(match))}
        for m, match in zip(data["matches"], event.matches, strict=True)
    ]
    out = {k: v for k, v in data.items() if k != "text"}
    return {**out, "words": [word for m in matches for word in m["words"]], "matches": matches}


def token_file(config: Config) -> Path:
    """Where a generated API token is kept: beside the incident store, readable by its user only."""
    return config.path(config.store.path).parent / "api-token"


def panel_login_link(config: Config) -> str:
    """A one-time login link to the running daemon's panel (`callguard panel`): asked for with the
    token, so that the token itself never goes into a browser's address bar or history."""
    import http.client

    token = config.daemon.token
    if not token:
        path = token_file(config)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                path, "daemon.token", f"no token to ask the daemon with ({exc.strerror})"
            ) from None
    host = "127.0.0.1" if config.daemon.host in ("0.0.0.0", "::", "") else config.daemon.host
    connection = http.client.HTTPConnection(host, config.daemon.port, timeout=10)
    try:
        connection.request("POST", "/api/v1/panel-links", body=b"{}", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        })  # fmt: skip
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    except OSError as exc:
        raise CallguardError(f"the daemon at {host}:{config.daemon.port} does not answer ({exc})") from None
    finally:
        connection.close()
    if response.status != 201:
        raise CallguardError(f"the daemon refused a panel link: {answer.get('error', response.status)}")
    return str(answer["url"])


def kept_token(path: Path) -> str:
    """The token generated at the first start, the same at every start after (the agent's panel
    shortcut keeps working); never written to the log."""
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


# --- the daemon ----------------------------------------------------------------------------------


class Daemon:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        runtime: Runtime,
        model_override: str = "",
        replay: Replay | None = None,
    ) -> None:
        self.config_path = config_path
        self.replay = replay
        self._sidecar = load_sidecar(replay.transcript)[0] if replay and replay.transcript else None
        self._replay_ended = False
        self.model_override = model_override
        self.runtime = runtime
        self._pending: Runtime | None = None
        self.blocks: queue.Queue[CapturedBlock] = queue.Queue(config.daemon.queue_blocks)
        self.capture = self._new_capture(config)
        self.commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self.hub = EventHub()
        self.store: IncidentStore | None = None
        self.store_sink: StoreSink | None = None
        self.store_error = ""
        self.call: LiveCall | None = None
        self.last_call: dict[str, Any] | None = None
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.bad_blocks = 0
        self.started = time.monotonic()
        self.activity = self._new_activity(config)
        self._preroll: dict[Role, collections.deque[np.ndarray]] = self._new_preroll(config)
        self.sinks = BackgroundSinks([], capacity=SINK_QUEUE)
        self.floor: FloorLink | None = None
        self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self._watcher = threading.Thread(target=self._watch_health, name="health", daemon=True)
        self._config_mtime = _mtime(config_path)
        self._last_poll = time.monotonic()
        self.floor_error = ""
        self._open_store(config)
        if self.store is not None:  # calls of a daemon that was killed (-9, power cut) never ended
            closed = self.store.close_interrupted()
            if closed:
                log.warning(
                    "calls left open by a killed daemon closed as interrupted", extra=log_fields(calls=closed)
                )
        self.server = PanelServer(
            self, self.hub, lambda: self.runtime.token, host=config.daemon.host, port=config.daemon.port
        )

    @property
    def config(self) -> Config:
        return self.runtime.config

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, *, capture: bool = True) -> None:
        """Serve the API, open the devices (unless told not to) and start the worker."""
        self.server.start()
        if capture and self.replay is None:
            self.capture.start()
        self._worker.start()
        if self.replay is not None:  # the recorded call starts with its first sample
            self._on_worker(lambda: self._start_call(dict(self.replay.facts), source="api"))  # type: ignore[union-attr]
            self.capture.start()
        self._watcher.start()
        self._start_floor(self.config)
        # the token never goes to the log (the journal is readable by more than the agent)
        link = "run `callguard panel` for a one-time login link"
        log.info(
            "daemon ready",
            extra=log_fields(
                url=self.server.base_url, panel=link, mode=self.mode, config=str(self.config_path)
            ),
        )
        if not self.config.daemon.token:
            log.warning(
                "daemon.token is empty: a token was generated and kept beside the store;"
                " `callguard panel` gives a login link"
            )

    def supervise(self) -> None:
        """One round of the main thread's duties: capture watchdog, config reload, worker liveness."""
        self.capture.watchdog()
        if self._replay_done():
            self._replay_ended = True
            with contextlib.suppress(ApiError):
                self._on_worker(lambda: self._end_call("recording ended"))
            log.info("recording played; the daemon goes on (panel, API) until stopped")
        poll = self.config.daemon.reload_poll_s
        now = time.monotonic()
        if poll and now - self._last_poll >= poll:
            self._last_poll = now
            mtime = _mtime(self.config_path)
            if mtime != self._config_mtime:
                self._config_mtime = mtime
                log.info("config file changed", extra=log_fields(path=str(self.config_path)))
                self._reload.set()
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        if not self._worker.is_alive() and not self._stop.is_set():
            log.error("worker thread died; restarting it")
            self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
            self._worker.start()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.start()
        try:
            while not self._stop.wait(0.25):
                self.supervise()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("shutting down")
        self._stop.set()
        if self._worker.ident is not None:
            self._worker.join(timeout=COMMAND_TIMEOUT_S)
        if self.call is not None:  # the worker could not close it: do it here
            self._end_call("shutdown")
        self.capture.stop()
        self.server.stop()
        if self.floor is not None:  # what it had not sent stays in the outbox for the next start
            self.floor.stop()
        self.sinks.close()  # every event of the last call is written before the store closes
        log.info("stopped")

    def reload(self) -> None:
        """Build a new runtime from the config file; keep the old one if anything is wrong."""
        self._config_mtime = _mtime(self.config_path)
        try:
            config = load_config(self.config_path)
            runtime = build_runtime(config, self.model_override, self.runtime)
        except ConfigError as exc:
            log.error(
                "config reload rejected; the previous configuration stays in force",
                extra=log_fields(source=exc.source, key=exc.key, problem=exc.problem),
            )
            return
        except CallguardError as exc:
            log.error(
                "config reload rejected; the previous configuration stays in force",
                extra=log_fields(problem=str(exc)),
            )
            return
        old = self.config.daemon
        for key in ("host", "port"):
            if getattr(old, key) != getattr(config.daemon, key):
                log.warning(
                    "daemon.%s changes need a restart; keeping the old value",
                    key,
                    extra=log_fields(key=f"daemon.{key}"),
                )
        self._pending = runtime
        log.info("config reloaded; applies from the next call", extra=log_fields(path=str(self.config_path)))

    def _apply_pending(self) -> None:
        """Worker, between calls: switch to the reloaded runtime."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        old, new = self.config, pending.config
        self.runtime = pending
        if self.replay is None and (
            specs_from_config(old) != specs_from_config(new)
            or old.audio.rate != new.audio.rate
            or old.daemon.block_ms != new.daemon.block_ms
        ):
            self.capture.stop()
            self.blocks = queue.Queue(new.daemon.queue_blocks)
            self.capture = self._new_capture(new)
            self.capture.start()
        if (old.store, old.floor, old.daemon.notify_threats) != (
            new.store,
            new.floor,
            new.daemon.notify_threats,
        ):
            self._open_store(new)  # the old store's pending writes land in the old store, then it closes
        if old.floor != new.floor:
            self._start_floor(new)
        self.activity = self._new_activity(new)
        self._preroll = self._new_preroll(new)
        setup_logging(new.daemon.log_level)
        log.info("new configuration in force")

    def _replay_done(self) -> bool:
        playback = self.capture
        return (
            isinstance(playback, RecordingPlayback)
            and not self._replay_ended
            and playback.finished.is_set()
            and self.blocks.empty()
        )

    def _new_capture(self, config: Config) -> CaptureSet | RecordingPlayback:
        if self.replay is not None:
            return RecordingPlayback(self.replay.path, config, self.blocks, config.daemon.block_ms / 1000)
        return CaptureSet(
            specs_from_config(config),
            config.audio.rate,
            self.blocks,
            stall_s=config.daemon.stall_s,
            block_s=config.daemon.block_ms / 1000,
        )

    def _new_activity(self, config: Config) -> SpeechActivity:
        return SpeechActivity(config)

    def _new_preroll(self, config: Config) -> dict[Role, collections.deque[np.ndarray]]:
        # Enough recent audio to feed the words that started an automatic call into it.
        blocks = int((config.daemon.auto_call_speech_s * 1.5 + 0.5) / (config.daemon.block_ms / 1000)) + 1
        return {role: collections.deque(maxlen=blocks) for role in ROLES}

    def _open_store(self, config: Config) -> None:
        """Open the store and put the sinks that run off the worker in place (on the sinks' thread,
        after whatever the old ones still had to write). A store that cannot be opened (a full disk,
        a folder that cannot be made) is asked for again by its sink, which holds the events meanwhile."""
        self.store = None
        self._try_store(config, late=False)
        previous = self.store_sink
        self.store_sink = StoreSink(
            self.store,
            reopen=lambda: self._try_store(config, late=True),
            transcripts=config.store.transcripts,
            share=config.floor.share if config.floor.url else None,
        )
        self.store_sink.on_priority = self._wake_floor
        if previous is not None:  # what the old sink could not write yet is the new one's to write
            previous.successor = self.store_sink
        sinks: list[Sink] = [LogSink(), self.store_sink]
        if config.daemon.notify_threats:
            sinks.append(DesktopNotifySink())
        self.sinks.replace(sinks)

    def _try_store(self, config: Config, *, late: bool) -> IncidentStore | None:
        """The store, or None while it cannot be opened (logged when its error changes). `late`: it
        opens after the daemon started (on the sinks' thread, before any held event of a call of ours
        is written), so the calls a killed daemon left open are closed now."""
        try:
            store = IncidentStore.from_config(config)
        except ConfigError as exc:
            if str(exc) != self.store_error:
                log.error("incident store unavailable", extra=log_fields(key=exc.key, problem=exc.problem))
            self.store_error = str(exc)
            return None
        if late:
            store.close_interrupted()
            log.info("incident store opened", extra=log_fields(path=str(store.path)))
        self.store, self.store_error = store, ""
        return store

    def _start_floor(self, config: Config) -> None:
        if self.floor is not None:
            self.floor.stop()
        self.floor, self.floor_error = start_floor_link(config, lambda: self.store, self.hub.publish)

    def _wake_floor(self) -> None:
        if self.floor is not None:
            self.floor.wake()

    # --- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._run_commands()
            if self.call is None and self._pending is not None:
                self._apply_pending()
            if self.call is not None:  # what the speakers' threads heard meanwhile
                self._take_heard(self.call)
            try:
                block = self.blocks.get(timeout=0.02)
            except queue.Empty:
                continue
            try:
                for audio in self.capture.split(block):
                    self._on_audio(audio.role, audio.pcm)
            except Exception as exc:  # one bad block never stops the daemon
                self.bad_blocks += 1
                if self.bad_blocks <= 10 or self.bad_blocks % 1000 == 0:
                    log.exception(
                        "bad audio block skipped", extra=log_fields(count=self.bad_blocks, error=str(exc))
                    )
        self._run_commands()
        if self.call is not None:
            self._end_call("shutdown")

    def _watch_health(self) -> None:
        """Tell the panel when listening stops or resumes (a headset unplugged, a stalled device),
        off the audio worker: an agent whose capture died must not see a calm panel."""
        last: tuple[Any, ...] | None = None
        while not self._stop.wait(HEALTH_POLL_S):
            capture = self.capture.health()
            key = (self.mode, tuple((d["role"], d["ok"]) for d in capture))
            if key != last:
                if last is not None or not all(d["ok"] for d in capture):
                    listening = any(d["ok"] for d in capture)
                    self.hub.publish(
                        {"kind": "health", "mode": self.mode, "listening": listening, "capture": capture}
                    )
                    log.log(
                        logging.INFO if listening else logging.WARNING,
                        "listening" if listening else "not listening",
                        extra=log_fields(lost=[d["role"] for d in capture if not d["ok"]]),
                    )
                last = key

    def _run_commands(self) -> None:
        while True:
            try:
                command, future = self.commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(command())
            except BaseException as exc:
                future.set_exception(exc)

    def _on_worker(self, command: Callable[[], T]) -> T:
        """Run a command on the worker (which owns the call) and wait for its answer."""
        if self._stop.is_set():
            raise ApiError(503, "the daemon is shutting down")
        future: Future[T] = Future()
        self.commands.put((command, future))
        try:
            return future.result(timeout=COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, "the daemon's worker did not answer in time") from None

    def _on_audio(self, role: Role, pcm: np.ndarray) -> None:
        cfg = self.config.daemon
        if self.call is None:  # during a call its own gated frames say who speaks: no second VAD and gate
            self.activity.push(role, pcm)
            self._preroll[role].append(pcm)
            if (
                cfg.auto_calls
                and role == "customer"
                and self.activity.speech_seconds("customer") >= cfg.auto_call_speech_s
            ):
                call_id = "auto-" + time.strftime("%Y%m%d-%H%M%S")
                self._start_call({"call_id": call_id}, source="auto")
                for r in ROLES:  # the speech that started the call belongs to it
                    for block in self._preroll[r]:
                        self._feed(r, block)
                    self._preroll[r].clear()
            return
        self._feed(role, pcm)
        if (
            self.call is not None
            and self.call.source == "auto"
            and self.call.session.silent_for() >= cfg.auto_call_end_silence_s
        ):
            self._end_call("silence")

    def _feed(self, role: Role, pcm: np.ndarray) -> None:
        call = self.call
        if call is None or role not in call.session.channels:
            return
        if call.speakers is None:
            self._handle(call, call.session.feed(role, pcm))
            return
        call.speakers.put(role, pcm)
        self._take_heard(call)

    def _take_heard(self, call: LiveCall) -> None:
        """Worker: what the speakers' threads heard, through the word stages and the policy; and the
        degradation step for the audio still waiting."""
        speakers = call.speakers
        if speakers is None:
            return
        while True:
            try:
                heard = speakers.heard.get_nowait()
            except queue.Empty:
                break
            self._handle(call, call.session.take(heard))
        if not self.config.daemon.degrade:
            return
        step = call.degradation.update(speakers.lag_s(), time.monotonic())
        if step is not None:
            speakers.set_step(step)
            code, message = STEPS[step]
            log.warning(
                message, extra=log_fields(call_id=call.call_id, step=step, lag_s=round(speakers.lag_s(), 2))
            )
            self._handle(call, call.session.notice(message, code))

    def _handle(self, call: LiveCall, events: list[Event]) -> None:
        """The worker's share of each event is the panel's view, in memory; the sinks (store and
        outbox, log, notifications) run on their own thread."""
        for event in events:
            wire = panel_form(event)
            with self._state_lock:
                call.observe(event, wire)
            if wire["type"] in PANEL_EVENT_TYPES:
                self.hub.publish({"kind": "event", "call_id": call.call_id, "event": wire})
            self.sinks.on_event(call.info, event)

    # --- call lifecycle (worker only) ------------------------------------------------------------

    def _start_call(self, facts_in: dict[str, Any], source: str) -> dict[str, Any]:
        from callguard.core.facts import CallFacts
        from callguard.pipeline.session import CallSession

        try:
            facts = CallFacts.from_dict(facts_in, "POST /api/v1/calls")
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        call_id = str(getattr(facts, "call_id", "") or "")
        if not CALL_ID.fullmatch(call_id):
            raise ApiError(422, f"call_id: 1 to 128 printable characters without '/', got {call_id[:40]!r}")
        if self.call is not None:
            if self.call.source == "auto" and source == "api":
                self._end_call("replaced by an API call")
            else:
                raise ApiError(409, f"call {self.call.call_id!r} is in progress; end it first")
        if self._pending is not None:
            self._apply_pending()
        config = self.config
        lang = facts.language if facts.language in ("en", "fr") else ""
        model_lang = lang or (
            config.language.mode if config.language.mode != "auto" else config.language.fallback
        )
        shared = self.runtime.shared[model_lang]
        roles = self.capture.roles if isinstance(self.capture, RecordingPlayback) else ROLES
        session = CallSession(
            config, facts, shared.model, shared=shared, history=False, transcript=self._sidecar, roles=roles
        )
        facts_dict = facts.as_dict()
        call = LiveCall(
            call_id=call_id,
            facts=facts_dict,
            source=source,
            session=session,
            info=CallInfo(call_id, facts_dict, source, time.time()),
            speakers=SpeakerThreads(session, config.audio.rate) if shared.model is not None else None,
            # a replay's transcript gives the words that a missing model would not
            mode="speech" if shared.model is not None or self._sidecar is not None else "loudness-only",
            timeline=collections.deque(maxlen=config.daemon.timeline_length),
            language=lang,
        )
        call.timeline.append({"type": "call_start", "t": 0.0, "speaker": "system"})
        with self._state_lock:
            self.call = call
        self.activity.reset()
        log.info(
            "call started",
            extra=log_fields(call_id=call_id, source=source, mode=call.mode, language=lang or "auto"),
        )
        self.hub.publish({"kind": "state", **self.call_state()})
        # the call's start, then the session's opening events (language, notices)
        self._handle(call, [CallStart(t=0.0, speaker="system"), *session.events])
        return self.call_state()

    def _end_call(self, reason: str) -> dict[str, Any]:
        call = self.call
        if call is None:
            raise ApiError(404, "no call in progress")
        if call.speakers is not None:  # every block handed over is heard before the call closes
            call.speakers.drain()
            self._take_heard(call)
            call.speakers.stop()
        try:
            closing = call.session.end(reason)
        except Exception as exc:  # the call is stored even if its last flush fails
            log.exception("closing the call's pipeline failed", extra=log_fields(error=str(exc)))
            closing = []
        duration = float(call.session.t)
        if not any(isinstance(event, CallEnd) for event in closing):  # the store must still close the call
            closing.append(CallEnd(t=duration, speaker="system", duration=duration, reason=reason))
        self._handle(call, closing)
        summary = next((e for e in reversed(closing) if e.type == "summary"), None)
        state = call.state() | {
            "active": False,
            "ended": reason,
            "summary": summary.to_dict() if summary else None,
        }
        with self._state_lock:
            self.call = None
            self.last_call = state
        self.activity.reset()
        log.info(
            "call ended",
            extra=log_fields(
                call_id=call.call_id, reason=reason, level_reached=call.level, duration_s=round(duration, 1)
            ),
        )
        self.hub.publish({"kind": "state", **state})
        return state

    # --- CallController, called from HTTP threads ------------------------------------------------

    def start_call(self, facts: dict[str, Any]) -> dict[str, Any]:
        return self._on_worker(lambda: self._start_call(facts, source="api"))

    def end_call(self, call_id: str) -> dict[str, Any]:
        def end() -> dict[str, Any]:
            self._check_call(call_id)
            return self._end_call("api")

        state = self._on_worker(end)
        self.sinks.flush(COMMAND_TIMEOUT_S)  # on this HTTP thread, not the worker: stored when we answer
        return state

    def agent_action(self, call_id: str, action: str) -> dict[str, Any]:
        def act() -> dict[str, Any]:
            call = self._check_call(call_id)
            self._handle(call, call.session.action(action))
            return self.call_state()

        return self._on_worker(act)

    def request_help(self, call_id: str, message: str) -> dict[str, Any]:
        """The agent's Need help: to the floor first of all (and the store); the panel says whether
        a supervisor got it."""

        def ask() -> dict[str, Any]:
            call = self._check_call(call_id)
            self._handle(call, [HelpRequest(t=float(call.session.t), speaker="agent", message=message)])
            return {"requested": True, "floor": bool(self.config.floor.url)}

        if len(message) > 256:
            raise ApiError(422, f"message: at most 256 characters, got {len(message)}")
        return self._on_worker(ask)

    def take_break(self, minutes: float) -> dict[str, Any]:
        """The agent steps away between calls: recorded for the floor's daily figures."""
        if not 1 <= minutes <= 120:
            raise ApiError(422, f"minutes: a number from 1 to 120, got {minutes!r}")

        def record() -> dict[str, Any]:
            if self.call is not None:
                raise ApiError(409, f"call {self.call.call_id!r} is in progress: take the break after it")
            after = str((self.last_call or {}).get("call_id") or "between-calls")
            info = CallInfo(after, {}, "api", time.time())
            self.sinks.on_event(info, BreakTaken(t=0.0, speaker="agent", minutes=minutes))
            self.hub.publish({"kind": "break", "minutes": minutes})
            return {"break": True, "minutes": minutes, "floor": bool(self.config.floor.url)}

        return self._on_worker(record)

    def call_state(self) -> dict[str, Any]:
        with self._state_lock:
            if self.call is not None:
                state = self.call.state()
            else:
                state = dict(self.last_call or {"active": False}) | {"active": False}
        state["capture"] = self.capture.health()
        state.setdefault("mode", self.mode)
        return state

    def health(self) -> dict[str, Any]:
        capture = self.capture.health()
        floor = self._floor_health()
        held = self.store_sink.held if self.store_sink is not None else 0
        store_ok = self.store is not None and self.store.healthy() and not held
        model_ok = all(m is not None for m in self.runtime.models.values())
        worker_ok = self._worker.is_alive()
        if not store_ok or not worker_ok or not any(d["ok"] for d in capture):
            status = "failing"
        elif not model_ok or not all(d["ok"] for d in capture) or not floor["ok"]:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "capture": {
                "ok": all(d["ok"] for d in capture),
                "devices": capture,
                "queued_blocks": self.blocks.qsize(),
            },
            "model": {
                "ok": model_ok,
                "mode": self.mode,
                "models": {
                    lang: str(m.path) if m is not None else None for lang, m in self.runtime.models.items()
                },
                "missing": self.runtime.model_errors,
            },
            "store": {
                "ok": store_ok,
                "path": str(self.config.path(self.config.store.path)),
                "error": self.store_error or (self.store.last_error if self.store else ""),
                "recreated": self.store.recreated if self.store else "",
                "backlog": self.sinks.backlog,  # writes waiting for the disk
                "held": held,  # events the disk refused, kept in memory until it takes them
                "dropped": self.sinks.dropped + (self.store_sink.lost if self.store_sink else 0),
            },
            "floor": floor,
            "worker": {"ok": worker_ok, "bad_blocks": self.bad_blocks},
            "call": self.call.call_id if self.call else None,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    def _floor_health(self) -> dict[str, Any]:
        if self.floor is not None:
            return self.floor.status()
        url = self.config.floor.url
        return {"url": url, "ok": not url, "error": self.floor_error if url else "", "pending": 0}

    @property
    def mode(self) -> str:
        return "speech" if any(m is not None for m in self.runtime.models.values()) else "loudness-only"

    def _check_call(self, call_id: str) -> LiveCall:
        if self.call is None:
            raise ApiError(404, f"no call in progress (asked for {call_id!r})")
        if self.call.call_id != call_id:
            raise ApiError(404, f"call {call_id!r} is not the current call ({self.call.call_id!r})")
        return self.call


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def run_daemon(config_path: Path | None, model_override: str = "", replay: Replay | None = None) -> int:
    """`callguard daemon`: runs until SIGTERM/SIGINT; returns the exit status."""
    path = find_config(config_path)
    log_native_stderr("info")
    try:
        config = load_config(path)
        setup_logging(config.daemon.log_level)
        runtime = build_runtime(config, model_override)
    except ConfigError as exc:
        log.error(
            "invalid configuration", extra=log_fields(source=exc.source, key=exc.key, problem=exc.problem)
        )
        return 2
    except CallguardError as exc:
        log.error("cannot start", extra=log_fields(problem=str(exc)))
        return 2
    for lang, notice in runtime.model_errors.items():
        log.warning("loudness-only for this language", extra=log_fields(lang=lang, notice=notice))
    try:
        daemon = Daemon(path, config, runtime, model_override, replay)
    except CallguardError as exc:  # a recording that cannot be read
        log.error("cannot start", extra=log_fields(problem=str(exc)))
        return 2
    except OSError as exc:
        log.error(
            "cannot listen",
            extra=log_fields(
                key="daemon.port", host=config.daemon.host, port=config.daemon.port, error=str(exc)
            ),
        )
        return 1
    if "XDG_RUNTIME_DIR" not in os.environ and replay is None:
        log.warning("XDG_RUNTIME_DIR is not set: PulseAudio/PipeWire capture will probably fail")
    return daemon.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m callguard.live.daemon", description="Run the callguard daemon."
    )
    parser.add_argument("--config", type=Path, default=None, help="config file (default: the shipped one)")
    parser.add_argument("--model", default="", help="speech model folder or name, for every language")
    args = parser.parse_args(argv)
    return run_daemon(args.config, args.model)


if __name__ == "__main__":
    sys.exit(main())
