"""Every event that flows through the pipeline, in one place, and the one copy of the constants
that name what events say (levels and their order, categories, actions).

Events are frozen dataclasses with a time `t` in seconds of call time and a
`speaker` role. `Event.to_dict()` is the JSONL form: the dataclass fields plus
a `type` tag; `Event.from_dict()` brings that form back typed, or raises
`EventFormatError` naming the type and field at fault. Audio frames are not
events: they never leave the pipeline.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Literal

from callguard.core.errors import CallguardError

# Each set of names is spelled once, as a Literal; its tuple (in that order) is read from it.
Role = Literal["customer", "agent"]
ROLES: tuple[Role, ...] = typing.get_args(Role)
Level = Literal["calm", "tense", "abusive", "transfer", "release"]
LEVELS: tuple[Level, ...] = typing.get_args(Level)
# A level's rank on the ladder: the one order every consumer compares levels by.
LEVEL_RANK: Mapping[str, int] = {level: rank for rank, level in enumerate(LEVELS)}
# From here up a call counts as abusive (the outcome's verdict, evaluation).
ABUSIVE_RANK = LEVEL_RANK["abusive"]
Category = Literal["profanity", "insult", "threat"]
CATEGORIES: tuple[Category, ...] = typing.get_args(Category)
# What the agent's own words do, as the seeds' steps name them ("none": anything else).
AgentAct = Literal["limits", "personalise", "transfer", "release", "apology", "summary", "empathy", "none"]
AGENT_ACTS: tuple[AgentAct, ...] = typing.get_args(AgentAct)
# What the agent tells callguard they did (the panel's buttons, the API's actions).
Action = Literal["acknowledged", "limits_stated", "transferred", "released"]
ACTIONS: tuple[Action, ...] = typing.get_args(Action)


def level_rank(level: str) -> int:
    """The level's rank on the ladder (calm 0 .. release 4); -1 for anything that is not a level
    (the empty level of a call that failed before it had one)."""
    return LEVEL_RANK.get(level, -1)


class EventFormatError(CallguardError, ValueError):
    """An event's mapping that is not one of callguard's events: names the type and field."""

    def __init__(self, type_tag: str, key: str, problem: str) -> None:
        self.type_tag, self.key, self.problem = type_tag, key, problem
        where = f"event {type_tag!r}" + (f", field {key!r}" if key else "")
        super().__init__(f"{where}: {problem}")


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
class AudioBlock:
    """What a source hands the daemon: one speaker's mono PCM16 (a numpy int16 array) at the pipeline
    rate, from `t`, the source's own audio time for that speaker (seconds since it started)."""

    role: Role
    pcm: Any  # numpy.ndarray of int16: core stays free of numpy's types
    rate: int
    t: float


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

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Event:
        """The event whose `to_dict()` gave `data` (as read back from JSONL: lists for tuples).

        Every field is checked against its annotation; an unknown `type`, an unknown or missing
        field, or a value of the wrong kind raises EventFormatError naming them."""
        if not isinstance(data, Mapping):
            raise EventFormatError("?", "", f"must be a JSON object, got {type(data).__name__}")
        tag = data.get("type")
        if not isinstance(tag, str) or tag not in _event_classes():
            known = ", ".join(sorted(_event_classes()))
            raise EventFormatError(str(tag), "type", f"unknown event type (expected one of {known})")
        cls, implied = _event_classes()[tag]
        values = {key: value for key, value in data.items() if key != "type"}
        for key, value in implied.items():  # the tag of NonSpeech and Transcript is one of their fields
            if values.setdefault(key, value) != value:
                raise EventFormatError(tag, key, f"is {values[key]!r}, but the type says {value!r}")
        event = _build(cls, values, tag)
        assert isinstance(event, Event)
        return event


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
    action: Action = "acknowledged"
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


@dataclass(frozen=True, slots=True)
class CallFailed(Event):
    """A replay that could not finish (an unreadable recording, a bug): the last line of its events."""

    message: str = ""
    type: ClassVar[str] = "error"


def describe(event: Event) -> str:
    """A short human reading of an event, for logs and `because` lists."""
    match event:
        case Abuse():
            return f"abuse:{event.category}@{event.t:.2f}({' '.join(event.words)})"
        case Shouting():
            return f"shouting@{event.t:.2f}({event.level_db:.0f}dBFS)"
        case _:
            return f"{event.type}@{event.t:.2f}"


# ---------------------------------------------------------------------------------------- from_dict


# Every event class, so that from_dict knows each by its tag.
EVENT_CLASSES: tuple[type[Event], ...] = (
    SpeechStart,
    SpeechEnd,
    NonSpeech,
    Shouting,
    Transcript,
    Abuse,
    LanguageDecided,
    AgentAction,
    AgentSpeech,
    LevelChange,
    Prompt,
    Notice,
    CallStart,
    HelpRequest,
    BreakTaken,
    CallEnd,
    CallSummary,
    CallFailed,
)


@functools.cache
def _event_classes() -> dict[str, tuple[type[Event], dict[str, Any]]]:
    """Each event class by its `type` tag, with the fields a computed tag implies."""
    registry: dict[str, tuple[type[Event], dict[str, Any]]] = {}
    for cls in EVENT_CLASSES:
        if cls is NonSpeech:
            tags = [(kind, {"kind": kind}) for kind in typing.get_args(_hints(NonSpeech)["kind"])]
        elif cls is Transcript:
            tags = [("final", {"final": True}), ("partial", {"final": False})]
        else:
            tags = [(cls.type, {})]
        for tag, implied in tags:
            assert tag not in registry, f"two event classes tagged {tag!r}"
            registry[tag] = (cls, implied)
    return registry


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, values: Mapping[str, Any], tag: str, where: str = "") -> Any:
    """An instance of the dataclass `cls` from `values`, every field converted to its annotation."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise EventFormatError(tag, where + unknown[0], f"unknown field (expected one of {', '.join(names)})")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, spec in names.items():
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], tag, where + name)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise EventFormatError(tag, where + name, "is missing")
    return cls(**kwargs)


def _describe(hint: Any) -> str:
    """What an annotation wants, in words."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = typing.get_args(hint)
        literals = [
            value for arm in arms if typing.get_origin(arm) is Literal for value in typing.get_args(arm)
        ]
        others = [_describe(arm) for arm in arms if typing.get_origin(arm) is not Literal]
        named = ["one of " + ", ".join(map(repr, literals))] if literals else []
        return " or ".join(named + others)
    if typing.get_origin(hint) is tuple:
        return "a list"
    if typing.get_origin(hint) is dict or is_dataclass(hint):
        return "an object"
    names = {
        type(None): "null",
        float: "a number",
        int: "a whole number",
        str: "a string",
        bool: "true or false",
    }
    return names.get(hint, repr(hint))


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(value: Any, hint: Any, tag: str, where: str) -> Any:
    """`value` as read from JSON, as the annotation `hint` wants it (tuples from lists, Words...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _convert(value, arm, tag, where)
            except EventFormatError as exc:
                if exc.key != where:  # the value has this arm's shape, and something inside it is wrong
                    raise
        wanted = _describe(hint)
        raise EventFormatError(tag, where, f"must be {wanted}, got {_got(value)}")
    wrong = EventFormatError(tag, where, f"must be {_describe(hint)}, got {_got(value)}")
    if origin is Literal:
        if value not in args:
            raise wrong
        return value
    if hint is type(None):
        if value is not None:
            raise wrong
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        return tuple(_convert(item, args[0], tag, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong
        key_hint, value_hint = args
        return {
            _convert(k, key_hint, tag, where): _convert(v, value_hint, tag, f"{where}.{k}")
            for k, v in value.items()
        }
    if is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise wrong
        return _build(typing.cast(type, hint), value, tag, f"{where}.")
    # bool is an int to Python, not to JSON: true is no severity, and no time
    if isinstance(value, bool) and hint is not bool:
        raise wrong
    if hint is float:
        if not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint):
            raise wrong
        return value
    raise EventFormatError(tag, where, f"has an annotation from_dict does not know: {hint!r}")
