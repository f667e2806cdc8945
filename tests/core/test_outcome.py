"""One fold from a call's events to its outcome: what batch rows, evaluation, reports and the live
view read of a call."""

from __future__ import annotations

from callguard.core.events import (
    Abuse,
    AgentAction,
    CallEnd,
    CallFailed,
    CallSummary,
    Event,
    LanguageDecided,
    LevelChange,
    Prompt,
    Shouting,
    SpeechStart,
    Transcript,
)
from callguard.core.outcome import CallFold, CallOutcome, fold_call

CALL: list[Event] = [
    SpeechStart(t=0.5, speaker="customer"),
    LanguageDecided(t=1.0, speaker="system", lang="fr", source="auto"),
    Transcript(t=2.0, speaker="customer", text="espèce d'idiot", final=True),
    Abuse(t=2.0, speaker="customer", category="insult", severity=2, words=("idiot",), partial=True),
    Abuse(t=2.1, speaker="customer", category="insult", severity=2, words=("idiot",)),
    Shouting(t=3.0, speaker="customer", level_db=-6.0),
    Shouting(t=4.0, speaker="agent", level_db=-5.0),
    Shouting(t=5.0, speaker="customer", level_db=-6.0),
    LevelChange(t=6.0, speaker="system", level="tense", previous="calm"),
    Prompt(t=6.0, speaker="system", id="calm_down", level="tense"),
    Abuse(t=7.0, speaker="customer", category="threat", severity=3, words=("hurt",)),
    Prompt(t=7.0, speaker="system", id="threat", level="tense", alert=True),
    LevelChange(t=8.0, speaker="system", level="abusive", previous="tense"),
    Prompt(t=8.0, speaker="system", id="state_limits", level="abusive"),
    AgentAction(t=9.0, speaker="agent", action="limits_stated"),
    LevelChange(t=20.0, speaker="system", level="tense", previous="abusive"),
    AgentAction(t=21.0, speaker="agent", action="acknowledged"),
    CallSummary(
        t=30.0,
        speaker="system",
        level_reached="abusive",
        detections={"insult": 2, "threat": 1},
        playbook=("limits: stated at 9.0 s",),
    ),
    CallEnd(t=30.0, speaker="system", duration=30.0, reason="file"),
]


def test_a_call_folds_into_its_outcome() -> None:
    outcome = fold_call(CALL)
    assert outcome.level == "tense" and outcome.level_reached == "abusive"  # it calmed, it had peaked
    assert outcome.detections == {"profanity": 0, "insult": 2, "threat": 1}  # a partial's counts too
    assert outcome.categories == {"insult", "threat"}
    assert outcome.shouting == {"customer": 2, "agent": 1}
    assert [p.id for p in outcome.prompts] == ["calm_down", "threat", "state_limits"]
    assert [p.id for p in outcome.alerts] == ["threat"]
    assert outcome.prompt is not None and outcome.prompt.id == "state_limits"
    assert outcome.alert is not None and outcome.alert.id == "threat"
    assert outcome.actions == ("limits_stated", "acknowledged")
    assert outcome.playbook == ("limits: stated at 9.0 s",)
    assert outcome.language == "fr" and outcome.end_reason == "file"
    assert outcome.ended and outcome.duration is not None and abs(outcome.duration - 30.0) < 1e-9
    assert outcome.first_prompt_t is not None and abs(outcome.first_prompt_t - 6.0) < 1e-9
    # the threat alert came before the first prompt at the abusive level
    assert outcome.first_abusive_prompt_t is not None and abs(outcome.first_abusive_prompt_t - 7.0) < 1e-9
    assert outcome.abusive and not outcome.failed


def test_one_event_at_a_time_is_the_same_fold() -> None:
    fold = CallFold()
    for n, event in enumerate(CALL, start=1):
        fold.add(event)
        assert fold.outcome == fold_call(CALL[:n])
    assert fold.outcome == fold_call(CALL)


def test_a_call_not_yet_over_and_a_call_that_failed() -> None:
    going = fold_call(CALL[:10])
    assert not going.ended and going.summary is None and going.playbook == ()
    assert going.level == going.level_reached == "tense" and not going.abusive
    alert_only = fold_call([Prompt(t=4.0, speaker="system", level="calm", alert=True)])
    assert alert_only.abusive and alert_only.level_reached == "calm"  # a threat alert is enough
    failed = fold_call([CallFailed(t=0.0, speaker="system", message="x.wav: empty file")])
    assert failed.failed and failed.error == "x.wav: empty file" and failed.prompts == ()
    assert fold_call([CallFailed(t=0.0, speaker="system")]).error == "failed"  # never a silent failure
    assert fold_call([]) == CallOutcome()
