"""The escalation ladder: one state machine per call, and the prompt catalogue it speaks from.

Levels rise on the customer's abuse and shouting (counted in a sliding window),
step down after a calm period, and follow the seeds' order: personalise, state
your limits, then transfer (or release when no one can take the call). Agent
actions move the ladder; without them (replay), limits are assumed stated a while
after the limits prompt and a transfer that did not happen becomes a release.
Every prompt carries `because`: the events that made it fire, for QA audits.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callguard.core.config import Config, PolicyConfig, read_toml
from callguard.core.errors import ConfigError
from callguard.core.events import (
    AGENT_ACTS,
    LEVEL_RANK,
    Abuse,
    AgentAction,
    AgentSpeech,
    CallSummary,
    Event,
    LanguageDecided,
    Level,
    LevelChange,
    Prompt,
    Shouting,
    SpeechEnd,
    Transcript,
    describe,
)
from callguard.core.facts import PLACEHOLDERS, CallFacts

# Where a catalogue prompt belongs: a ladder level's playbook, or one of the special slots.
CATALOGUE_LEVELS = ("tense", "abusive", "transfer", "release", "threat", "voice", "after")
NEXT_STEP_KEYS = (
    "calm",
    "tense",
    "abusive_limits",
    "abusive_transfer",
    "abusive_release",
    "transfer",
    "release",
    "after",
)
PROMPT_KEYS = ("id", "level", "title", "instruction", "phrase")
OPTIONAL_PROMPT_KEYS = ("act",)  # the agent's speech act that carries the prompt out
LIMITS_PROMPT = "state_limits"  # the ladder waits for this one before a transfer or release
MAX_TITLE_CHARS = 48  # read at a glance
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_RANK = LEVEL_RANK


# ---------------------------------------------------------------- prompt catalogue


@dataclass(frozen=True)
class CataloguePrompt:
    id: str
    level: str  # one of CATALOGUE_LEVELS
    title: str
    instruction: str
    phrase: str  # what the agent may say, with {placeholders} and [optional parts]
    act: str = ""  # the agent's speech act that carries it out (for the playbook), if any


@dataclass(frozen=True)
class PromptCatalogue:
    """The prompts of one language, in file order (the order of each level's playbook)."""

    lang: str
    source: Path
    prompts: dict[str, CataloguePrompt]
    next_steps: dict[str, str]
    fallbacks: dict[str, str]  # words used for a fact that is unknown, outside [optional] parts

    def playbook(self, level: str) -> tuple[str, ...]:
        return tuple(p.id for p in self.prompts.values() if p.level == level)

    def first(self, level: str) -> str:
        return self.playbook(level)[0]

    def fill(self, template: str, facts: CallFacts) -> str:
        """Fill placeholders; drop an [optional part] whose facts are unknown; tidy spacing."""
        known = facts.placeholder_values()

        def optional(match: re.Match[str]) -> str:
            names = _PLACEHOLDER.findall(match.group(1))
            return match.group(1) if all(known[name] for name in names) else ""

        text = _OPTIONAL.sub(optional, template)
        text = _PLACEHOLDER.sub(lambda m: known[m.group(1)] or self.fallbacks[m.group(1)], text)
        text = re.sub(r"\s+", " ", text).strip()
        # A dropped part can leave "name , so": French keeps its space before ; : ! ?
        text = re.sub(r"\s+([,.;:!?])" if self.lang == "en" else r"\s+([,.])", r"\1", text)
        return text[:1].upper() + text[1:]


def load_catalogue(path: Path, lang: str) -> PromptCatalogue:
    """Read and validate one prompt catalogue; errors name the file and the key."""
    path = Path(path)
    document = read_toml(path, "prompt catalogue")
    for key in document:
        if key not in ("lang", "placeholders", "next_step", "prompt"):
            raise ConfigError(
                path, key, "unknown key (expected lang, [placeholders], [next_step], [[prompt]])"
            )
    if document.get("lang") != lang:
        raise ConfigError(path, "lang", f"must be {lang!r} for this catalogue, got {document.get('lang')!r}")
    fallbacks = _string_table(document, "placeholders", PLACEHOLDERS, path)
    next_steps = _string_table(document, "next_step", NEXT_STEP_KEYS, path)
    for key, text in next_steps.items():
        _check_template(text, f"next_step.{key}", path)
    entries = document.get("prompt")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(path, "prompt", "must be a list of [[prompt]] tables, one per prompt")
    prompts: dict[str, CataloguePrompt] = {}
    for index, entry in enumerate(entries):
        prompt = _parse_prompt(entry, f"prompt[{index}]", path)
        if prompt.id in prompts:
            raise ConfigError(path, f"prompt[{index}].id", f"duplicate id {prompt.id!r}")
        prompts[prompt.id] = prompt
    for level in CATALOGUE_LEVELS:
        if not any(p.level == level for p in prompts.values()):
            raise ConfigError(path, "prompt", f"needs at least one prompt with level = {level!r}")
    if LIMITS_PROMPT not in prompts or prompts[LIMITS_PROMPT].level != "abusive":
        raise ConfigError(path, "prompt", f"needs the prompt id = {LIMITS_PROMPT!r} with level = 'abusive'")
    return PromptCatalogue(lang, path, prompts, next_steps, fallbacks)


def _string_table(document: dict[str, Any], name: str, keys: tuple[str, ...], path: Path) -> dict[str, str]:
    table = document.get(name)
    if not isinstance(table, dict):
        raise ConfigError(path, name, f"missing table [{name}] with keys {', '.join(keys)}")
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(path, f"{name}.{key}", f"unknown key (expected one of {', '.join(keys)})")
        if not isinstance(value, str):
            raise ConfigError(path, f"{name}.{key}", f"must be a string, got {type(value).__name__}")
    for key in keys:
        if key not in table:
            raise ConfigError(path, f"{name}.{key}", "missing")
    return dict(table)


def _parse_prompt(entry: Any, where: str, path: Path) -> CataloguePrompt:
    if not isinstance(entry, dict):
        raise ConfigError(path, where, "must be a table")
    for key in entry:
        if key not in PROMPT_KEYS + OPTIONAL_PROMPT_KEYS:
            expected = ", ".join(PROMPT_KEYS + OPTIONAL_PROMPT_KEYS)
            raise ConfigError(path, f"{where}.{key}", f"unknown key (expected one of {expected})")
    for key in PROMPT_KEYS:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(path, f"{where}.{key}", "missing or empty (a non-empty string is required)")
    if not _ID.match(entry["id"]):
        raise ConfigError(
            path, f"{where}.id", f"must be lower-case letters, digits and _, got {entry['id']!r}"
        )
    if entry["level"] not in CATALOGUE_LEVELS:
        raise ConfigError(
            path, f"{where}.level", f"must be one of {', '.join(CATALOGUE_LEVELS)}, got {entry['level']!r}"
        )
    if len(entry["title"]) > MAX_TITLE_CHARS:
        raise ConfigError(
            path, f"{where}.title", f"is {len(entry['title'])} characters; at most {MAX_TITLE_CHARS}"
        )
    for key in ("title", "instruction", "phrase"):
        _check_template(entry[key], f"{where}.{key}", path)
    act = entry.get("act", "")
    if act and act not in AGENT_ACTS[:-1]:
        raise ConfigError(path, f"{where}.act", f"must be one of {', '.join(AGENT_ACTS[:-1])}, got {act!r}")
    return CataloguePrompt(**{key: entry[key].strip() for key in PROMPT_KEYS}, act=act)


def _check_template(text: str, key: str, path: Path) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in PLACEHOLDERS:
            raise ConfigError(path, key, f"unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})")
    bare = _PLACEHOLDER.sub("", text)
    if "{" in bare or "}" in bare:
        raise ConfigError(path, key, "has a { or } that is not a placeholder like {customer_name}")
    if "[" in _OPTIONAL.sub("", bare) or "]" in _OPTIONAL.sub("", bare):
        raise ConfigError(path, key, "has an unbalanced or nested [optional part]")


def load_catalogues(config: Config) -> dict[str, PromptCatalogue]:
    """Both languages' catalogues; they must hold the same prompt ids."""
    files = {"en": config.path(config.policy.prompts_en), "fr": config.path(config.policy.prompts_fr)}
    catalogues = {lang: load_catalogue(path, lang) for lang, path in files.items()}
    reference = catalogues["en"]
    for catalogue in catalogues.values():
        missing = [pid for pid in reference.prompts if pid not in catalogue.prompts]
        extra = [pid for pid in catalogue.prompts if pid not in reference.prompts]
        if missing or extra:
            raise ConfigError(
                catalogue.source,
                "prompt",
                f"must have the same ids as {reference.source.name} (missing: {missing or 'none'}, "
                f"not in {reference.source.name}: {extra or 'none'})",
            )
    return catalogues


# ---------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class _Trigger:
    """A customer event that counts towards a threshold."""

    t: float
    kind: str  # shout | profanity | profanity_same_outburst | insult | threat
    text: str  # describe(event)


class EscalationPolicy:
    """The escalation state machine of one call. No I/O: events in, events out.

    An event stage (`on_event`, `tick`); the session also calls `end` when the call closes.
    """

    def __init__(
        self, config: PolicyConfig, catalogues: dict[str, PromptCatalogue], facts: CallFacts, lang: str
    ) -> None:
        if not catalogues:
            raise ValueError("EscalationPolicy needs at least one prompt catalogue")
        self._config = config
        self._catalogues = catalogues
        self._facts = facts
        self._lang = next(
            (c for c in (lang, facts.language, "en") if c in catalogues), next(iter(catalogues))
        )
        self._now = 0.0
        self._level: Level = "calm"
        self._max_level: Level = "calm"
        self._level_since = 0.0
        self._triggers: deque[_Trigger] = deque()
        self._last_trigger_t = 0.0
        self._last_threat_t: float | None = None
        self._last_profanity_t: float | None = None
        self._threat_incidents: deque[float] = deque()
        self._limits_due_t: float | None = None  # when the limits prompt is scheduled
        self._limits_prompt_t: float | None = None  # when it was shown
        self._limits_t: float | None = None  # when the limits were stated (or assumed)
        self._limits_note = ""  # why the limits count as stated when they were assumed
        self._limits_said = ""  # ... when the agent's own words stated them
        self._transfer_prompt_t: float | None = None
        self._tip_due: tuple[float, str] | None = None  # (when, why): the next tip after a turn
        self._closed = False  # transferred or released by the agent: the ladder stops
        self._ended = False
        self._last_shown: dict[str, float] = {}
        self._primary: str | None = None
        self._primary_t: float | None = None
        self._prompted: list[str] = []
        self._actions: list[str] = []
        self._detections: Counter[str] = Counter()
        self._prompted_acts: list[tuple[str, str, float]] = []  # (prompt id, its act, when shown)
        self._agent_acts: list[AgentSpeech] = []

    @property
    def level(self) -> Level:
        return self._level

    @property
    def lang(self) -> str:
        return self._lang

    # ---- inputs

    def on_event(self, event: Event) -> list[Event]:
        return self._noted(self._handle(event))

    def tick(self, t: float) -> list[Event]:
        return self._noted(self._advance(t, tips=True))

    def _noted(self, out: list[Event]) -> list[Event]:
        self._prompted += [event.id for event in out if isinstance(event, Prompt)]
        return out

    def _handle(self, event: Event) -> list[Event]:
        if self._ended:
            return []  # the call is over: late events change nothing
        out = self._advance(event.t)
        match event:
            case Abuse(speaker="customer"):
                out += self._on_abuse(event)
            case Shouting(speaker="customer"):
                out += self._on_customer_shout(event)
            case Shouting(speaker="agent"):
                self._detections["agent_loud"] += 1
                out += self._agent_voice(event.t, (describe(event),))
            case Transcript(final=True, speaker="agent"):
                out += self._on_agent_words(event)
            case Transcript(final=True, speaker="customer") | SpeechEnd(speaker="customer"):
                out += self._on_customer_turn_end(event)
            case LanguageDecided() if event.lang in self._catalogues:
                self._lang = event.lang
            case AgentAction():
                out += self._on_action(event)
            case AgentSpeech():
                out += self._on_agent_act(event)
        return out

    def end(self, t: float) -> list[Event]:
        """The closing events: a break prompt when the call reached tense or worse, and the summary."""
        if self._ended:
            return []
        self._ended = True
        self._now = max(self._now, t)
        out: list[Event] = []
        if _RANK[self._max_level] >= _RANK["tense"]:
            because = (f"level reached: {self._max_level}",)
            out.append(self._prompt(self._catalogue.first("after"), because, next_key="after"))
            self._prompted.append(self._catalogue.first("after"))
        actions = [*self._actions]
        if self._limits_note:
            actions.append("limits_stated (assumed, no action)")
        out.append(
            CallSummary(
                t=self._now,
                speaker="system",
                level_reached=self._max_level,
                detections=dict(self._detections),
                prompts=tuple(self._prompted),
                actions=tuple(actions),
                playbook=self.playbook(),
            )
        )
        return out

    def playbook(self) -> tuple[str, ...]:
        """QA's reading of the agent's steps, in time order: each prompt with an act, whether and how
        soon the agent carried it out in their own words; and the steps they took unprompted."""
        lines: list[tuple[float, str]] = []
        used: set[int] = set()
        for n, (pid, act, shown) in enumerate(self._prompted_acts):
            until = next((t for p, _, t in self._prompted_acts[n + 1 :] if p == pid), float("inf"))
            done = next(
                (i for i, a in enumerate(self._agent_acts) if a.act == act and shown <= a.t < until), None
            )
            if done is None:
                assumed = " (limits assumed stated)" if act == "limits" and self._limits_note else ""
                lines.append((shown, f"{pid}@{shown:.1f}: {act} not heard{assumed}"))
            else:
                used.add(done)
                said = self._agent_acts[done]
                lines.append((shown, f"{pid}@{shown:.1f}: {act} {said.t - shown:.1f} s after the prompt"))
        for i, said in enumerate(self._agent_acts):
            if i not in used and not any(a == said.act and t <= said.t for _, a, t in self._prompted_acts):
                lines.append((said.t, f"{said.act}@{said.t:.1f}: unprompted"))
        return tuple(text for _, text in sorted(lines, key=lambda line: line[0]))

    # ---- time

    def _advance(self, t: float, tips: bool = False) -> list[Event]:
        """Time-driven steps: the scheduled limits prompt, assumed limits, the next tip, step-down.

        Tips wait for `tick`: the runner ticks after a block's events are all processed, so
        abuse detected in an utterance's final words moves the ladder before a tip can show.
        """
        self._now = max(self._now, t)
        if self._closed or self._ended:
            return []
        cfg, now = self._config, self._now
        out: list[Event] = []
        if self._level == "abusive" and self._limits_due_t is not None and now >= self._limits_due_t:
            self._limits_due_t = None
            if self._limits_t is None:
                since = self._primary_t if self._primary_t is not None else now
                out.append(
                    self._show_limits(
                        (f"limits_delay_s={cfg.limits_delay_s:g} after {self._primary}@{since:.2f}",)
                    )
                )
        if tips and self._tip_due is not None and now >= self._tip_due[0]:
            because, self._tip_due = self._tip_due[1], None
            out += self._next_tip(because)
        if (
            self._limits_prompt_t is not None
            and self._limits_t is None
            and now >= self._limits_prompt_t + cfg.assume_limits_after_s
        ):
            self._limits_t = self._limits_prompt_t + cfg.assume_limits_after_s
            self._limits_note = (
                f"no limits_stated action {cfg.assume_limits_after_s:g}s after "
                f"{LIMITS_PROMPT}@{self._limits_prompt_t:.2f}: limits assumed stated@{self._limits_t:.2f}"
            )
        calm_since = max(self._last_trigger_t, self._level_since)
        if self._level != "calm" and now - calm_since >= cfg.calm_step_down_s:
            out += self._step_down(calm_since)
        return out

    def _step_down(self, calm_since: float) -> list[Event]:
        # Transfer and release fall back to abusive: the limits stay stated.
        new: Level = {"tense": "calm", "abusive": "tense"}.get(self._level, "abusive")  # type: ignore[assignment]
        because = (f"no abuse or shouting since {calm_since:.2f} ({self._config.calm_step_down_s:g}s)",)
        self._triggers.clear()  # the calm period wipes the slate
        out: list[Event] = [self._change_level(new, because[0])]
        if new == "calm":
            self._limits_t = self._limits_prompt_t = self._limits_due_t = None
            self._limits_note = self._limits_said = ""
            self._transfer_prompt_t = None
            self._primary = None
            return out
        pid = self._next_in_playbook(new)
        if pid is not None:
            out.append(self._prompt(pid, because, primary=True))
        return out

    # ---- customer

    def _on_customer_shout(self, event: Shouting) -> list[Event]:
        self._detections["shouting"] += 1
        self._record(_Trigger(event.t, "shout", describe(event)))
        return [] if self._closed else self._escalate(event, "shout")

    def _on_abuse(self, event: Abuse) -> list[Event]:
        self._detections[event.category] += 1
        if event.category == "threat":
            kind = "threat"
        elif event.category == "insult" or any(m.directed for m in event.matches):
            kind = "insult"  # directed profanity ("fuck you") is aimed at the agent
        else:
            # Swearing counts per outburst: "this damn printer is a piece of shit" is one.
            previous = self._last_profanity_t
            self._last_profanity_t = event.t
            same = previous is not None and event.t - previous < self._config.outburst_s
            kind = "profanity_same_outburst" if same else "profanity"
        self._record(_Trigger(event.t, kind, describe(event)))
        if kind == "threat":
            return self._on_threat(event)
        return [] if self._closed else self._escalate(event, kind)

    def _on_threat(self, event: Abuse) -> list[Event]:
        cfg = self._config
        same_incident = (
            self._last_threat_t is not None and event.t - self._last_threat_t < cfg.threat_alert_gap_s
        )
        self._last_threat_t = event.t
        if same_incident:
            return []  # one alert per threat incident, not per matched word
        self._threat_incidents.append(event.t)
        while self._threat_incidents and self._threat_incidents[0] < self._now - cfg.window_s:
            self._threat_incidents.popleft()
        because = (describe(event),)
        out: list[Event] = []
        if self._closed:
            return [self._prompt(self._catalogue.first("threat"), because, alert=True)]
        if len(self._threat_incidents) >= cfg.threat_release_count and self._level != "release":
            # A threat is the one case where the ladder may skip limits and transfer.
            reason = f"{len(self._threat_incidents)} separate threats in {cfg.window_s:g}s"
            out.append(self._change_level("release", reason))
            out.append(self._prompt(self._catalogue.first("threat"), because, alert=True))
            out.append(self._prompt(self._catalogue.first("release"), (*because, reason), primary=True))
            return out
        escalation = self._escalate(event, "threat")
        levels = [e for e in escalation if isinstance(e, LevelChange)]
        out += levels
        out.append(self._prompt(self._catalogue.first("threat"), because, alert=True))
        out += [e for e in escalation if not isinstance(e, LevelChange)]
        return out

    def _escalate(self, event: Event, kind: str) -> list[Event]:
        cfg, level = self._config, self._level
        counts = Counter(trigger.kind for trigger in self._triggers)
        window = f"in {cfg.window_s:g}s"
        abuse = kind in ("insult", "profanity", "profanity_same_outburst", "threat")
        if level == "abusive" and abuse and self._limits_t is not None:
            if event.t >= self._limits_t + cfg.transfer_after_limits_s:
                return self._beyond_limits(event)
            return []
        if level == "transfer" and abuse and self._transfer_prompt_t is not None:
            if event.t >= self._transfer_prompt_t + cfg.release_after_transfer_s:
                note = (
                    f"no transferred action {event.t - self._transfer_prompt_t:.0f}s after "
                    f"transfer prompt@{self._transfer_prompt_t:.2f}: transfer assumed not done"
                )
                return self._enter(
                    "release", "abuse continued after the transfer prompt", (describe(event), note)
                )
            return []
        if _RANK[level] < _RANK["abusive"]:
            reason = ""
            if kind == "threat":
                reason = "threat"
            elif counts["insult"] >= cfg.abusive_insults:
                reason = f"{counts['insult']} insult(s) {window} (abusive_insults={cfg.abusive_insults})"
            elif counts["profanity"] >= cfg.abusive_profanities:
                limit = cfg.abusive_profanities
                reason = f"{counts['profanity']} swearing outbursts {window} (abusive_profanities={limit})"
            if reason:
                return self._enter("abusive", reason, self._window_because())
        if level == "calm":
            reason = ""
            if counts["profanity"] >= cfg.tense_profanities:
                reason = (
                    f"{counts['profanity']} profanity {window} (tense_profanities={cfg.tense_profanities})"
                )
            elif counts["shout"] >= cfg.tense_shouts:
                reason = f"{counts['shout']} shouts {window} (tense_shouts={cfg.tense_shouts})"
            if reason:
                return self._enter("tense", reason, self._window_because())
        return []

    def _beyond_limits(self, event: Event) -> list[Event]:
        assert self._limits_t is not None
        stated = self._limits_note or self._limits_said or f"limits stated@{self._limits_t:.2f}"
        because = (describe(event), stated)
        if self._facts.can_transfer:
            return self._enter("transfer", "abuse continued after the limits were stated", because)
        why = "call already transferred to this agent" if self._facts.transferred_in else "no transfer target"
        return self._enter("release", f"abuse continued after the limits were stated; {why}", (*because, why))

    def _on_customer_turn_end(self, event: Event) -> list[Event]:
        """The customer stopped talking: the agent's turn, a good moment for the next tip.

        The tip waits `turn_tip_delay_s`, so that the abuse found in the utterance's final
        words (detected after its end) moves the ladder first.
        """
        if not self._closed and self._level != "calm" and self._tip_due is None:
            self._tip_due = (event.t + self._config.turn_tip_delay_s, describe(event))
        return []

    def _next_tip(self, because: str) -> list[Event]:
        if self._level == "calm" or not self._gap_passed(self._now):
            return []
        if self._level == "abusive" and self._limits_prompt_t is not None and self._limits_t is None:
            return []  # the limits prompt stays up until the limits are stated
        pid = self._next_in_playbook(self._level)
        if pid is None:
            return []
        if pid == LIMITS_PROMPT:
            return [self._show_limits((because,))]
        return [self._prompt(pid, (because, f"level {self._level}"), primary=True)]

    # ---- agent

    def _on_agent_words(self, event: Transcript) -> list[Event]:
        words = event.words
        if len(words) < self._config.agent_wpm_min_words:
            return []
        span = words[-1].end - words[0].start
        if span <= 0:
            return []
        wpm = len(words) * 60.0 / span
        if wpm <= self._config.agent_max_wpm:
            return []
        self._detections["agent_fast"] += 1
        return self._agent_voice(event.t, (f"{describe(event)}({wpm:.0f} words/min)",))

    def _agent_voice(self, t: float, because: tuple[str, ...]) -> list[Event]:
        if self._closed or _RANK[self._level] < _RANK["tense"]:
            return []
        pid = self._catalogue.first("voice")
        if not self._cooled(pid, t):
            return []
        return [self._prompt(pid, because)]

    def _on_agent_act(self, event: AgentSpeech) -> list[Event]:
        """The agent carried out a step in their own words: the ladder moves on it, not on an assumption."""
        self._agent_acts.append(event)
        if self._closed or self._level == "calm":
            return []  # a calm call's "i'll transfer you to billing" is not the ladder's transfer
        said = f"the agent's words@{event.t:.2f} ({event.act}, {event.score:.2f})"
        if event.act == "limits" and self._limits_t is None:
            self._limits_t = event.t
            self._limits_said = f"limits stated in {said}"
            self._limits_due_t = None  # said already: no need to prompt it
            return []
        if event.act in ("transfer", "release") and _RANK[self._level] >= _RANK["abusive"]:
            self._closed = True
            target: Level = "transfer" if event.act == "transfer" else "release"
            if self._level != target:
                return [self._change_level(target, f"{event.act} announced in {said}")]
        return []

    def _on_action(self, event: AgentAction) -> list[Event]:
        self._actions.append(event.action)
        if self._closed:
            return []
        action_text = f"action:{event.action}@{event.t:.2f}"
        if event.action == "limits_stated" or (
            event.action == "acknowledged" and self._primary == LIMITS_PROMPT
        ):
            self._limits_t = event.t
            self._limits_note = ""
            self._limits_due_t = None  # said already: no need to prompt it
            return []
        if event.action in ("transferred", "released"):
            self._closed = True
            target: Level = "transfer" if event.action == "transferred" else "release"
            if self._level != target:
                return [self._change_level(target, action_text)]
        return []

    # ---- prompts and levels

    @property
    def _catalogue(self) -> PromptCatalogue:
        return self._catalogues[self._lang]

    def _enter(self, level: Level, reason: str, because: tuple[str, ...]) -> list[Event]:
        """Rise to a level and show its first prompt at once: a ladder step is never delayed."""
        out: list[Event] = [self._change_level(level, reason)]
        pid = self._catalogue.first(level)
        if level == "abusive" and self._limits_t is None:
            self._limits_due_t = self._now + self._config.limits_delay_s
        if level == "transfer":
            self._transfer_prompt_t = self._now
        out.append(self._prompt(pid, (*because, reason), primary=True))
        return out

    def _change_level(self, level: Level, reason: str) -> LevelChange:
        previous, self._level = self._level, level
        self._level_since = self._now
        self._tip_due = None  # the new level's own prompt comes instead
        if _RANK[level] > _RANK[self._max_level]:
            self._max_level = level
        return LevelChange(t=self._now, speaker="system", level=level, previous=previous, reason=reason)

    def _show_limits(self, because: tuple[str, ...]) -> Prompt:
        if self._limits_prompt_t is None:
            self._limits_prompt_t = self._now
        return self._prompt(LIMITS_PROMPT, because, primary=True)

    def _next_in_playbook(self, level: Level) -> str | None:
        """The first tip of the level not shown yet; else the longest-ago one out of its cooldown."""
        playbook = self._catalogue.playbook(level)
        if level == "abusive" and self._limits_t is not None:
            playbook = tuple(pid for pid in playbook if pid != LIMITS_PROMPT)
        fresh = [pid for pid in playbook if pid not in self._last_shown]
        if fresh:
            return fresh[0]
        cooled = [pid for pid in playbook if self._cooled(pid, self._now)]
        return min(cooled, key=lambda pid: self._last_shown[pid]) if cooled else None

    def _cooled(self, pid: str, t: float) -> bool:
        last = self._last_shown.get(pid)
        return last is None or t - last >= self._config.prompt_cooldown_s

    def _gap_passed(self, t: float) -> bool:
        return self._primary_t is None or t - self._primary_t >= self._config.min_prompt_gap_s

    def _next_step_key(self, pid: str) -> str:
        if self._level == "abusive":
            if self._limits_t is None and pid != LIMITS_PROMPT:
                return "abusive_limits"
            return "abusive_transfer" if self._facts.can_transfer else "abusive_release"
        return self._level

    def _prompt(
        self,
        pid: str,
        because: tuple[str, ...],
        *,
        primary: bool = False,
        alert: bool = False,
        next_key: str | None = None,
    ) -> Prompt:
        catalogue, facts = self._catalogue, self._facts
        entry = catalogue.prompts[pid]
        self._last_shown[pid] = self._now
        if primary:
            self._primary, self._primary_t = pid, self._now
        if entry.act:
            self._prompted_acts.append((pid, entry.act, self._now))
        return Prompt(
            t=self._now,
            speaker="agent",
            id=pid,
            level=self._level,
            title=catalogue.fill(entry.title, facts),
            instruction=catalogue.fill(entry.instruction, facts),
            text=catalogue.fill(entry.phrase, facts),
            next_step=catalogue.fill(catalogue.next_steps[next_key or self._next_step_key(pid)], facts),
            alert=alert,
            because=because,
        )

    def _record(self, trigger: _Trigger) -> None:
        self._triggers.append(trigger)
        self._last_trigger_t = max(self._last_trigger_t, trigger.t)
        while self._triggers and self._triggers[0].t < self._now - self._config.window_s:
            self._triggers.popleft()

    def _window_because(self) -> tuple[str, ...]:
        return tuple(trigger.text for trigger in list(self._triggers)[-6:])
