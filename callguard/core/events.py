"""Every event that flows through the pipeline, in one place.

Events are frozen dataclasses with a time `t` in seconds of call time and a
`speaker` role. `Event.to_dict()` is the JSONL form: the dataclass fields plus
a `type` tag. Audio frames are not events: they never leave the pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

Role = Literal["customer", "agent"]
ROLES: tuple[Role, ...] = ("customer", "agent")
Level = Literal["calm", "tense", "abusive", "transfer", "release"]
LEVELS: tuple[Level, ...] = ("calm", "tense", "abusive", "transfer", "release")
Category = Literal["profanity", "insult", "threat"]
CATEGORIES: tuple[Category, ...] = ("profanity", "insult", "threat")
# What the agent's own words do, as the seeds' steps name them ("none": anything else).
AgentAct = Literal["limits", "personalise", "transfer", "release", "apology", "summary", "empathy", "none"]
AGENT_ACTS: tuple[AgentAct, ...] = (
    "limits",
    "personalise",
    "transfer",
    "release",
    "apology",
    "summary",
    "empathy",
    "none",
)


@dataclass(frozen=True, slots=True)
class Frame:
    """A fixed-length block of mono PCM16 audio of one speaker at the pipeline rate."""

    t: float  # call time of the first sample
    speaker: Role
    pcm: bytes
    speech: bool = False  # set by the VAD (padded, so segments do not flicker), cleared by the gate
    level_db: float = -120.0  # RMS level in dBFS, set by the Framer

    def with_speech(self, speech: bool) -> Frame:
        """This frame with `speech` set (dataclasses.replace costs several times more, on every frame)."""
        return Frame(self.t, self.speaker, self.pcm, speech, self.level_db)


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float  # call time
    end: float
    conf: float = 1.0


@dataclass(frozen=True, slots=True)
class Event:
    t: float
    speaker: Role | Literal["system"]
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True, slots=True)
class SpeechStart(Event):
    type: ClassVar[str] = "speech_start"


@dataclass(frozen=True, slots=True)
class SpeechEnd(Event):
    duration: float = 0.0
    type: ClassVar[str] = "speech_end"


@dataclass(frozen=True, slots=True)
class NonSpeech(Event):
    """Hold music, a ring/busy tone, DTMF or steady noise that passed the VAD."""

    kind: Literal["music", "tone", "noise"] = "music"
    duration: float = 0.0

    @property
    def type(self) -> str:  # type: ignore[override]
        return self.kind


@dataclass(frozen=True, slots=True)
class Shouting(Event):
    level_db: float = 0.0
    baseline_db: float | None = None  # None: absolute ceiling crossed before a baseline existed
    reason: Literal["baseline", "ceiling"] = "baseline"
    duration: float = 0.0
    type: ClassVar[str] = "shouting"


@dataclass(frozen=True, slots=True)
class Transcript(Event):
    """Recognised words: a partial (may still change) or a final result."""

    text: str = ""
    words: tuple[Word, ...] = ()
    final: bool = False

    @property
    def type(self) -> str:  # type: ignore[override]
        return "final" if self.final else "partial"


MatchSource = Literal["lexicon", "semantic", "context"]


@dataclass(frozen=True, slots=True)
class Match:
    category: Category
    severity: int  # 1 (mild) .. 3 (severe)
    words: tuple[str, ...]
    term: str  # the lexicon entry that matched, or the semantic head's score
    directed: bool = False  # aimed at the agent (second-person pattern)
    source: MatchSource = "lexicon"  # context: the semantic head on this utterance and the one before
    score: float = 1.0  # the semantic head's probability (1 for a lexicon entry)
    like: tuple[str, ...] = ()  # the nearest labelled examples, for a semantic match

    @property
    def because(self) -> str:
        """Why it matched, in a phrase: the lexicon entry, or the examples it is nearest to."""
        if self.source == "lexicon":
            return f"lexicon: {self.term}"
        nearest = "; ".join(f"'{text}'" for text in self.like)
        where = "with the utterance before, " if self.source == "context" else ""
        return (
            f"semantic {self.score:.2f}, {where}like {nearest}" if nearest else f"semantic {self.score:.2f}"
        )


@dataclass(frozen=True, slots=True)
class Abuse(Event):
    category: Category = "profanity"
    severity: int = 1
    words: tuple[str, ...] = ()
    matches: tuple[Match, ...] = ()
    text: str = ""
    partial: bool = False
    type: ClassVar[str] = "abuse"


@dataclass(frozen=True, slots=True)
class LanguageDecided(Event):
    lang: Literal["en", "fr"] = "en"
    source: Literal["cli", "call_info", "config", "auto"] = "auto"
    evidence: str = ""
    type: ClassVar[str] = "language"


@dataclass(frozen=True, slots=True)
class AgentAction(Event):
    action: Literal["acknowledged", "limits_stated", "transferred", "released"] = "acknowledged"
    type: ClassVar[str] = "action"


@dataclass(frozen=True, slots=True)
class AgentSpeech(Event):
    """One of the seeds' steps recognised in the agent's own words (stating limits, ...)."""

    act: AgentAct = "none"
    score: float = 0.0  # the semantic head's probability (1 for a name heard)
    like: tuple[str, ...] = ()  # the nearest labelled examples, or the names heard
    type: ClassVar[str] = "agent_act"


@dataclass(frozen=True, slots=True)
class LevelChange(Event):
    level: Level = "calm"
    previous: Level = "calm"
    reason: str = ""
    type: ClassVar[str] = "level"


@dataclass(frozen=True, slots=True)
class Prompt(Event):
    id: str = ""
    level: Level = "calm"
    title: str = ""
    instruction: str = ""
    text: str = ""  # the suggested phrase, placeholders filled
    next_step: str = ""
    alert: bool = False  # threat alerts: shown at any level, above the primary prompt
    because: tuple[str, ...] = ()  # the events that made it fire, for QA audits
    type: ClassVar[str] = "prompt"


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """Something the operator should know (no model installed, a device lost...)."""

    message: str = ""
    code: str = ""  # a stable key, so that a panel can say it in the agent's language
    type: ClassVar[str] = "notice"


@dataclass(frozen=True, slots=True)
class CallStart(Event):
    """A call began (the daemon's sinks: its store row, the floor's live view)."""

    type: ClassVar[str] = "call_start"


@dataclass(frozen=True, slots=True)
class HelpRequest(Event):
    """The agent asked for a supervisor (the panel's Need help button)."""

    message: str = ""
    type: ClassVar[str] = "help"


@dataclass(frozen=True, slots=True)
class BreakTaken(Event):
    """The agent steps away after a hard call (the panel's Break button), for the floor's figures."""

    minutes: float = 5.0
    type: ClassVar[str] = "break"


@dataclass(frozen=True, slots=True)
class CallEnd(Event):
    duration: float = 0.0
    reason: str = ""  # why it ended: "api" (the CTI), "silence", "shutdown", "file" (a replay's end)...
    type: ClassVar[str] = "call_end"


@dataclass(frozen=True, slots=True)
class CallSummary(Event):
    level_reached: Level = "calm"
    detections: dict[str, int] = field(default_factory=dict)
    prompts: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    playbook: tuple[str, ...] = ()  # the agent's steps against the prompts (EscalationPolicy.playbook)
    type: ClassVar[str] = "summary"


def describe(event: Event) -> str:
    """A short human reading of an event, for logs and `because` lists."""
    match event:
        case Abuse():
            return f"abuse:{event.category}@{event.t:.2f}({' '.join(event.words)})"
        case Shouting():
            return f"shouting@{event.t:.2f}({event.level_db:.0f}dBFS)"
        case _:
            return f"{event.type}@{event.t:.2f}"
