"""Unit tests of the escalation ladder, the prompt catalogues and the call facts."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import pytest

from callguard.core.config import DEFAULT_CONFIG_DIR, Config
from callguard.core.errors import ConfigError
from callguard.core.events import (
    Abuse,
    AgentAction,
    CallSummary,
    Event,
    LanguageDecided,
    LevelChange,
    Match,
    Prompt,
    Shouting,
    SpeechEnd,
)
from callguard.core.facts import CallFacts, load_call_info
from callguard.policy.ladder import (
    EscalationPolicy,
    PromptCatalogue,
    load_catalogue,
    load_catalogues,
)
from callguard.testing import run_events, ticks

EN_FILE = DEFAULT_CONFIG_DIR / "prompts_en.toml"
FR_FILE = DEFAULT_CONFIG_DIR / "prompts_fr.toml"
FACTS = CallFacts(call_id="c1", customer_name="Ms Lee", company="Acme", agent_name="Sam", language="en")

# Every strategy of the two seeds (issue point 3) and the prompt that carries it.
STRATEGIES = {
    "stay calm and breathe": ("stay_calm", "tense"),
    "do not take it personally": ("not_personal", "abusive"),
    "listen for the real problem and ask questions": ("listen_ask", "tense"),
    "speak low and slow": ("speak_low_slow", "tense"),
    "empathise": ("empathise", "tense"),
    "summarise their view": ("summarise", "tense"),
    "apologise for the inconvenience": ("apologise", "tense"),
    "hold your ground politely": ("hold_ground", "tense"),
    "admit when nothing can be done": ("admit_nothing", "tense"),
    "offer the simple fix": ("simple_fix", "tense"),
    "look for written proof": ("written_proof", "tense"),
    "consult a manager": ("consult_manager", "tense"),
    "personalise": ("personalise", "abusive"),
    "state intent and limits": ("state_limits", "abusive"),
    "transfer with the script": ("transfer", "transfer"),
    "release with the script": ("release", "release"),
    "report threats": ("report_threat", "threat"),
    "take a break after the call": ("take_break", "after"),
    "agent's own voice": ("agent_voice", "voice"),
}


@pytest.fixture(scope="module")
def catalogues() -> dict[str, PromptCatalogue]:
    return load_catalogues(Config())


def make_policy(
    catalogues: dict[str, PromptCatalogue], facts: CallFacts = FACTS, lang: str = "en", **overrides: float
) -> EscalationPolicy:
    config = Config().with_overrides(policy=overrides) if overrides else Config()
    return EscalationPolicy(config.policy, catalogues, facts, lang)


def abuse(t: float, category: str = "insult", words: tuple[str, ...] = ("idiot",)) -> Abuse:
    match = Match(category=category, severity=2, words=words, term=words[0], directed=category != "profanity")
    return Abuse(t=t, speaker="customer", category=category, severity=2, words=words, matches=(match,))  # type: ignore[arg-type]


def feed(policy: EscalationPolicy, events: list[Event], until: float, step: float = 0.5) -> list[Event]:
    """Process events in time order, ticking every `step` until `until` like the pipeline runner."""
    return run_events(policy, sorted(events, key=lambda e: e.t), tick_at=ticks(until, step))


def prompts(events: list[Event]) -> list[Prompt]:
    return [e for e in events if isinstance(e, Prompt)]


# ---------------------------------------------------------------- catalogues


def test_every_seed_strategy_has_a_prompt_in_both_languages(catalogues: dict[str, PromptCatalogue]) -> None:
    for strategy, (pid, level) in STRATEGIES.items():
        for lang in ("en", "fr"):
            entry = catalogues[lang].prompts.get(pid)
            assert entry is not None, f"{strategy}: no prompt {pid!r} in {lang}"
            assert entry.level == level, f"{strategy}: {pid} is {entry.level} in {lang}"
    assert list(catalogues["en"].prompts) == list(catalogues["fr"].prompts)


def test_catalogues_are_really_translated(catalogues: dict[str, PromptCatalogue]) -> None:
    for pid, en in catalogues["en"].prompts.items():
        fr = catalogues["fr"].prompts[pid]
        assert (en.title, en.instruction, en.phrase) != (fr.title, fr.instruction, fr.phrase)
        assert en.title != fr.title, pid
    assert "Je libère maintenant cet appel" in catalogues["fr"].prompts["release"].phrase
    assert "I am now releasing this call" in catalogues["en"].prompts["release"].phrase


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("facts", [CallFacts(), FACTS], ids=["no-facts", "facts"])
def test_every_prompt_fills_cleanly(
    catalogues: dict[str, PromptCatalogue], lang: str, facts: CallFacts
) -> None:
    catalogue = catalogues[lang]
    texts = [
        catalogue.fill(text, facts)
        for p in catalogue.prompts.values()
        for text in (p.title, p.instruction, p.phrase)
    ]
    texts += [catalogue.fill(text, facts) for text in catalogue.next_steps.values()]
    for text in texts:
        assert not re.search(r"[{}\[\]]", text), text
        assert "  " not in text and " ," not in text and " ." not in text, text
        assert text[0].isupper() or not text[0].isalpha(), text


def test_placeholders_use_the_call_facts(catalogues: dict[str, PromptCatalogue]) -> None:
    en, fr = catalogues["en"], catalogues["fr"]
    instruction = en.fill(en.prompts["personalise"].instruction, FACTS)
    assert instruction.startswith("Use their name: Ms Lee from Acme; repeat yours: Sam.")
    assert en.fill(en.prompts["personalise"].phrase, FACTS).startswith("Ms Lee, my name is Sam")
    assert "Ms Lee" in fr.fill(fr.prompts["state_limits"].phrase, FACTS)
    # Unknown facts drop their [optional part]; nothing like "{customer_name}" reaches the agent.
    assert en.fill(en.prompts["personalise"].instruction, CallFacts()).startswith(
        "Use their name; repeat yours."
    )
    assert en.fill(en.prompts["state_limits"].phrase, CallFacts()).startswith("I want to solve this")
    only_name = CallFacts(customer_name="Ms Lee")
    assert en.fill(en.prompts["personalise"].instruction, only_name).startswith(
        "Use their name: Ms Lee; repeat"
    )


def test_a_placeholder_outside_brackets_falls_back_to_a_neutral_word(
    catalogues: dict[str, PromptCatalogue],
) -> None:
    en, fr = catalogues["en"], catalogues["fr"]
    assert en.fill("Hello {customer_name}, this is {agent_name}.", CallFacts()) == (
        "Hello sir or madam, this is your advisor."
    )
    assert fr.fill("{customer_name}, je vous écoute.", CallFacts()) == "Madame, Monsieur, je vous écoute."
    assert en.fill("Hello {customer_name}.", CallFacts(customer_name="{company}")) == "Hello {company}."


def _write_variant(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = EN_FILE.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "prompts_en.toml"
    path.write_text(text.replace(old, new, count), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('title = "Stay calm, breathe"\n', "", "prompt[0].title", "missing"),
        ('level = "tense"', 'level = "angry"', "prompt[0].level", "must be one of"),
        ("{customer_name}]. Take", "{client}]. Take", "prompt[0].phrase", "unknown placeholder {client}"),
        ("[, {customer_name}]. Take", "[, {customer_name}. Take", "prompt[0].phrase", "unbalanced"),
        ("{customer_name}]. Take", "{customer_name]. Take", "prompt[0].phrase", "not a placeholder"),
        ('id = "listen_ask"', 'id = "stay_calm"', "prompt[1].id", "duplicate id 'stay_calm'"),
        ('id = "stay_calm"\n', 'id = "stay_calm"\ncolour = "red"\n', "prompt[0].colour", "unknown key"),
        ('id = "stay_calm"', 'id = "Stay Calm"', "prompt[0].id", "lower-case"),
        ('title = "Stay calm, breathe"', 'title = "' + "x" * 60 + '"', "prompt[0].title", "at most 48"),
        ('after = "Take your break before the next call."\n', "", "next_step.after", "missing"),
        ('after = "Take', 'later = "x"\nafter = "Take', "next_step.later", "unknown key"),
        ('agent_name = "your advisor"\n', "", "placeholders.agent_name", "missing"),
        ('id = "state_limits"', 'id = "limits"', "prompt", "'state_limits'"),
        ('level = "after"', 'level = "release"', "prompt", "level = 'after'"),
        ('lang = "en"', 'lang = "fr"', "lang", "must be 'en'"),
        ('lang = "en"', 'lang = "en"\nversion = 2', "version", "unknown key"),
    ],
)
def test_catalogue_errors_name_the_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path, "en")
    assert caught.value.source == str(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_catalogue_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_catalogue(tmp_path / "missing.toml", "en")
    broken = tmp_path / "broken.toml"
    broken.write_text('lang = "en"\n[[prompt]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalogue(broken, "en")


def test_catalogues_must_share_their_ids(tmp_path: Path) -> None:
    (tmp_path / "prompts_en.toml").write_text(EN_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    fr = FR_FILE.read_text(encoding="utf-8").replace('id = "not_personal"', 'id = "pas_perso"')
    (tmp_path / "prompts_fr.toml").write_text(fr, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalogues(Config(base_dir=tmp_path))
    assert caught.value.source.endswith("prompts_fr.toml")
    assert "not_personal" in caught.value.problem and "pas_perso" in caught.value.problem


# ---------------------------------------------------------------- call facts


def test_facts_from_dict() -> None:
    facts = CallFacts.from_dict(
        {
            "customer_name": " Ms Lee ",
            "company": "Acme",
            "agent_name": "Sam",
            "language": "fr-CA",
            "transfer_available": False,
            "transferred_in": True,
            "call_id": None,
        },
        "call.json",
    )
    assert facts == CallFacts("", "Ms Lee", "Acme", "Sam", "fr", False, True)
    assert not facts.can_transfer
    assert CallFacts.from_dict({}, "call.json") == CallFacts()


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        ({"customer": "x"}, "customer", "unknown key"),
        ({"transfer_available": "yes"}, "transfer_available", "must be true or false"),
        ({"transferred_in": 1}, "transferred_in", "must be true or false"),
        ({"customer_name": 42}, "customer_name", "must be a string"),
        ({"language": "de"}, "language", "must be 'en', 'fr' or empty"),
    ],
)
def test_facts_errors_name_the_key(document: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CallFacts.from_dict(document, "call.json")
    assert (caught.value.source, caught.value.key) == ("call.json", key)
    assert problem in caught.value.problem


def test_load_call_info(tmp_path: Path) -> None:
    path = tmp_path / "abusive_en.json"
    path.write_text(json.dumps({"customer_name": "Ms Lee", "transfer_available": True}), encoding="utf-8")
    facts = load_call_info(path)
    assert (facts.call_id, facts.customer_name, facts.transfer_available) == ("abusive_en", "Ms Lee", True)
    with pytest.raises(ConfigError, match="not found") as caught:
        load_call_info(tmp_path / "nope.json")
    assert "nope.json" in str(caught.value)
    path.write_text('{"customer_name": "Ms Lee",}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1"):
        load_call_info(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_call_info(path)
    path.write_text('{"transferred_in": "no"}', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_call_info(path)
    assert caught.value.key == "transferred_in" and caught.value.source == str(path)


# ---------------------------------------------------------------- the ladder


def test_prompt_events_carry_the_filled_texts(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    out = policy.on_event(abuse(5.0))
    change, prompt = out
    assert isinstance(change, LevelChange) and (change.previous, change.level) == ("calm", "abusive")
    assert isinstance(prompt, Prompt)
    assert (prompt.id, prompt.level, prompt.speaker, prompt.alert, prompt.t) == (
        "personalise",
        "abusive",
        "agent",
        False,
        5.0,
    )
    assert prompt.title == "Make it personal"
    assert "Ms Lee from Acme" in prompt.instruction and prompt.text.startswith("Ms Lee, my name is Sam")
    assert prompt.next_step == "Next: state your intent and your limits."
    assert prompt.to_dict()["type"] == "prompt"
    assert policy.level == "abusive"


def test_because_records_the_triggering_events(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    shout = Shouting(t=7.5, speaker="customer", level_db=-9.0, baseline_db=-27.0)
    out = feed(
        policy,
        [
            shout,
            abuse(8.0, "profanity", ("damn",)),
            abuse(24.0, words=("idiot",)),
            abuse(50.0, words=("moron",)),
        ],
        until=50,
    )
    by_id = {p.id: p for p in prompts(out)}
    assert by_id["stay_calm"].because[:2] == ("shouting@7.50(-9dBFS)", "abuse:profanity@8.00(damn)")
    assert "abuse:insult@24.00(idiot)" in by_id["personalise"].because
    transfer = by_id["transfer"].because
    assert transfer[0] == "abuse:insult@50.00(moron)"
    assert any(
        "limits assumed stated" in reason and "no limits_stated action" in reason for reason in transfer
    )
    later = feed(policy, [abuse(66.0, words=("stupid",))], until=66)
    (release,) = prompts(later)
    assert release.id == "release"
    assert any("transfer assumed not done" in reason for reason in release.because)


def test_one_primary_prompt_at_a_time(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    burst = [abuse(10.0 + i * 0.2, words=(w,)) for i, w in enumerate(("idiot", "stupid", "moron", "idiot"))]
    out = feed(policy, burst, until=11)
    assert [p.id for p in prompts(out)] == ["personalise"]
    policy = make_policy(catalogues)
    turns = [SpeechEnd(t=9.0 + i * 0.5, speaker="customer") for i in range(40)]
    out = feed(policy, [abuse(8.0, "profanity", ("damn",)), *turns], until=30)
    times = [p.t for p in prompts(out)]
    assert len(times) >= 4
    assert all(b - a >= Config().policy.min_prompt_gap_s for a, b in itertools.pairwise(times))


def test_a_tip_is_not_repeated_within_the_cooldown(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues, abusive_profanities=10)
    # Profanity every 40 s keeps the call tense; the customer's turns end every 5 s for 4 minutes.
    events: list[Event] = [abuse(8.0 + 40 * i, "profanity", ("damn",)) for i in range(6)]
    events += [SpeechEnd(t=10.0 + 5 * i, speaker="customer") for i in range(48)]
    shown = prompts(feed(policy, events, until=250))
    assert policy.level == "tense"
    last: dict[str, float] = {}
    for prompt in shown:
        if prompt.id in last:
            assert prompt.t - last[prompt.id] >= Config().policy.prompt_cooldown_s, prompt.id
        last[prompt.id] = prompt.t
    playbook = catalogues["en"].playbook("tense")
    assert [p.id for p in shown[: len(playbook)]] == list(playbook)  # every tip once, in file order
    assert [p.id for p in shown].count("stay_calm") >= 2  # then they come round again


def test_agent_voice_only_in_a_tense_call(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    loud = Shouting(t=5.0, speaker="agent", level_db=-10.0, baseline_db=-28.0)
    assert policy.on_event(loud) == []
    policy.on_event(abuse(8.0, "profanity", ("damn",)))
    (voice,) = policy.on_event(Shouting(t=12.0, speaker="agent", level_db=-10.0, baseline_db=-28.0))
    assert (
        isinstance(voice, Prompt)
        and voice.id == "agent_voice"
        and voice.title == "Lower your voice, slow down"
    )
    assert policy.on_event(Shouting(t=20.0, speaker="agent", level_db=-10.0, baseline_db=-28.0)) == []


def test_actions_move_the_ladder(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    policy.on_event(abuse(5.0))
    assert policy.on_event(AgentAction(t=7.0, speaker="agent", action="acknowledged")) == []
    policy.on_event(AgentAction(t=8.0, speaker="agent", action="limits_stated"))
    assert prompts(policy.tick(12.0)) == []  # limits said: no limits prompt
    (change, transfer) = policy.on_event(abuse(11.0))
    assert isinstance(change, LevelChange) and change.level == "transfer"
    assert isinstance(transfer, Prompt) and transfer.id == "transfer"
    (change,) = policy.on_event(AgentAction(t=14.0, speaker="agent", action="released"))
    assert isinstance(change, LevelChange) and change.level == "release" and "released" in change.reason
    # The agent ended it: the ladder stops, threats still alert.
    assert policy.on_event(abuse(20.0)) == []
    assert [p.id for p in prompts(policy.on_event(abuse(21.0, "threat", ("hurt",))))] == ["report_threat"]
    assert policy.tick(200.0) == [] and policy.level == "release"


def test_no_release_without_limits_unless_a_threat(catalogues: dict[str, PromptCatalogue]) -> None:
    facts = CallFacts(transfer_available=False)
    policy = make_policy(catalogues, facts)
    # Continuous abuse before the limits prompt has counted as said: stays abusive.
    out = feed(policy, [abuse(5.0 + i) for i in range(15)], until=19.5)
    assert policy.level == "abusive" and "release" not in [p.id for p in prompts(out)]
    policy = make_policy(catalogues, facts, threat_release_count=1)
    policy.on_event(abuse(5.0, "threat", ("hurt",)))
    assert policy.level == "release"


def test_end_of_call_summary(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues, lang="fr")
    shout = Shouting(t=7.5, speaker="customer", level_db=-9.0, baseline_db=-27.0)
    events: list[Event] = [shout, abuse(8.0, "profanity", ("merde",)), abuse(24.0, words=("connard",))]
    events += [AgentAction(t=31.0, speaker="agent", action="limits_stated")]
    feed(policy, events, until=40)
    *rest, summary = policy.end(41.0)
    (brk,) = rest
    assert isinstance(brk, Prompt) and brk.id == "take_break" and brk.title == "Faites une courte pause"
    assert isinstance(summary, CallSummary) and summary.speaker == "system"
    assert summary.level_reached == "abusive"
    assert summary.detections == {"shouting": 1, "profanity": 1, "insult": 1}
    assert summary.prompts == ("stay_calm", "personalise", "state_limits", "take_break")
    assert summary.actions == ("limits_stated",)
    assert policy.end(42.0) == []


def test_a_calm_call_ends_with_a_summary_and_no_break(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    policy.on_event(Shouting(t=3.0, speaker="customer", level_db=-9.0, baseline_db=-27.0))
    (summary,) = policy.end(30.0)
    assert isinstance(summary, CallSummary)
    assert (summary.level_reached, summary.prompts, summary.detections) == ("calm", (), {"shouting": 1})


def test_language(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues, CallFacts(language="fr"), lang="")
    assert policy.lang == "fr"
    policy.on_event(LanguageDecided(t=1.0, speaker="system", lang="en"))
    assert policy.lang == "en"
    (_, prompt) = policy.on_event(abuse(5.0))
    assert prompt.title == "Make it personal"  # type: ignore[union-attr]


def test_tick_is_cheap(catalogues: dict[str, PromptCatalogue]) -> None:
    policy = make_policy(catalogues)
    policy.on_event(abuse(1.0, "profanity", ("damn",)))
    start = time.perf_counter()
    for i in range(100_000):
        policy.tick(1.0 + i * 0.0001)
    assert time.perf_counter() - start < 1.0
