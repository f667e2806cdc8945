"""`callguard evaluate` on a labelled fixture set whose right answers are known from the fixtures' truth."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import Abuse, CallFailed, Event, LevelChange, Prompt
from callguard.qa.evaluate import CallLabel, Prediction, Scores, load_labels, parse_sweep, predict, score

LABELLED = (
    "abusive_en",
    "abusive_fr",
    "angry_en",
    "angry_fr",
    "calm_en",
    "calm_fr",
    "threat_en",
    "threat_fr",
)
ABUSIVE_LABELS = {"insult", "threat"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callguard.cli", *args], capture_output=True, text=True, timeout=600
    )


def labels_from_truth(fixtures_dir: Path, folder: Path, names: tuple[str, ...]) -> dict[str, dict]:
    """Link the calls into `folder` and write labels.csv from their truth: the answers a QA analyst gives."""
    folder.mkdir(parents=True, exist_ok=True)
    answers = {}
    for name in names:
        for suffix in (".wav", ".transcript.json", ".call.json"):
            if (fixtures_dir / f"{name}{suffix}").exists():
                (folder / f"{name}{suffix}").symlink_to(fixtures_dir / f"{name}{suffix}")
        truth = json.loads((fixtures_dir / f"{name}.truth.json").read_text())
        abusive = [u for u in truth["utterances"] if ABUSIVE_LABELS & set(u["labels"])]
        answers[name] = {
            "call": name,  # no suffix: evaluate finds NAME.wav beside the labels
            "abusive": "yes" if abusive else "no",
            "onset": f"{abusive[0]['start']:.2f}" if abusive else "",
            "category": ";".join(sorted({label for u in truth["utterances"] for label in u["labels"]})),
        }
    write_labels(folder / "labels.csv", answers.values())
    return answers


def write_labels(path: Path, rows: object) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["call", "abusive", "onset", "category"])
        writer.writeheader()
        writer.writerows(rows)  # type: ignore[arg-type]


def table(stdout: str) -> dict[str, list[str]]:
    """The printed score table: row name -> its columns."""
    rows = {}
    for line in stdout.splitlines():
        for name in ("call (abusive)", "profanity", "insult", "threat"):
            if line.startswith(name):
                rows[name] = line[len(name) :].split()
    return rows


def test_evaluate_scores_the_labelled_fixture_set(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    answers = labels_from_truth(fixtures_dir, folder, LABELLED)
    assert [n for n, a in answers.items() if a["abusive"] == "yes"] == [
        "abusive_en", "abusive_fr", "threat_en", "threat_fr"
    ]  # fmt: skip
    out = tmp_path / "out"

    result = cli("evaluate", str(folder / "labels.csv"), "--out", str(out), "--jobs", "2", "--quiet")

    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    # labelled predicted TP FP FN precision recall F1: every call judged right (threat_fr's "personne
    # ne règle jamais rien chez vous", a complaint about the company, was a false insult until the
    # seventh round's heads)
    assert rows["call (abusive)"] == ["4", "4", "4", "0", "0", "1.000", "1.000", "1.000"]
    assert rows["insult"] == ["2", "2", "2", "0", "0", "1.000", "1.000", "1.000"]
    assert rows["threat"] == ["2", "2", "2", "0", "0", "1.000", "1.000", "1.000"]
    assert rows["profanity"][:5] == ["4", "4", "4", "0", "0"]  # venting in angry_*, swearing in abusive_*
    delay = next(line for line in result.stdout.splitlines() if line.startswith("delay"))
    median, longest = (float(x) for x in re.findall(r"(\d+\.\d) s", delay))
    assert 0.0 <= median <= longest <= 5.0 and "(4 calls)" in delay
    assert sorted(p.stem.split(".")[0] for p in out.glob("*.events.jsonl")) == sorted(LABELLED)

    # A second analyst disagrees on three calls; the replays are reused, not redone.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.events.jsonl")}
    answers["calm_en"] |= {"abusive": "1", "onset": "5.0", "category": "insult"}  # missed: FN
    answers["angry_en"] |= {"abusive": "true", "category": "profanity;insult"}  # missed: FN
    answers["threat_fr"] |= {"abusive": "0", "onset": "", "category": ""}  # flagged anyway: FP
    write_labels(folder / "labels.csv", answers.values())

    second = cli("evaluate", str(folder / "labels.csv"), "--out", str(out), "--reuse", "--quiet")

    assert second.returncode == 0, second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.events.jsonl")} == stamps
    rows = table(second.stdout)
    # TP 3 (abusive_en, abusive_fr, threat_en), FP 1 (threat_fr), FN 2 (calm_en, angry_en)
    assert rows["call (abusive)"] == ["5", "4", "3", "1", "2", "0.750", "0.600", "0.667"]
    # insult: labelled on abusive_en/fr, calm_en, angry_en; detected on abusive_en/fr
    assert rows["insult"] == ["4", "2", "2", "0", "2", "1.000", "0.500", "0.667"]
    # threat_fr is labelled with no category while not abusive: it counts as holding none
    assert rows["threat"] == ["1", "2", "1", "1", "0", "0.500", "1.000", "0.667"]
    assert "false positives: threat_fr" in second.stdout
    assert "false negatives: angry_en, calm_en" in second.stdout


def test_sweep_draws_the_trade_off_of_a_threshold(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    labels_from_truth(fixtures_dir, folder, ("abusive_en", "calm_en", "threat_en"))
    out = tmp_path / "out"

    result = cli(
        "evaluate", str(folder / "labels.csv"), "--out", str(out), "--jobs", "2", "--quiet",
        "--sweep", "policy.abusive_insults=1:19:9",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    with (out / "sweep.csv").open(newline="") as f:
        points = list(csv.DictReader(f))
    assert [p["value"] for p in points] == ["1", "10", "19"]
    assert {p["setting"] for p in points} == {"policy.abusive_insults"}
    # abusive_en holds 7 insults: caught at 1, not at 10 or more; the threat alerts whatever the value
    assert [(p["tp"], p["fp"], p["fn"]) for p in points] == [
        ("2", "0", "0"),
        ("1", "0", "1"),
        ("1", "0", "1"),
    ]
    assert [p["recall"] for p in points] == ["1.0000", "0.5000", "0.5000"]
    svg = (out / "sweep.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.count("<path") > 20
    for value in ("1", "10", "19"):
        assert (out / "sweep" / f"policy.abusive_insults={value}" / "summary.csv").is_file()
    assert "sweep of policy.abusive_insults (3 points)" in result.stdout


def test_labels_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("call,abusive\na.wav,maybe\n")
    with pytest.raises(ConfigError, match=r"labels.csv: line 2.abusive: must be 1/0.*'maybe'"):
        load_labels(path)
    path.write_text("call,onset\na.wav,3\n")
    with pytest.raises(ConfigError, match="missing abusive"):
        load_labels(path)
    path.write_text("call,abusive,onset,category\na.wav,1,-2,insult\n")
    with pytest.raises(ConfigError, match=r"line 2.onset: must be seconds >= 0"):
        load_labels(path)
    path.write_text("call,abusive,onset,category\na.wav,1,2,rudeness\n")
    with pytest.raises(ConfigError, match=r"line 2.category: unknown rudeness"):
        load_labels(path)
    path.write_text("call,abusive,onset,category\nsub/a,yes,2.5,insult+threat\nb.wav,no,,\n")
    first, second = load_labels(path)
    assert first == CallLabel("a", tmp_path / "sub" / "a", True, 2.5, frozenset({"insult", "threat"}))
    assert second.categories == frozenset() and not second.abusive


def test_sweep_spec_is_checked_against_the_config() -> None:
    config = Config()
    spec = parse_sweep("policy.abusive_insults=1:3:1", config)
    assert spec.values == (1, 2, 3) and spec.setting == "policy.abusive_insults"
    assert parse_sweep("loudness.margin_db=6:9:1.5", config).values == (6.0, 7.5, 9.0)
    with pytest.raises(ConfigError, match=re.escape("policy.abusive_insults: is a whole number")):
        parse_sweep("policy.abusive_insults=1:2:0.5", config)
    with pytest.raises(ConfigError, match=re.escape("policy.nothing: is not a numeric setting")):
        parse_sweep("policy.nothing=1:2:1", config)
    with pytest.raises(
        ConfigError, match=re.escape("policy.abusive_insults: must be between 1 and 20, got 0")
    ):
        parse_sweep("policy.abusive_insults=0:2:1", config)
    with pytest.raises(ConfigError, match=re.escape("expected SECTION.KEY=A:B:STEP")):
        parse_sweep("abusive_insults=1", config)


def test_scores_and_predictions_follow_their_definitions() -> None:
    s = Scores.count([(True, True), (True, False), (False, True), (False, False), (True, True)])
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    assert Scores().precision is None and Scores(fn=1).f1 is None
    events: list[Event] = [
        Prompt(t=3.0, speaker="system", level="tense"),
        LevelChange(t=9.0, speaker="system", level="abusive", previous="tense"),
        Prompt(t=9.5, speaker="system", level="abusive"),
        Abuse(t=8.9, speaker="customer", category="insult"),
    ]
    assert predict("x", events) == Prediction("x", True, frozenset({"insult"}), 9.5)
    threat = [Prompt(t=4.0, speaker="system", level="calm", alert=True)]
    assert predict("y", threat).abusive and predict("y", threat).first_prompt_s == 4.0
    failed = predict("z", [CallFailed(t=0.0, speaker="system", message="z.wav: empty file")])
    assert failed.error == "z.wav: empty file"
    labels = [CallLabel("x", Path("x.wav"), True, 8.0), CallLabel("z", Path("z.wav"), True)]
    evaluation = score(labels, {"x": predict("x", events), "z": failed})
    assert evaluation.delays == {"x": 1.5} and [p.name for p in evaluation.failed] == ["z"]
    assert (evaluation.calls.tp, evaluation.calls.fn) == (1, 0)  # a failed call is left out, not a miss
