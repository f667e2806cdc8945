"""Batch replay as QA runs it: a folder of calls, bad files among them, an interrupted run resumed."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.qa.batch import (
    SUMMARY_FIELDS,
    CallJob,
    ReplayOptions,
    WorkerState,
    collect_calls,
    events_complete,
    read_summary,
    run_call,
)

SIDECARS = (".wav", ".transcript.json", ".call.json")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callguard.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def link_fixture(fixtures_dir: Path, name: str, folder: Path, as_name: str | None = None) -> Path:
    """The fixture's recording and its sidecars, linked into `folder` (under `as_name` if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in SIDECARS:
        source = fixtures_dir / f"{name}{suffix}"
        if source.exists():
            (folder / f"{as_name or name}{suffix}").symlink_to(source)
    return folder / f"{as_name or name}.wav"


def bad_recordings(folder: Path, fixtures_dir: Path) -> dict[str, str]:
    """A corrupt, a header-only and an empty recording; each name with the reason its row must give.
    (A recording cut mid-call replays what it holds: see test_a_truncated_recording_replays_what_it_holds.)"""
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    (folder / "truncated.wav").write_bytes((fixtures_dir / "calm_en.wav").read_bytes()[:44])
    (folder / "empty.wav").write_bytes(b"")
    return {"corrupt": "not a readable audio file", "truncated": "truncated", "empty": "empty file"}


def summary_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == SUMMARY_FIELDS
        rows = list(reader)
    names = [row["call"] for row in rows]
    assert len(names) == len(set(names)), f"a call has two rows: {names}"
    return {row["call"]: row for row in rows}


def test_batch_over_fixtures_records_bad_files_and_goes_on(fixtures_dir: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    for name in ("abusive_en", "calm_en", "threat_en", "angry_fr"):
        link_fixture(fixtures_dir, name, calls)
    reasons = bad_recordings(calls, fixtures_dir)
    out = tmp_path / "out"

    result = cli("replay", str(calls), "--out", str(out), "--jobs", "2")

    assert result.returncode == 1, result.stderr  # some calls failed, but the batch finished
    assert "Traceback" not in result.stderr
    rows = summary_rows(out)
    assert set(rows) == {"abusive_en", "calm_en", "threat_en", "angry_fr", *reasons}
    for name, reason in reasons.items():
        assert reason in rows[name]["error"] and str(calls / f"{name}.wav") in rows[name]["error"]
        assert f"{calls / name}.wav" in result.stderr
    abusive, calm, threat, angry = (rows[n] for n in ("abusive_en", "calm_en", "threat_en", "angry_fr"))
    assert not any(row["error"] for row in (abusive, calm, threat, angry))
    assert abusive["level_reached"] == "release" and int(abusive["insult"]) >= 3
    assert float(abusive["duration_s"]) == pytest.approx(85.0, abs=0.1)
    assert int(abusive["prompts"]) >= 4 and abusive["lang"] == "en"
    assert calm["level_reached"] == "calm" and calm["prompts"] == "0"
    assert all(calm[c] == "0" for c in ("profanity", "insult", "threat", "shouting"))
    assert int(threat["threat"]) >= 1 and int(threat["alerts"]) >= 1
    assert angry["level_reached"] == "tense" and int(angry["profanity"]) >= 1 and angry["insult"] == "0"
    assert angry["lang"] == "fr"
    for name in rows:  # every call, failed or not, has a finished events file
        assert events_complete(out / f"{name}.events.jsonl")
    assert not list(out.glob("*.part"))
    # the events file is the call's JSONL: every line a typed event of that call, the summary among them
    events = [json.loads(line) for line in (out / "abusive_en.events.jsonl").read_text().splitlines()]
    assert {e["call"] for e in events} == {"abusive_en"}
    assert [e["type"] for e in events if e["type"] in ("summary", "call_end")] == ["summary", "call_end"]
    assert "Mark Dunn" in json.dumps(events)  # the call.json sidecar beside the recording was used


def test_interrupted_batch_resumes_without_redoing_finished_calls(fixtures_dir: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    names = [f"call{i:02d}" for i in range(16)]
    for name in names:
        link_fixture(fixtures_dir, "abusive_en", calls, as_name=name)
    (calls / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "callguard.cli", "replay", str(calls), "--out", str(out), "--jobs", "2"]
    # A runner that started us in the background may have left SIGINT ignored, and a child inherits
    # that: give the batch the default disposition, as a terminal's Ctrl-C would find it.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "summary.csv").exists() and len(read_summary(out / "summary.csv")) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the batch ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    first = {o.call: o for o in read_summary(out / "summary.csv")}
    assert 3 <= len(first) < len(names) + 1, "the interruption came too late to test anything"
    finished = {name for name, o in first.items() if not o.failed}
    stamps = {name: (out / f"{name}.events.jsonl").stat().st_mtime_ns for name in finished}
    for name in finished:
        assert events_complete(out / f"{name}.events.jsonl")

    resumed = cli("replay", str(calls), "--out", str(out), "--jobs", "2", "--resume")

    assert resumed.returncode == 1, resumed.stderr  # empty.wav still fails
    rows = summary_rows(out)
    assert set(rows) == {*names, "empty"}
    assert rows["empty"]["error"].endswith("empty file")
    for name in names:
        assert rows[name]["level_reached"] == "release", rows[name]
        assert events_complete(out / f"{name}.events.jsonl")
    for name, stamp in stamps.items():  # finished calls were neither replayed nor rewritten
        assert (out / f"{name}.events.jsonl").stat().st_mtime_ns == stamp
        assert rows[name]["processing_s"] == f"{first[name].processing_s:.2f}"
    assert f"({len(finished)} kept from an earlier run)" in resumed.stderr
    assert not list(out.glob("*.part"))


def test_resume_replays_a_call_whose_events_file_is_incomplete(fixtures_dir: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    for name in ("calm_en", "threat_en"):
        link_fixture(fixtures_dir, name, calls)
    out = tmp_path / "out"
    assert cli("replay", str(calls), "--out", str(out), "--jobs", "1", "--quiet").returncode == 0
    calm_events = out / "calm_en.events.jsonl"
    threat_events = out / "threat_en.events.jsonl"
    kept_stamp = threat_events.stat().st_mtime_ns
    lines = calm_events.read_text().splitlines()
    calm_events.write_text("\n".join(lines[: len(lines) // 2]) + '\n{"call": "calm_en", "ty')  # torn
    assert not events_complete(calm_events)

    resumed = cli("replay", str(calls), "--out", str(out), "--jobs", "1", "--quiet", "--resume")

    assert resumed.returncode == 0, resumed.stderr
    assert calm_events.read_text().splitlines() == lines
    assert threat_events.stat().st_mtime_ns == kept_stamp
    assert set(summary_rows(out)) == {"calm_en", "threat_en"}


def test_a_model_is_loaded_once_per_worker_and_kept_for_every_call(
    ko_model_path: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(clip), "hello i need help with my bill"], check=True
    )
    audio, rate = soundfile.read(clip, dtype="int16")
    soundfile.write(tmp_path / "a.wav", np.concatenate([np.zeros(rate // 2, np.int16), audio]), rate)
    soundfile.write(tmp_path / "b.wav", np.concatenate([audio, np.zeros(rate // 2, np.int16)]), rate)
    options = ReplayOptions(Config(), model=str(ko_model_path))
    state = WorkerState(ko_model_path)
    loaded = state.model(ko_model_path)
    outcomes = [
        run_call(CallJob(name, tmp_path / f"{name}.wav"), options, tmp_path, state) for name in ("a", "b")
    ]
    assert [o.error for o in outcomes] == ["", ""]
    assert state.model(ko_model_path) is loaded
    for name in ("a", "b"):  # the real recogniser heard both calls
        events = [json.loads(line) for line in (tmp_path / f"{name}.events.jsonl").read_text().splitlines()]
        assert any(e["type"] == "final" and e["text"] for e in events), events


def test_collect_calls_expands_folders_and_globs_and_keeps_names_unique(tmp_path: Path) -> None:
    for folder in ("north", "south"):
        (tmp_path / folder).mkdir()
        soundfile.write(tmp_path / folder / "call.wav", np.zeros(800, np.int16), 8000)
    (tmp_path / "north" / "call.transcript.json").write_text('{"words": []}')
    (tmp_path / "north" / "notes.txt").write_text("not audio")
    soundfile.write(tmp_path / "other.flac", np.zeros(800, np.int16), 8000)

    jobs = collect_calls([str(tmp_path / "north"), str(tmp_path / "s*" / "*.wav"), tmp_path / "other.flac"])

    assert [(j.name, j.audio.parent.name) for j in jobs] == [
        ("call", "north"),
        ("call-2", "south"),
        ("other", tmp_path.name),
    ]
    assert jobs[0].transcript == tmp_path / "north" / "call.transcript.json" and jobs[1].transcript is None
    assert collect_calls([str(tmp_path / "north")], sidecars=False)[0].transcript is None
    missing = collect_calls([str(tmp_path / "nothing-*.wav")])
    assert [j.name for j in missing] == ["nothing-*"]  # kept, so the summary says "file not found"
    with pytest.raises(ConfigError, match="--transcript: applies to one call, got 3"):
        collect_calls([str(tmp_path)], transcript=tmp_path / "north" / "call.transcript.json")


def test_batch_flags_need_out_and_single_call_keeps_its_timeline(fixtures_dir: Path, tmp_path: Path) -> None:
    wav = link_fixture(fixtures_dir, "threat_en", tmp_path / "calls")
    needs_out = cli("replay", str(wav), "--resume")
    assert needs_out.returncode == 1 and "--resume: needs --out DIR" in needs_out.stderr
    # one call without --out: the timeline as before, sidecars only when given
    single = cli("replay", str(wav), "--transcript", str(wav.with_suffix("")) + ".transcript.json")
    assert single.returncode == 0, single.stderr
    assert "ALERT PROMPT" in single.stdout and not (tmp_path / "calls" / "summary.csv").exists()
    events = tmp_path / "events.jsonl"
    several = cli("replay", str(wav), str(fixtures_dir / "calm_en.wav"), "--events", str(events))
    assert several.returncode == 0, several.stderr
    assert f"== {wav}" in several.stdout and "ALERT PROMPT" in several.stdout
    calls = {json.loads(line)["call"] for line in events.read_text().splitlines()}
    assert calls == {str(wav), str(fixtures_dir / "calm_en.wav")}


def test_a_truncated_recording_replays_what_it_holds(fixtures_dir: Path, tmp_path: Path) -> None:
    """A recorder that crashed mid-call: the batch replays the half it holds and says where it ends."""
    calls = tmp_path / "calls"
    calls.mkdir()
    whole = (fixtures_dir / "abusive_en.wav").read_bytes()
    (calls / "cut.wav").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    result = cli("replay", str(calls), "--out", str(out))
    assert result.returncode == 0, result.stderr
    row = summary_rows(out)["cut"]
    assert not row["error"] and float(row["duration_s"]) == pytest.approx(42.5, abs=0.1)
    events = [json.loads(line) for line in (out / "cut.events.jsonl").read_text().splitlines()]
    notices = [e for e in events if e["type"] == "notice" and e["code"] == "truncated"]
    assert len(notices) == 1 and notices[0]["t"] == pytest.approx(42.5, abs=0.1)
    assert "85.0 s its header promised" in notices[0]["message"]


def test_collect_calls_lists_fsspec_urls_with_their_sidecars(tmp_path: Path) -> None:
    """file:// URLs through fsspec's local filesystem: a folder, a pattern, a file; sidecars by URL."""
    pytest.importorskip("fsspec")
    archive = tmp_path / "archive" / "2026-11-03"
    archive.mkdir(parents=True)
    for name in ("a", "b"):
        soundfile.write(archive / f"{name}.wav", np.zeros(800, np.int16), 8000)
    (archive / "a.transcript.json").write_text('{"words": []}')
    (archive / "a.call.json").write_text("{}")

    folder = collect_calls([f"file://{tmp_path / 'archive'}"])
    pattern = collect_calls([f"file://{archive}/b*.wav"])

    assert [(job.name, job.url) for job in folder] == [
        ("a", f"file://{archive}/a.wav"),
        ("b", f"file://{archive}/b.wav"),
    ]
    assert folder[0].transcript_url == f"file://{archive}/a.transcript.json"
    assert folder[0].call_info_url == f"file://{archive}/a.call.json"
    assert folder[1].transcript_url == "" and folder[0].transcript is None  # read by the worker, by URL
    assert [job.url for job in pattern] == [f"file://{archive}/b.wav"]
    assert folder[0].location == f"file://{archive}/a.wav"
