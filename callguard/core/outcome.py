"""What a call came to, folded from its events: the one fold behind a batch's summary rows, the
evaluation's verdicts, the reports' facts and the live call view.

`fold_call(events)` folds a whole call; `CallFold` folds one event at a time, for a call still
going (the live view reads `CallFold.outcome` after each event). Every abuse event counts as a
detection, a partial's included, as the events file holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from callguard.core.events import (
    ABUSIVE_RANK,
    CATEGORIES,
    ROLES,
    Abuse,
    AgentAction,
    CallEnd,
    CallFailed,
    CallSummary,
    Event,
    LanguageDecided,
    Level,
    LevelChange,
    Prompt,
    Role,
    Shouting,
    level_rank,
)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A call's outcome, as far as its events go."""

    level: Level = "calm"  # where the ladder stands after the last event
    level_reached: Level = "calm"  # the highest it went
    detections: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    shouting: Mapping[Role, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    prompts: tuple[Prompt, ...] = ()  # every prompt shown, threat alerts among them, in order
    actions: tuple[str, ...] = ()  # what the agent said they did (panel buttons, the CTI), in order
    language: str = ""  # the language the call was decided to be in ('' before it was)
    duration: float | None = None  # None: the call has not ended (or its events stop short)
    end_reason: str = ""
    summary: CallSummary | None = None  # the session's own summary, at the call's end
    error: str = ""  # why a replay failed ('' if it did not)

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def ended(self) -> bool:
        return self.duration is not None

    @property
    def playbook(self) -> tuple[str, ...]:
        """The agent's steps against the prompts, as the session summed them up at the end."""
        return self.summary.playbook if self.summary is not None else ()

    @property
    def categories(self) -> frozenset[str]:
        """The categories detected at least once."""
        return frozenset(category for category, count in self.detections.items() if count)

    @property
    def alerts(self) -> tuple[Prompt, ...]:
        return tuple(p for p in self.prompts if p.alert)

    @property
    def prompt(self) -> Prompt | None:
        """The ladder's prompt shown last (threat alerts apart)."""
        return next((p for p in reversed(self.prompts) if not p.alert), None)

    @property
    def alert(self) -> Prompt | None:
        """The threat alert shown last."""
        return next((p for p in reversed(self.prompts) if p.alert), None)

    @property
    def first_prompt_t(self) -> float | None:
        return self.prompts[0].t if self.prompts else None

    @property
    def abusive(self) -> bool:
        """The call went abusive or worse, or raised a threat alert."""
        return level_rank(self.level_reached) >= ABUSIVE_RANK or bool(self.alerts)

    @property
    def first_abusive_prompt_t(self) -> float | None:
        """When the first prompt at the abusive level or worse, or the first threat alert, came."""
        times = [p.t for p in self.prompts if p.alert or level_rank(p.level) >= ABUSIVE_RANK]
        return min(times) if times else None


class CallFold:
    """A call's outcome, one event at a time."""

    def __init__(self) -> None:
        self._level: Level = "calm"
        self._reached: Level = "calm"
        self._detections: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self._shouting: dict[Role, int] = dict.fromkeys(ROLES, 0)
        self._prompts: list[Prompt] = []
        self._actions: list[str] = []
        self._language = ""
        self._duration: float | None = None
        self._end_reason = ""
        self._summary: CallSummary | None = None
        self._error = ""

    def add(self, event: Event) -> None:
        match event:
            case LevelChange():
                self._level = event.level
                self._raise(event.level)
            case Abuse():
                self._detections[event.category] = self._detections.get(event.category, 0) + 1
            case Shouting() if event.speaker != "system":
                self._shouting[event.speaker] += 1
            case Prompt():
                self._prompts.append(event)
            case AgentAction():
                self._actions.append(event.action)
            case LanguageDecided():
                self._language = event.lang
            case CallSummary():
                self._summary = event
                self._raise(event.level_reached)
            case CallEnd():
                self._duration, self._end_reason = event.duration, event.reason
            case CallFailed():
                self._error = event.message or "failed"

    def _raise(self, level: Level) -> None:
        if level_rank(level) > level_rank(self._reached):
            self._reached = level

    @property
    def outcome(self) -> CallOutcome:
        return CallOutcome(
            level=self._level,
            level_reached=self._reached,
            detections=dict(self._detections),
            shouting=dict(self._shouting),
            prompts=tuple(self._prompts),
            actions=tuple(self._actions),
            language=self._language,
            duration=self._duration,
            end_reason=self._end_reason,
            summary=self._summary,
            error=self._error,
        )


def fold_call(events: Iterable[Event]) -> CallOutcome:
    """What the call came to, from its events in order."""
    fold = CallFold()
    for event in events:
        fold.add(event)
    return fold.outcome
