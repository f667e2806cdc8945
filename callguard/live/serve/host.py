"""The host of `callguard serve`: every forked call's session, each on a worker of its own.

A protocol opens a call (`ServeHost.open`) and pushes each speaker's PCM to its `ServeCall`, whose
methods only queue and return (the protocol's loop never waits for the pipeline). Each call has one
worker thread, at most `[serve] max_calls` of them (beyond it `CallRefused`): it builds the call's
`CallSession` on the shared resources (one speech model, detector and catalogues for every call),
lines each speaker's blocks up on their stream times (a gap is silence), resamples them to
`[audio] rate` (soxr), and hands each speaker's audio to that speaker's thread (the daemon's split:
frames to transcripts, `CallSession.hear`); what they heard comes back to the worker, which runs the
word-level stages and the ladder (`take`) and hands the events to the panel of the call's agent and
to the sinks (the incident store and the floor's outbox, on their own thread). vosk releases the
GIL: calls, and a call's two speakers, run side by side on every core. A call's CPU is its three
threads' CPU time.

A call that falls behind (its oldest waiting block older than 1, 2, 4 s for a whole second: the
daemon's steps, in wall time, so that a stream sent faster than real time is not mistaken for a slow
worker, and sustained, so that one slow final result of the recogniser is not either) degrades in steps it
reports to its agent and the log (partials less often, the agent's words, then all words), and
recovers a step after 5 s caught up: it never delays the other calls' workers. Past
`[serve] call_queue_s` of waiting audio its blocks are dropped and counted.
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import ROLES, AudioBlock, CallEnd, CallStart, Event, HelpRequest, Role
from callguard.core.facts import CallFacts
from callguard.live.daemon import PANEL_EVENT_TYPES, LiveCall, log_fields, panel_form
from callguard.live.floor_link import FloorLink, start_floor_link
from callguard.live.serve.hub import AgentHub
from callguard.live.server import ApiError
from callguard.live.speakers import STEPS, Degradation, apply_step
from callguard.pipeline.session import CallSession, SharedResources
from callguard.sinks.base import BackgroundSinks, CallInfo, Sink
from callguard.sinks.log import LogSink
from callguard.sinks.store import IncidentStore, StoreSink
from callguard.sources.telephony.base import CallRefused, StreamStart
from callguard.stages.sidecar import load_sidecar

log = logging.getLogger("callguard.live.serve")

CALL_ID = re.compile(r"[^/\x00-\x1f\x7f]{1,128}")
SINK_QUEUE = 200_000  # store writes of every call waiting for a slow disk
RECENT_CALLS = 200  # ended calls kept for the panels' lists (each agent sees their own)
WORKER_POLL_S = 0.25
COMMAND_TIMEOUT_S = 15.0
MAX_GAP_S = 10.0  # the most silence a gap in a speaker's stream becomes
DEGRADE_CHECK_S = 0.05
LAG_WINDOW_S = 1.0  # a call steps down when its audio waited this long above a step's threshold


@dataclass
class SpeakerInput:
    """One speaker's stream as it arrives: where it is in stream time, and its resampler."""

    rate: int = 0
    fed_s: float = 0.0  # stream seconds handed to the session so far
    resampler: Any = None  # soxr.ResampleStream, or None at the pipeline's rate


class _SpeakerThread:
    """One speaker's stages (`CallSession.hear`, and the degradation steps that touch its recogniser)
    on a thread of its own; what it heard goes back to the call's worker, in order."""

    def __init__(self, call: ServeCall, role: Role) -> None:
        self.call = call
        self.role = role
        self.cpu_s = 0.0
        self.wanted_step = 0  # set by the worker, applied before the next block (not behind the backlog)
        self._applied_step = 0
        self.inbox: queue.Queue[tuple[np.ndarray, int, float] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"{role}-{call.call_id[:24]}", daemon=True)
        self.thread.start()

    def hear(self, pcm: np.ndarray, seq: int, seconds: float) -> None:
        self.inbox.put((pcm, seq, seconds))

    def _run(self) -> None:
        started = time.thread_time()
        live = self.call.live
        assert live is not None
        session = live.session
        while (item := self.inbox.get()) is not None:
            pcm, seq, seconds = item
            try:
                heard: list[Event] = []
                step = self.wanted_step
                if step != self._applied_step:
                    heard += apply_step(session, self.role, step)
                    self._applied_step = step
                heard += session.hear(self.role, pcm)
                if heard:
                    self.call._inbox.put(_Queued("heard", heard))
            except Exception as exc:  # one bad block never stops the speaker
                self.call._bad_block(exc)
            finally:
                self.call._done(seq, seconds)
                self.cpu_s = time.thread_time() - started


@dataclass
class _Queued:
    kind: str  # "audio", "heard", "dtmf", "update", "command", "end"
    value: Any
    at: float = field(default_factory=time.monotonic)


class ServeCall:
    """One forked call: the `CallLine` a protocol pushes to, and the worker that runs its session."""

    def __init__(
        self, host: ServeHost, start: StreamStart, call_id: str, facts: CallFacts, agent_id: str
    ) -> None:
        self.host = host
        self.start = start
        self.call_id = call_id
        self.facts = facts
        self.agent_id = agent_id
        self.opened = time.monotonic()
        self.opened_wall = time.time()
        self.live: LiveCall | None = None  # built on the worker
        self.inputs: dict[Role, SpeakerInput] = {role: SpeakerInput() for role in ROLES}
        self.degradation = Degradation()
        self._lag_samples: collections.deque[tuple[float, float]] = collections.deque()
        self._checked = 0.0  # when the degradation step was last checked
        self._worker_cpu_s = 0.0
        self._speakers: dict[Role, _SpeakerThread] = {}
        self.dropped = 0
        self.bad_blocks = 0
        self.dtmf_digits = 0
        self.ended_reason = ""
        self._ending = False
        self._waiting_s = 0.0  # stream seconds queued, not yet heard
        self._pending: dict[int, float] = {}  # blocks not yet heard -> when they arrived (oldest first)
        self._seq = 0
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()  # the worker changes the panel's view, HTTP threads read it
        self._inbox: queue.Queue[_Queued] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name=f"call-{call_id[:32]}", daemon=True)

    # --- CallLine: every method queues and returns --------------------------------------------

    def audio(self, block: AudioBlock) -> None:
        seconds = len(block.pcm) / block.rate if block.rate > 0 else 0.0
        with self._lock:
            if self._ending:
                return
            if self._waiting_s + seconds > self.host.config.serve.call_queue_s:
                self.dropped += 1
                if self.dropped <= 10 or self.dropped % 500 == 0:
                    log.error(
                        "call too far behind: audio dropped",
                        extra=log_fields(call_id=self.call_id, dropped=self.dropped, role=block.role),
                    )
                return
            self._waiting_s += seconds
            now = time.monotonic()
            self._seq += 1
            seq = self._seq
            self._pending[seq] = now
        self._inbox.put(_Queued("audio", (block, seq), now))

    def dtmf(self, digit: str, t: float) -> None:
        self._inbox.put(_Queued("dtmf", (digit, t)))

    def update(self, facts: CallFacts, agent_id: str = "") -> None:
        self._inbox.put(_Queued("update", (facts, agent_id)))

    def end(self, reason: str) -> None:
        with self._lock:
            if self._ending:
                return
            self._ending = True
        self._inbox.put(_Queued("end", reason))

    # --- what other threads ask ----------------------------------------------------------------

    def command(self, run: Any) -> Any:
        """Run `run(call)` on the worker (which owns the session) and wait for its answer."""
        future: Future[Any] = Future()
        self._inbox.put(_Queued("command", (run, future)))
        try:
            return future.result(timeout=COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, f"call {self.call_id!r} did not answer in time") from None

    def lag_s(self) -> float:
        """How long the oldest waiting block has waited (wall seconds)."""
        with self._lock:
            oldest = next(iter(self._pending.values()), None)
        return time.monotonic() - oldest if oldest is not None else 0.0

    @property
    def cpu_s(self) -> float:
        """The CPU time of the call's worker and its speakers' threads."""
        return self._worker_cpu_s + sum(s.cpu_s for s in list(self._speakers.values()))

    def _done(self, seq: int, seconds: float) -> None:
        """A block was heard (or will never be): it no longer waits."""
        with self._lock:
            if self._pending.pop(seq, None) is not None:
                self._waiting_s = max(0.0, self._waiting_s - seconds)

    def _bad_block(self, exc: Exception) -> None:
        with self._lock:
            self.bad_blocks += 1
            count = self.bad_blocks
        if count <= 10 or count % 1000 == 0:
            log.exception("bad block skipped", extra=log_fields(call_id=self.call_id, error=str(exc)))

    def sustained_lag_s(self, now: float) -> float:
        """The least lag over the last LAG_WINDOW_S (counting the sample in force when it began): a
        recogniser's slow final result is a burst that the worker catches up on, not a call falling
        behind, and stepping down would not shorten it."""
        samples = self._lag_samples
        samples.append((now, self.lag_s()))
        while len(samples) > 1 and samples[1][0] <= now - LAG_WINDOW_S:
            samples.popleft()
        return min(lag for _, lag in samples) if samples[0][0] <= now - LAG_WINDOW_S else 0.0

    def state(self) -> dict[str, Any]:
        live = self.live
        with self._state_lock:
            view = live.state() if live is not None else None
        base: dict[str, Any] = (
            view
            if view is not None
            else {
                "active": True,
                "call_id": self.call_id,
                "facts": self.facts.as_dict(),
                "level": "calm",
                "prompt": None,
                "alert": None,
                "actions": [],
                "timeline": [],
                "mode": "speech",
            }
        )
        base.update(
            agent_id=self.agent_id,
            protocol=self.start.protocol,
            stream_id=self.start.stream_id,
            opened_at=self.opened_wall,
        )
        if self.ended_reason:
            base.update(active=False, ended=self.ended_reason)
        return base

    def figures(self) -> dict[str, Any]:
        live = self.live
        session = live.session if live is not None else None
        with self._state_lock:
            level = live.level if live is not None else "calm"
        return {
            "call_id": self.call_id,
            "agent_id": self.agent_id,
            "protocol": self.start.protocol,
            "cpu_s": round(self.cpu_s, 3),
            "audio_s": round(float(session.t), 2) if session is not None else 0.0,
            "lag_s": round(self.lag_s(), 3),
            "step": self.degradation.step,
            "dropped": self.dropped,
            "bad_blocks": self.bad_blocks,
            "level": level,
        }

    # --- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            self._open_session()
        except Exception as exc:  # the call cannot run: say so, keep the others
            log.exception("call could not start", extra=log_fields(call_id=self.call_id, error=str(exc)))
            self.ended_reason = f"error: {exc}"
            with self._lock:
                self._ending = True  # what the protocol still sends is not kept
            self.host._finished(self)
            return
        reason = ""
        speakers = list(self._speakers.values())
        # Until the stream ends, and then until its speakers have heard all they were handed: what
        # they hear meanwhile is taken (prompts do not wait for the backlog) and the steps still apply.
        while not reason or any(s.thread.is_alive() for s in speakers):
            try:
                item = self._inbox.get(timeout=WORKER_POLL_S if not reason else 0.02)
            except queue.Empty:
                self._degrade()
                continue
            ended = self._step(item)
            if ended and not reason:
                reason = ended
                for speaker in speakers:
                    speaker.inbox.put(None)  # after every block already handed over
            self._worker_cpu_s = time.thread_time() - cpu_start
            if time.monotonic() - self._checked >= DEGRADE_CHECK_S:  # whatever the worker is busy with
                self._degrade()
        while True:  # what the speakers heard last
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item.kind in ("heard", "command"):
                self._step(item)
        self._close(reason)
        self._worker_cpu_s = time.thread_time() - cpu_start
        self.host._finished(self)
        while True:  # a panel's command that came after the end: answered, not left to time out
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item.kind == "command" and item.value[1].set_running_or_notify_cancel():
                item.value[1].set_exception(ApiError(404, f"call {self.call_id!r} has ended"))

    def _open_session(self) -> None:
        host, config = self.host, self.host.config
        lang = self.facts.language if self.facts.language in ("en", "fr") else ""
        model_lang = lang or (
            config.language.mode if config.language.mode != "auto" else config.language.fallback
        )
        shared = host.shared[model_lang]
        transcript = host.transcript_for(self.call_id)
        session = CallSession(
            config, self.facts, shared.model, shared=shared, history=False, transcript=transcript
        )
        facts = self.facts.as_dict()
        self.live = LiveCall(
            call_id=self.call_id,
            facts=facts,
            source=self.start.protocol,
            session=session,
            # the store and the floor name the agent by their id when the facts give no name (not
            # the prompts: a phrase that says "I am a-1042" would not do)
            info=CallInfo(
                self.call_id,
                {**facts, "agent_name": self.facts.agent_name or self.agent_id},
                self.start.protocol,
                self.opened_wall,
            ),
            mode="speech" if shared.model is not None or transcript is not None else "loudness-only",
            timeline=collections.deque(maxlen=config.daemon.timeline_length),
            language=lang,
        )
        self.live.timeline.append({"type": "call_start", "t": 0.0, "speaker": "system"})
        self._speakers = {role: _SpeakerThread(self, role) for role in session.channels}
        log.info(
            "call started",
            extra=log_fields(
                call_id=self.call_id,
                agent_id=self.agent_id,
                protocol=self.start.protocol,
                stream_id=self.start.stream_id,
                remote=self.start.remote,
                mode=self.live.mode,
                sidecar=transcript is not None,
            ),
        )
        host.publish_state(self)
        self._handle([CallStart(t=0.0, speaker="system"), *session.events])

    def _step(self, item: _Queued) -> str:
        try:
            return self._do(item)
        except Exception as exc:  # one bad block never stops the call
            if item.kind == "audio":
                block, seq = item.value
                self._done(seq, len(block.pcm) / block.rate if block.rate > 0 else 0.0)
            self._bad_block(exc)
            return ""

    def _do(self, item: _Queued) -> str:
        """One queued item on the worker; returns the end reason when the call is over."""
        live = self.live
        assert live is not None
        match item.kind:
            case "audio":
                self._hear(*item.value)
            case "heard":
                self._handle(live.session.take(item.value))
            case "dtmf":
                _digit, t = item.value
                self.dtmf_digits += 1
                log.info(
                    "dtmf",
                    extra=log_fields(call_id=self.call_id, digit_count=self.dtmf_digits, t=round(t, 2)),
                )
            case "update":
                facts, agent_id = item.value
                self.host.join_facts(self, facts, agent_id)
            case "command":
                run, future = item.value
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(run(self))
                    except BaseException as exc:
                        future.set_exception(exc)
            case "end":
                return str(item.value) or "end"
        return ""

    def _hear(self, block: AudioBlock, seq: int) -> None:
        """Line the block up on its speaker's stream time, resample it, hand it to the speaker's thread."""
        live = self.live
        assert live is not None
        role: Role = block.role
        if role not in live.session.channels:
            raise ValueError(f"no {role!r} speaker in this call")
        speaker = self.inputs[role]
        rate = self.host.config.audio.rate
        if block.rate != speaker.rate:  # the first block, or a stream that changed its rate
            speaker.rate = block.rate
            speaker.resampler = (
                None if block.rate == rate else soxr.ResampleStream(block.rate, rate, 1, dtype="int16")
            )
        pcm = np.asarray(block.pcm, dtype=np.int16).reshape(-1)
        # The speaker's blocks on their stream times: a gap (a late second connection, a lost
        # stretch the protocol could not conceal) is silence, an overlap is cut.
        gap = block.t - speaker.fed_s
        if gap > MAX_GAP_S:  # a protocol's clock that jumped: a bounded silence, and a line saying so
            log.warning(
                "stream time jumped ahead: silence capped",
                extra=log_fields(call_id=self.call_id, role=role, gap_s=round(gap, 2), filled_s=MAX_GAP_S),
            )
            speaker.fed_s = block.t - MAX_GAP_S
            gap = MAX_GAP_S
        if gap > 0.02:
            pcm = np.concatenate([np.zeros(round(gap * block.rate), np.int16), pcm])
        elif gap < -0.02:
            pcm = pcm[min(len(pcm), round(-gap * block.rate)) :]
        speaker.fed_s += len(pcm) / block.rate
        if speaker.resampler is not None:
            pcm = speaker.resampler.resample_chunk(pcm)
        seconds = len(block.pcm) / block.rate
        if len(pcm):
            self._speakers[role].hear(pcm, seq, seconds)
        else:
            self._done(seq, seconds)

    def _degrade(self) -> None:
        self._checked = time.monotonic()
        live = self.live
        if live is None or not self.host.config.daemon.degrade:
            return
        now = time.monotonic()
        lag = self.sustained_lag_s(now)
        step = self.degradation.update(lag, now)
        if step is None:
            return
        for speaker in self._speakers.values():  # on each speaker's own thread: its recogniser
            speaker.wanted_step = step
        code, message = STEPS[step]
        log.warning(message, extra=log_fields(call_id=self.call_id, step=step, lag_s=round(lag, 2)))
        self._handle(live.session.notice(message, code))

    def _handle(self, events: list[Event]) -> None:
        live = self.live
        assert live is not None
        for event in events:
            wire = panel_form(event)
            with self._state_lock:
                live.observe(event, wire)
            if wire["type"] in PANEL_EVENT_TYPES:
                self.host.hub.publish(
                    self.agent_id, {"kind": "event", "call_id": self.call_id, "event": wire}
                )
            self.host.sinks.on_event(live.info, event)

    def _close(self, reason: str) -> None:
        live = self.live
        assert live is not None
        try:
            for role, speaker in self.inputs.items():  # what the resamplers still hold
                if speaker.resampler is not None:
                    tail = speaker.resampler.resample_chunk(np.zeros(0, np.int16), last=True)
                    if len(tail):
                        self._handle(live.session.take(live.session.hear(role, tail)))
            closing = live.session.end(reason)
        except Exception as exc:  # the call is stored even if its last flush fails
            log.exception(
                "closing the call's pipeline failed", extra=log_fields(call_id=self.call_id, error=str(exc))
            )
            closing = []
        duration = float(live.session.t)
        if not any(isinstance(e, CallEnd) for e in closing):
            closing.append(CallEnd(t=duration, speaker="system", duration=duration, reason=reason))
        self._handle(closing)
        self.ended_reason = reason
        log.info(
            "call ended",
            extra=log_fields(
                call_id=self.call_id,
                agent_id=self.agent_id,
                reason=reason,
                level_reached=live.level,
                duration_s=round(duration, 1),
                cpu_s=round(self.cpu_s, 2),
                dropped=self.dropped,
            ),
        )


@dataclass
class _CtiStart:
    facts: dict[str, Any]  # the CTI's non-empty facts
    agent_id: str
    expires: float


class ServeHost:
    """The `CallHost` of `callguard serve` (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        shared: dict[str, SharedResources],
        *,
        hub: AgentHub | None = None,
        transcripts: Path | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self.hub = hub or AgentHub()
        self.transcripts = transcripts
        self.calls: dict[str, ServeCall] = {}
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CALLS)
        self.taken = 0
        self.refused = 0
        self.ended_cpu_s = 0.0
        self.started = time.monotonic()
        self._cpu_start = time.process_time()
        self._cti: dict[str, _CtiStart] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self.sinks = BackgroundSinks([], capacity=SINK_QUEUE)
        self.store: IncidentStore | None = None
        self.store_sink: StoreSink | None = None
        self.store_error = ""
        self.floor: FloorLink | None = None
        self.floor_error = ""
        self._open_sinks()

    # --- CallHost --------------------------------------------------------------------------------

    def open(self, start: StreamStart) -> ServeCall:
        with self._lock:
            if self._stopping:
                self.refused += 1
                raise CallRefused("callguard serve is stopping")
            if len(self.calls) >= self.config.serve.max_calls:
                self.refused += 1
                log.warning(
                    "call refused: at the call limit",
                    extra=log_fields(
                        protocol=start.protocol,
                        stream_id=start.stream_id,
                        remote=start.remote,
                        max_calls=self.config.serve.max_calls,
                    ),
                )
                raise CallRefused(f"at the limit of {self.config.serve.max_calls} calls ([serve] max_calls)")
            call_id = start.facts.call_id or start.stream_id
            if not CALL_ID.fullmatch(call_id):
                self.refused += 1
                raise CallRefused(f"call id {call_id[:40]!r}: 1 to 128 printable characters without '/'")
            facts, agent_id = replace(start.facts, call_id=call_id), start.agent_id
            cti = self._take_cti(call_id)
            if cti is not None:
                facts, agent_id = _joined(facts, cti.facts), cti.agent_id or agent_id
            agent_id = agent_id or self.config.serve.default_agent
            if call_id in self.calls:  # two streams of one call id (a retry): keep both apart
                call_id = f"{call_id}~{start.stream_id[:40] or self.taken}"
                facts = replace(facts, call_id=call_id)
            call = ServeCall(self, start, call_id, facts, agent_id)
            self.calls[call_id] = call
            self.taken += 1
        call._worker.start()
        return call

    # --- the CTI and the panels ------------------------------------------------------------------

    def cti_start(self, body: dict[str, Any]) -> dict[str, Any]:
        """A CTI call start: its facts (and agent) join the stream of that call id, open or to come."""
        body = dict(body)
        agent_id = body.pop("agent_id", "") or ""
        if not isinstance(agent_id, str):
            raise ApiError(422, f"agent_id must be a string, got {type(agent_id).__name__}")
        try:
            facts = CallFacts.from_dict(body, "POST /api/v1/calls")
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        if not CALL_ID.fullmatch(facts.call_id):
            raise ApiError(
                422, f"call_id: 1 to 128 printable characters without '/', got {facts.call_id[:40]!r}"
            )
        given = {k: v for k, v in body.items() if v not in (None, "")}
        given["call_id"] = facts.call_id
        with self._lock:
            call = self.calls.get(facts.call_id)
            if call is None:
                now = time.monotonic()
                self._cti = {k: v for k, v in self._cti.items() if v.expires > now}
                if len(self._cti) >= 10_000:
                    raise ApiError(503, "too many CTI call starts waiting for their streams")
                self._cti[facts.call_id] = _CtiStart(
                    CallFacts.from_dict(given, "CTI").as_dict() | {"_given": sorted(given)},
                    agent_id,
                    now + self.config.serve.cti_hold_s,
                )
                return {"call_id": facts.call_id, "joined": False, "waiting_s": self.config.serve.cti_hold_s}
        call.update(CallFacts.from_dict(given, "CTI"), agent_id)
        return {"call_id": facts.call_id, "joined": True}

    def join_facts(self, call: ServeCall, facts: CallFacts, agent_id: str) -> None:
        """On the call's worker: newer facts from the stream or the CTI; the agent's panel follows."""
        unset = CallFacts().as_dict()  # a CallFacts cannot say what was not given: its defaults were not
        given = {k: v for k, v in facts.as_dict().items() if v != unset[k] and k != "call_id"}
        call.facts = replace(call.facts, **given)
        if call.live is not None:
            call.live.facts = call.facts.as_dict()
        old = call.agent_id
        if agent_id and agent_id != old:
            call.agent_id = agent_id
            self.hub.publish(old, {"kind": "gone", "call_id": call.call_id})
            log.info(
                "call moved to another agent",
                extra=log_fields(call_id=call.call_id, agent_id=agent_id, was=old),
            )
        self.publish_state(call)

    def calls_of(self, agent_id: str | None) -> list[dict[str, Any]]:
        """The calls an agent's panel lists (None: every call), newest first: open ones, then ended."""
        with self._lock:
            open_calls = list(self.calls.values())
            ended = list(self.recent)
        states = [c.state() for c in open_calls if agent_id is None or c.agent_id == agent_id]
        states.sort(key=lambda s: s["opened_at"], reverse=True)
        states += [s for s in reversed(ended) if agent_id is None or s.get("agent_id") == agent_id][:20]
        return states

    def call_of(self, agent_id: str | None, call_id: str) -> ServeCall:
        with self._lock:
            call = self.calls.get(call_id)
        if call is None or (agent_id is not None and call.agent_id != agent_id):
            raise ApiError(404, f"no open call {call_id!r} on this panel")
        return call

    def agent_action(self, agent_id: str | None, call_id: str, action: str) -> dict[str, Any]:
        call = self.call_of(agent_id, call_id)

        def act(c: ServeCall) -> dict[str, Any]:
            assert c.live is not None
            c._handle(c.live.session.action(action))
            return c.state()

        return dict(call.command(act))

    def request_help(self, agent_id: str | None, call_id: str, message: str) -> dict[str, Any]:
        if len(message) > 256:
            raise ApiError(422, f"message: at most 256 characters, got {len(message)}")
        call = self.call_of(agent_id, call_id)

        def ask(c: ServeCall) -> dict[str, Any]:
            assert c.live is not None
            c._handle([HelpRequest(t=float(c.live.session.t), speaker="agent", message=message)])
            return {"requested": True, "floor": bool(self.config.floor.url)}

        return dict(call.command(ask))

    def publish_state(self, call: ServeCall) -> None:
        self.hub.publish(call.agent_id, {"kind": "call", **call.state()})

    def transcript_for(self, call_id: str) -> Any:
        """`--transcripts DIR`: the call's words from DIR/<call_id>.transcript.json (trials and tests)."""
        if self.transcripts is None:
            return None
        path = self.transcripts / f"{call_id}.transcript.json"
        if not path.is_file():
            return None
        try:
            return load_sidecar(path)[0]
        except ConfigError as exc:
            log.error(
                "transcript sidecar unreadable: the recogniser is used",
                extra=log_fields(call_id=call_id, problem=str(exc)),
            )
            return None

    # --- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        with self._lock:
            open_calls = list(self.calls.values())
        figures = [c.figures() for c in open_calls]
        held = self.store_sink.held if self.store_sink is not None else 0
        store_ok = self.store is not None and self.store.healthy() and not held
        floor = (
            self.floor.status()
            if self.floor is not None
            else {
                "url": self.config.floor.url,
                "ok": not self.config.floor.url,
                "error": self.floor_error,
                "pending": 0,
            }
        )
        models = {lang: str(s.model.path) if s.model is not None else None for lang, s in self.shared.items()}
        behind = any(f["step"] > 0 for f in figures)
        status = "failing" if not store_ok else ("degraded" if behind or not floor["ok"] else "ok")
        return {
            "status": status,
            "calls": {
                "open": len(figures),
                "max": self.config.serve.max_calls,
                "taken": self.taken,
                "refused": self.refused,
                "degraded": sum(1 for f in figures if f["step"] > 0),
                "list": figures,
            },
            "cpu": {
                "process_s": round(time.process_time() - self._cpu_start, 2),
                "open_calls_s": round(sum(f["cpu_s"] for f in figures), 2),
                "ended_calls_s": round(self.ended_cpu_s, 2),
            },
            "model": {"ok": all(models.values()), "models": models},
            "store": {
                "ok": store_ok,
                "error": self.store_error or (self.store.last_error if self.store else ""),
                "backlog": self.sinks.backlog,
                "dropped": self.sinks.dropped,
                "held": held,  # events the disk refused, kept in memory until it takes them
            },
            "floor": floor,
            "panels": self.hub.subscriber_count,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def shutdown(self, timeout: float = 20.0) -> None:
        """End every call (reason "shutdown"), wait for their workers, then close the sinks."""
        with self._lock:
            self._stopping = True
            open_calls = list(self.calls.values())
        for call in open_calls:
            call.end("shutdown")
        deadline = time.monotonic() + timeout
        for call in open_calls:
            call._worker.join(max(0.1, deadline - time.monotonic()))
        if self.floor is not None:
            self.floor.stop()
        self.sinks.close()

    def _finished(self, call: ServeCall) -> None:
        with self._lock:
            self.calls.pop(call.call_id, None)
            self.ended_cpu_s += call.cpu_s
            state = call.state()
            self.recent.append(state)
        self.hub.publish(call.agent_id, {"kind": "call", **state})

    def _take_cti(self, call_id: str) -> _CtiStart | None:
        cti = self._cti.pop(call_id, None)
        return cti if cti is not None and cti.expires > time.monotonic() else None

    def _open_sinks(self) -> None:
        config = self.config
        try:
            self.store = IncidentStore.from_config(config)
        except ConfigError as exc:
            self.store_error = str(exc)
            log.error("incident store unavailable", extra=log_fields(key=exc.key, problem=exc.problem))
        sinks: list[Sink] = [LogSink()]
        if self.store is not None:
            closed = self.store.close_interrupted()
            if closed:
                log.warning(
                    "calls left open by a killed server closed as interrupted", extra=log_fields(calls=closed)
                )
            store_sink = self.store_sink = StoreSink(
                self.store,
                transcripts=config.store.transcripts,
                share=config.floor.share if config.floor.url else None,
            )
            store_sink.on_priority = lambda: self.floor.wake() if self.floor is not None else None
            sinks.append(store_sink)
        self.sinks.replace(sinks)
        self.floor, self.floor_error = start_floor_link(config, lambda: self.store, self._floor_message)

    def _floor_message(self, message: dict[str, Any]) -> None:
        """The floor link's news (a supervisor on the way, an alert not through) to the call's agent."""
        call_id = message.get("call_id") or (message.get("notice") or {}).get("call_id", "")
        with self._lock:
            call = self.calls.get(call_id)
            agent = (
                call.agent_id
                if call is not None
                else next((s.get("agent_id", "") for s in self.recent if s.get("call_id") == call_id), "")
            )
        self.hub.publish(agent, message)


def _joined(stream: CallFacts, cti: dict[str, Any]) -> CallFacts:
    """The stream's facts with what the CTI gave on top (the CTI knows names the stream does not)."""
    given = set(cti.get("_given", ()))
    values = {k: v for k, v in cti.items() if k in given and k != "call_id"}
    return replace(stream, **values)
