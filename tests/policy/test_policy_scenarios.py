"""The escalation ladder, scenario by scenario, from the table in tests/data/scenarios.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from callguard.core.config import Config
from callguard.core.events import (
    Abuse,
    AgentAction,
    Event,
    LanguageDecided,
    LevelChange,
    Match,
    Prompt,
    Shouting,
    SpeechEnd,
    Transcript,
    Word,
)
from callguard.core.facts import CallFacts, load_call_info
from callguard.policy.ladder import (
    EscalationPolicy,
    PromptCatalogue,
    load_catalogues,
)
from callguard.testing import run_events, ticks

TABLE = Path(__file__).parents[1] / "data" / "scenarios.md"
TICK_S = 0.1
TOLERANCE_S = 0.15


@dataclass(frozen=True)
class Scenario:
    name: str
    lang: str
    facts: CallFacts
    overrides: dict[str, int | float]
    events: tuple[tuple[float, str], ...]
    expected: tuple[tuple[float, str], ...]


def _timed(cell: str) -> tuple[tuple[float, str], ...]:
    if cell.strip() == "-":
        return ()
    items = []
    for token in cell.split():
        t, _, what = token.partition(":")
        items.append((float(t), what))
    return tuple(items)


def _facts(cell: str) -> CallFacts:
    if cell.strip() == "-":
        return CallFacts()
    values: dict[str, object] = {}
    for pair in cell.split(","):
        key, _, value = pair.strip().partition("=")
        values[key] = {"true": True, "false": False}.get(value, value)
    return CallFacts.from_dict(values, str(TABLE))


def _overrides(cell: str) -> dict[str, int | float]:
    if cell.strip() == "-":
        return {}
    out: dict[str, int | float] = {}
    for pair in cell.split(","):
        key, _, value = pair.strip().partition("=")
        out[key] = int(value) if value.isdigit() else float(value)
    return out


def load_scenarios() -> list[Scenario]:
    rows = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    scenarios = []
    for row in rows[1:]:  # the first is the header
        name, lang, facts, config, events, expected = (cell.strip() for cell in row.strip("|").split("|"))
        scenarios.append(
            Scenario(name, lang, _facts(facts), _overrides(config), _timed(events), _timed(expected))
        )
    return scenarios


SCENARIOS = load_scenarios()


def _words(t: float, count: int, seconds: float) -> tuple[Word, ...]:
    step = seconds / count
    return tuple(Word(f"word{i}", t + i * step, t + (i + 1) * step - 0.02) for i in range(count))


def make_event(t: float, what: str) -> Event | None:
    """The pipeline event a table cell stands for; None for `hangup`."""
    if what == "shout":
        return Shouting(t=t, speaker="customer", level_db=-8.0, baseline_db=-26.0, duration=1.2)
    if what == "agent_shout":
        return Shouting(t=t, speaker="agent", level_db=-9.0, baseline_db=-28.0, duration=1.0)
    if what in ("profanity", "insult", "threat"):
        directed = what != "profanity"
        match = Match(category=what, severity=2, words=(what,), term=what, directed=directed)
        return Abuse(t=t, speaker="customer", category=what, severity=2, words=(what,), matches=(match,))
    if what == "turn":
        return SpeechEnd(t=t, speaker="customer", duration=2.0)
    if what in ("agent_fast", "agent_calm"):
        words = _words(t, 12, 2.4 if what == "agent_fast" else 4.8)
        return Transcript(t=t, speaker="agent", text=" ".join(w.word for w in words), words=words, final=True)
    if what.startswith("lang="):
        return LanguageDecided(t=t, speaker="system", lang=what.removeprefix("lang="), source="auto")
    if what.startswith("act="):
        return AgentAction(t=t, speaker="agent", action=what.removeprefix("act="))  # type: ignore[arg-type]
    if what == "hangup":
        return None
    raise ValueError(f"unknown scenario event {what!r}")


@pytest.fixture(scope="module")
def catalogues() -> dict[str, PromptCatalogue]:
    return load_catalogues(Config())


def run(scenario: Scenario, catalogues: dict[str, PromptCatalogue]) -> list[tuple[Event, str]]:
    """Feed the events in time order, ticking every 0.1 s like the runner; note each output's language
    (so not `run_events`, which returns the events alone), and a hangup ends the call."""
    config = Config().with_overrides(policy=scenario.overrides) if scenario.overrides else Config()
    policy = EscalationPolicy(config.policy, catalogues, scenario.facts, scenario.lang)
    pending = sorted(scenario.events, key=lambda item: item[0])
    out: list[tuple[Event, str]] = []
    end_t = pending[-1][0] if pending else 0.0
    step = 0
    while True:
        now = round(step * TICK_S, 6)
        while pending and pending[0][0] <= now + 1e-9:
            t, what = pending.pop(0)
            event = make_event(t, what)
            produced = policy.end(t) if event is None else policy.on_event(event)
            out += [(e, policy.lang) for e in produced]
        if now >= end_t:
            return out
        out += [(e, policy.lang) for e in policy.tick(now)]
        step += 1


def observed(out: list[tuple[Event, str]]) -> list[tuple[float, str]]:
    items = []
    for event, _ in out:
        if isinstance(event, LevelChange):
            items.append((event.t, f"={event.level}"))
        elif isinstance(event, Prompt):
            items.append((event.t, event.id))
    return items


def test_there_are_enough_scenarios_in_both_languages() -> None:
    assert len(SCENARIOS) >= 25
    assert {s.lang for s in SCENARIOS} == {"en", "fr"}
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    ladder = {what for s in SCENARIOS for _, what in s.expected}
    for needed in ("=tense", "=abusive", "=transfer", "=release", "=calm", "report_threat", "agent_voice"):
        assert needed in ladder


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario, catalogues: dict[str, PromptCatalogue]) -> None:
    out = run(scenario, catalogues)
    got = observed(out)
    expected_ids = [what for _, what in scenario.expected]
    assert [what for _, what in got] == expected_ids, f"got {got}"
    for (t_got, what), (t_want, _) in zip(got, scenario.expected, strict=True):
        assert abs(t_got - t_want) <= TOLERANCE_S, f"{what} at {t_got:.2f}, expected {t_want}"
    for event, lang in out:
        if isinstance(event, Prompt):
            entry = catalogues[lang].prompts[event.id]
            assert event.title == catalogues[lang].fill(entry.title, scenario.facts)
            assert event.because, f"{event.id} has no reason"
            assert event.speaker == "agent"
            assert event.alert == (event.id == "report_threat")
            for text in (event.title, event.instruction, event.text, event.next_step):
                assert text and not any(c in text for c in "{}[]"), text


def test_fixture_scenario_prompts_climb_the_ladder(catalogues: dict[str, PromptCatalogue]) -> None:
    """The replay of the abusive fixture shows tense, abusive, transfer, release, in that order."""
    scenario = next(s for s in SCENARIOS if s.name == "abusive_fixture_en")
    levels = [e.level for e, _ in run(scenario, catalogues) if isinstance(e, Prompt) and e.id != "take_break"]
    assert levels == sorted(levels, key=["calm", "tense", "abusive", "transfer", "release"].index)
    assert [lv for i, lv in enumerate(levels) if lv not in levels[:i]] == [
        "tense",
        "abusive",
        "transfer",
        "release",
    ]


def test_real_detector_on_the_sample_call_climbs_the_ladder(catalogues: dict[str, PromptCatalogue]) -> None:
    """The committed sample's words through the real detector, then the ladder, with no agent action."""
    from callguard.detector import AbuseStage, load_detector

    sample = Path(__file__).parents[1] / "fixtures" / "sample"
    words = json.loads((sample / "abusive_en_ulaw.transcript.json").read_text(encoding="utf-8"))["words"]
    truth = json.loads((sample / "abusive_en_ulaw.truth.json").read_text(encoding="utf-8"))
    facts = load_call_info(sample / "abusive_en_ulaw.call.json")
    config = Config()
    stage = AbuseStage(load_detector(config), config.detector.stable_partials, language=lambda: "en")
    policy = EscalationPolicy(config.policy, catalogues, facts, "en")
    events: list[Event] = []
    for utterance in truth["utterances"]:
        start, end = utterance["start"], utterance["end"]
        said = tuple(
            Word(w["word"], w["start"], w["end"])
            for w in words
            if start <= w["start"] and w["end"] <= end + 0.01
        )
        final = Transcript(
            t=end, speaker="customer", text=" ".join(w.word for w in said), words=said, final=True
        )
        if utterance["shouting"]:
            events.append(Shouting(t=start + 0.3, speaker="customer", level_db=-12.0, baseline_db=-30.0))
        events += [final, *stage.on_event(final), SpeechEnd(t=end, speaker="customer")]
    pending = sorted(events, key=lambda e: e.t)  # stable: abuse follows its final, as in the pipeline
    out = run_events(policy, pending, tick_at=ticks(truth["duration"], TICK_S))
    out += policy.end(truth["duration"])
    shown = [(e.t, e.id, e.level) for e in out if isinstance(e, Prompt)]
    first_at = {level: next(t for t, _, lv in shown if lv == level) for _, _, level in shown}
    assert list(first_at) == ["tense", "abusive", "transfer", "release"], shown
    assert 7 <= first_at["tense"] <= 11 and 23 <= first_at["abusive"] <= 27
    assert 49 <= first_at["transfer"] <= 53 and 74 <= first_at["release"] <= 79
    ids = [pid for _, pid, _ in shown]
    assert ids.index("personalise") < ids.index("state_limits") < ids.index("transfer") < ids.index("release")
    assert ids[-1] == "take_break" and "Mark Dunn" in next(e.text for e in out if isinstance(e, Prompt))
