"""The command as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample" / "abusive_en_ulaw"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callguard.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def test_readme_main_job_replays_the_sample_call() -> None:
    result = run(
        "replay",
        f"{SAMPLE}.wav",
        "--transcript",
        f"{SAMPLE}.transcript.json",
        "--call-info",
        f"{SAMPLE}.call.json",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    prompt_levels = [line.split("[", 1)[1].split("]", 1)[0] for line in lines if "PROMPT [" in line]
    order = [level for i, level in enumerate(prompt_levels) if level not in prompt_levels[:i]]
    assert order == ["tense", "abusive", "transfer", "release"]
    assert "Mark Dunn" in result.stdout


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = tmp / "good.wav"
    soundfile.write(good, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    truncated = tmp / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:44])  # the header alone: a cut file with audio replays
    empty = tmp / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp / "junk.wav"
    junk.write_bytes(b"this is not audio" * 50)
    quad = tmp / "quad.wav"
    soundfile.write(quad, np.zeros((1600, 4), dtype=np.int16), 16000, subtype="PCM_16")
    return {
        "truncated": (truncated, "truncated"),
        "empty": (empty, "empty"),
        "junk": (junk, "not a readable audio file"),
        "unsupported": (quad, "4 channels"),
        "missing": (tmp / "nope.wav", "not found"),
    }


@pytest.mark.parametrize("case", ["truncated", "empty", "junk", "unsupported", "missing"])
def test_bad_recording_gets_one_line_naming_file_and_reason(case: str, tmp_path: Path) -> None:
    path, reason = _bad_files(tmp_path)[case]
    result = run("replay", str(path), "--lang", "en")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert str(path) in errors[0] and reason in errors[0]
    assert "Traceback" not in result.stderr


def test_no_model_prints_one_notice_and_runs_on_sound(tmp_path: Path) -> None:
    assert run("config", "init", str(tmp_path)).returncode == 0
    config = tmp_path / "callguard.toml"
    models = tmp_path / "empty_models"
    models.mkdir()
    src = config.read_text()
    assert 'models_dir = "~/.local/share/callguard/models"' in src
    config.write_text(
        src.replace('models_dir = "~/.local/share/callguard/models"', f'models_dir = "{models}"')
    )
    result = run("--config", str(config), "replay", f"{SAMPLE}.wav", "--lang", "en")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "model" in line]
    assert len(notices) == 1 and "callguard models download" in notices[0]
    assert "shouting" in result.stdout


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad]\naggressiveness = 7\n")
    result = run("config", "check", str(bad))
    assert result.returncode == 1
    assert "vad.aggressiveness" in result.stderr and "7" in result.stderr
    ok = run("config", "check")
    assert ok.returncode == 0, ok.stderr


def test_detect_reads_lines_and_writes_json() -> None:
    result = run("detect", "--lang", "en", stdin="you are a fucking idiot\nthe class assessment went well\n")
    assert result.returncode == 0, result.stderr
    import json

    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert "insult" in first["categories"] and first["severity"] >= 2
    assert second["categories"] == [] and second["severity"] == 0


def test_a_sidecar_with_punctuation_items_replays_with_a_notice(tmp_path: Path) -> None:
    words = json.loads(Path(f"{SAMPLE}.transcript.json").read_text())["words"]
    words.insert(3, {"word": ".", "speaker": "customer"})  # as AWS Transcribe writes it: no times
    words.insert(1, {"word": "", "start": 1.0, "end": 1.0, "speaker": "customer"})
    sidecar = tmp_path / "aws.transcript.json"
    sidecar.write_text(json.dumps({"words": words}))
    result = run("replay", f"{SAMPLE}.wav", "--transcript", str(sidecar))
    assert result.returncode == 0, result.stderr
    assert "2 empty or punctuation-only tokens skipped" in result.stdout
    assert "PROMPT [abusive]" in result.stdout


def test_replay_outputs_are_redacted_unless_told_otherwise(tmp_path: Path) -> None:
    """Issue 17.7: card numbers, phone numbers and e-mails appeared in events.jsonl and the timeline."""
    said = "my card is four one one one one one one one one one one one one one one one you idiot"
    words = [
        {"word": w, "start": 1.0 + 0.3 * i, "end": 1.25 + 0.3 * i, "speaker": "customer"}
        for i, w in enumerate([*said.split(), "mail", "me", "at", "ann@example.com"])
    ]
    sidecar = tmp_path / "pii.transcript.json"
    sidecar.write_text(json.dumps({"words": words}))
    events = tmp_path / "events.jsonl"
    result = run("replay", f"{SAMPLE}.wav", "--transcript", str(sidecar), "--events", str(events))
    assert result.returncode == 0, result.stderr
    for output in (result.stdout, events.read_text()):
        assert "four one one one" not in output and "ann@example.com" not in output
        assert "[card]" in output and "[email]" in output
    finals = [json.loads(line) for line in events.read_text().splitlines() if '"final"' in line]
    timed = [w["word"] for e in finals for w in e["words"]]
    assert "[card]" in timed and "idiot" in timed
    raw = run("replay", f"{SAMPLE}.wav", "--transcript", str(sidecar), "--no-redact")
    assert "ann@example.com" in raw.stdout and "four one one one" in raw.stdout
