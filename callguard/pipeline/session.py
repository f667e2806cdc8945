"""One call through every stage: frames → VAD → non-speech gate → loudness → recogniser →
language → detector → policy.

`CallSession` is the whole runner, for a replayed file and a live call alike:
feed it PCM16 blocks per speaker, read back the events. Stages do no I/O; the
shared, read-only resources (model, lexicons, prompt catalogues) are loaded
once in `SharedResources` and reused by every call.

Stages come in two shapes (`callguard.stages.base`): each `SpeakerChannel` runs its
speaker's frame stages as one `FrameChain`, and the session passes every event through
its event stages in order, ticking them after each block. Neither knows which stages
it runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from callguard.audio.framing import Framer
from callguard.core.config import Config
from callguard.core.events import ROLES, AgentAction, CallEnd, Event, Notice, Role
from callguard.core.facts import CallFacts
from callguard.detector import AbuseStage, AgentActStage, TextDetector, load_detector
from callguard.detector.semantic import SemanticClassifier
from callguard.detector.stage import AgentNames
from callguard.detector.text_detector import load_agent_acts
from callguard.policy.ladder import EscalationPolicy, PromptCatalogue, load_catalogues
from callguard.stages.asr import Recogniser, SpeechModel
from callguard.stages.base import EventStage, FrameChain, FrameStage
from callguard.stages.gate import NonSpeechGate
from callguard.stages.language import LanguageDecider
from callguard.stages.loudness import LoudnessTracker
from callguard.stages.sidecar import SidecarFeeder, Utterance
from callguard.stages.speech_clock import SpeechClock
from callguard.stages.vad import VoiceActivityDetector, VoiceCheckPool

ActionName = Literal["acknowledged", "limits_stated", "transferred", "released"]


@dataclass(frozen=True)
class SharedResources:
    """What every call reads and none changes, built once per configuration; and the voice checks,
    loaded once and lent to one call at a time."""

    config: Config
    detector: TextDetector
    catalogues: dict[str, PromptCatalogue]
    model: SpeechModel | None = None
    agent_acts: SemanticClassifier | None = None  # the agent's speech acts
    voice_checks: VoiceCheckPool = field(default_factory=VoiceCheckPool)  # lent, not changed

    @classmethod
    def build(cls, config: Config, model: SpeechModel | None = None) -> SharedResources:
        detector, agent_acts = load_detector(config), load_agent_acts(config)
        # the sentence encoders' weights, once per process: the first threat of a call must not
        # wait for them
        for classifier in (detector.semantic, agent_acts):
            if classifier is not None:
                classifier.load()
        return cls(
            config=config,
            detector=detector,
            catalogues=load_catalogues(config),
            model=model,
            agent_acts=agent_acts,
        )


def frame_stages(
    role: Role,
    config: Config,
    model: SpeechModel | None,
    transcribed: bool,
    voice_checks: VoiceCheckPool,
) -> list[FrameStage]:
    """One speaker's frame stages in order: VAD, the non-speech gate (unless disabled), loudness, and
    the recogniser when there is a model and no transcript (`transcribed`) to read instead."""
    audio = config.audio
    stages: list[FrameStage] = [VoiceActivityDetector(config.vad, audio.rate, audio.frame_ms, role)]
    if config.gate.enabled:
        stages.append(NonSpeechGate(config.gate, audio.rate, audio.frame_ms, voice_checks))
    stages.append(SpeechClock(audio.frame_ms))  # where the speaker last spoke, for the live daemon
    # The agent is reminded to speak low and slow at a margin of its own (policy.agent_margin_db).
    agent_margin = config.policy.agent_margin_db if role == "agent" else None
    stages.append(LoudnessTracker(config.loudness, audio.frame_ms, role, margin_db=agent_margin))
    if model is not None and not transcribed:
        stages.append(
            Recogniser(
                model,
                role,
                audio.rate,
                audio.frame_ms,
                partials=config.asr.partials,
                max_utterance_s=config.asr.max_utterance_s,
                renew_after_s=config.asr.renew_after_s,
            )
        )
    return stages


class SpeakerChannel:
    """One speaker's side of the call: raw PCM cut into frames and run through the frame stages, and
    the stages that this speaker's audio clock ticks (a transcript sidecar: its words come out as the
    audio reaches their end, as a recogniser's would)."""

    def __init__(
        self,
        role: Role,
        config: Config,
        model: SpeechModel | None,
        sidecar: list[Utterance] | None,
        voice_checks: VoiceCheckPool,
    ) -> None:
        self.role = role
        self.framer = Framer(role, config.audio.rate, config.audio.frame_ms)
        self.stages = FrameChain(frame_stages(role, config, model, sidecar is not None, voice_checks))
        self.speech = next(s for s in self.stages.stages if isinstance(s, SpeechClock))
        self.clocked: list[EventStage] = [SidecarFeeder(sidecar)] if sidecar is not None else []

    def push(self, pcm: np.ndarray) -> list[Event]:
        out: list[Event] = []
        chain = self.stages
        for frame in self.framer.push(pcm):
            out += chain.process(frame)[1]  # the last stage's frames have nowhere further to go
        for stage in self.clocked:
            out += stage.tick(self.framer.t)
        return out

    def flush(self) -> list[Event]:
        out = self.stages.flush(self.framer.t)[1]
        for stage in self.clocked:
            out += stage.tick(math.inf)
        return out


class CallSession:
    def __init__(
        self,
        config: Config,
        facts: CallFacts | None = None,
        model: SpeechModel | None = None,
        lang: str = "",
        *,
        transcript: dict[Role, list[Utterance]] | None = None,
        shared: SharedResources | None = None,
        roles: Iterable[Role] = ROLES,
        history: bool = True,
    ) -> None:
        """`history=False` keeps only the opening events in `events`: a live daemon or a batch
        worker streams events out and need not hold an hour-long call's partials in memory."""
        self.config = config
        self.facts = facts or CallFacts()
        self.shared = shared or SharedResources.build(config, model)
        model = model or self.shared.model
        self.channels = {
            role: SpeakerChannel(
                role,
                config,
                model,
                None if transcript is None else transcript.get(role, []),
                self.shared.voice_checks,
            )
            for role in roles
        }
        given, source = _given_language(lang, self.facts, config)
        self.language = LanguageDecider(config.language, given, source)
        decider = self.language  # not `self`: the stage would hold the session in a reference cycle
        detector = config.detector
        self.abuse = AbuseStage(
            self.shared.detector,
            detector.stable_partials,
            context_s=detector.context_s,
            partial_step_words=detector.partial_step_words,
            language=lambda: decider.lang,
        )
        facts = self.facts
        self.agent_acts = (
            AgentActStage(
                self.shared.agent_acts, AgentNames.of(facts.customer_name, facts.company, facts.agent_name)
            )
            if self.shared.agent_acts is not None
            else None
        )
        self.policy = EscalationPolicy(
            config.policy, self.shared.catalogues, self.facts, given or config.language.fallback
        )
        self.events: list[Event] = []
        self._history = True  # the opening events are always kept
        self.ended = False
        self._tick(0.0)  # the call starts: a given language is decided now
        if model is None and transcript is None:
            notice = Notice(
                t=0.0,
                speaker="system",
                message="no speech model: detecting from sound alone (loudness, shouting)",
                code="loudness_only",
            )
            self._dispatch([notice])
        self._history = history

    @property
    def event_stages(self) -> list[EventStage]:
        """The word-level stages and the policy, in the order each event reaches them (read from the
        attributes at every dispatch, so a stage put in their place, as the bench's meters are, is used)."""
        acts: list[EventStage] = [self.agent_acts] if self.agent_acts is not None else []
        return [self.language, self.abuse, *acts, self.policy]

    @property
    def t(self) -> float:
        return max(channel.framer.t for channel in self.channels.values())

    @property
    def level(self) -> str:
        return self.policy.level

    def silent_for(self) -> float:
        """Seconds of audio since anyone last spoke, from the gated frames of every channel that is
        hearing audio (a call without an agent device still ends)."""
        heard = [c.speech.silent_for for c in self.channels.values() if c.speech.heard > 0]
        return min(heard, default=0.0)

    def feed(self, role: Role, pcm: np.ndarray) -> list[Event]:
        """Process a block of one speaker's int16 audio at config.audio.rate; returns the new events."""
        return self.take(self.hear(role, pcm))

    def hear(self, role: Role, pcm: np.ndarray) -> list[Event]:
        """The speaker's own stages on a block (frames to transcripts): touches that speaker's channel
        only, so the live daemon runs each speaker's on a thread of its own. Then `take` the events."""
        channel = self.channels.get(role)
        if channel is None:
            raise ValueError(f"this call has no {role!r} channel (it has {', '.join(self.channels)})")
        return channel.push(pcm)

    def take(self, heard: list[Event]) -> list[Event]:
        """What a speaker's channel heard, through the word-level stages and the policy (one thread)."""
        produced = self._dispatch(heard)
        produced += self._tick(self.t)
        return produced

    def recognisers(self) -> dict[Role, Recogniser]:
        """Each channel's recogniser, for the live daemon's degradation steps."""
        found = {}
        for role, channel in self.channels.items():
            for stage in channel.stages.stages:
                if isinstance(stage, Recogniser):
                    found[role] = stage
        return found

    def action(self, name: ActionName) -> list[Event]:
        """The agent did something (pressed a panel button, or the CTI said so)."""
        return self._dispatch([AgentAction(t=self.t, speaker="agent", action=name)])

    def notice(self, message: str, code: str) -> list[Event]:
        """Tell the operator something about this call's audio (a recording that ends early...)."""
        return self._dispatch([Notice(t=self.t, speaker="system", message=message, code=code)])

    def end(self, reason: str = "") -> list[Event]:
        """Flush every stage and close the call; `reason` says why it ended (CallEnd.reason)."""
        if self.ended:
            return []
        self.ended = True
        produced: list[Event] = []
        for channel in self.channels.values():
            produced.extend(self._dispatch(channel.flush()))
        t = self.t
        produced.extend(
            self._dispatch([*self.policy.end(t), CallEnd(t=t, speaker="system", duration=t, reason=reason)])
        )
        return produced

    def _tick(self, t: float) -> list[Event]:
        """Each event stage in turn is told the time; what it brings is dispatched before the next is
        told, so the policy's timers see the words that came with the same block."""
        produced: list[Event] = []
        for stage in self.event_stages:
            produced += self._dispatch(stage.tick(t))
        return produced

    def _dispatch(self, events: Iterable[Event]) -> list[Event]:
        """Pass events through every event stage, in order; what the stages derive from an event is
        passed on the same way, before the next event (depth first: causes before later events)."""
        stages = self.event_stages
        produced: list[Event] = []
        queue = list(events)
        while queue:
            event = queue.pop(0)
            produced.append(event)
            derived: list[Event] = []
            for stage in stages:
                derived += stage.on_event(event)
            queue[:0] = derived
        if self._history:
            self.events.extend(produced)
        return produced


def _given_language(
    lang: str, facts: CallFacts, config: Config
) -> tuple[Literal["en", "fr"] | None, Literal["cli", "call_info", "config"]]:
    """Command line first, then the call's facts, then config; `auto` leaves it to the words."""
    if lang and lang != "auto":
        return lang, "cli"  # type: ignore[return-value]
    if facts.language in ("en", "fr"):
        return facts.language, "call_info"  # type: ignore[return-value]
    if config.language.mode != "auto":
        return config.language.mode, "config"
    return None, "config"
