"""Smoke test of the benchmark harness (scripts/bench.py) on tiny calls: every figure is in the JSON.

Not a timing assertion: the machine running the tests is shared. The calls are cut from the
generated real-voice call, with a sidecar holding an insult so that a prompt fires; live runs
are paced 20 times faster than real time so the test stays short.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from scripts import bench

TINY_S = 8.0


def _tiny_calls(source: Path, truth: dict[str, Any], music: Path, folder: Path) -> dict[str, Path]:
    audio, rate = soundfile.read(str(source), dtype="int16", always_2d=True)
    tiny = folder / "tiny.wav"
    soundfile.write(str(tiny), audio[: int(TINY_S * rate)], rate, subtype="PCM_16")
    kept = [u for u in truth["utterances"] if u["end"] <= TINY_S]
    assert kept, "the real-voice call has no utterance in its first seconds"
    (folder / "tiny.truth.json").write_text(json.dumps({"utterances": kept, "nonspeech": []}))
    insult = [("you", 1.0, 1.2), ("stupid", 1.25, 1.6), ("idiot", 1.65, 2.0)]
    words = [{"word": w, "start": s, "end": e, "speaker": "customer"} for w, s, e in insult]
    (folder / "tiny.transcript.json").write_text(json.dumps({"words": words}))

    # 2 s of a faint floor, then 2 s of line noise: the idle run splits there, as on long_noise_5min
    noise = np.random.default_rng(7).normal(0.0, 1.0, (4 * rate, 2))
    noise[: 2 * rate] *= 32768 * 10 ** (-70 / 20)
    noise[2 * rate :] *= 32768 * 10 ** (-40 / 20)
    idle = folder / "idle.wav"
    soundfile.write(str(idle), noise.astype(np.int16), rate, subtype="PCM_16")
    spans = [{"speaker": r, "kind": "noise", "start": 2.0, "end": 4.0} for r in ("customer", "agent")]
    (folder / "idle.truth.json").write_text(json.dumps({"utterances": [], "nonspeech": spans}))
    return {"tiny": tiny, "idle": idle, "music": music}


@pytest.fixture
def tiny_bench(
    fixture_call: Callable[[str], Path], fixture_truth: Callable[[str], dict[str, Any]], tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """Runs the benchmark on tiny calls, live runs 20 times faster than real time; returns its JSON."""
    source, music = fixture_call("real_typical_en"), fixture_call("clip_music")
    calls = _tiny_calls(source, fixture_truth("real_typical_en"), music, tmp_path)
    tiny, out = str(calls["tiny"]), tmp_path / "bench.json"

    def run(*options: str) -> dict[str, Any]:
        common = [
            "--out", str(out), "--calls", tiny, "--repeat", "1",
            "--idle-noise", str(calls["idle"]), "--idle-music", str(calls["music"]), "--idle-seconds", "2",
            "--reaction-calls", tiny, "--lag-call", tiny, "--memory-call", tiny, "--speed", "20",
        ]  # fmt: skip
        assert bench.main([*common, *options]) == 0
        return json.loads(out.read_text())

    return run


@pytest.mark.slow  # a minute of the suite on two cores; the partial run below stays in the default run
def test_bench_writes_every_figure(tiny_bench: Callable[..., dict[str, Any]]) -> None:
    results = tiny_bench("--memory-minutes", "1", "--memory-mark-s", "1", "--jobs", "2", "--jobs-copies", "1")

    call = results["calls"]["tiny"]
    for run in ("bare", "oracle", "callguard"):
        assert call[run]["cpu_s"] > 0 and call[run]["cpu_per_audio_s"] > 0
    # the oracle hears only the padded true speech, bare vosk all of both channels
    assert 0 < call["oracle"]["fed_s"] < call["bare"]["fed_s"]
    assert 0 < call["callguard"]["recogniser_cpu_s"] < call["callguard"]["cpu_s"]
    ratios = ("callguard_over_oracle", "callguard_over_oracle_least", "callguard_over_bare")
    for key in (*ratios, "pipeline_share_of_recogniser"):
        assert call[key] > 0, key
    # one round per run here: the median of the rounds' ratios is that round's ratio
    assert call["callguard_over_oracle_of_every_round"] == [call["callguard_over_oracle"]]
    assert call["pipeline_share_of_every_run"] == [call["pipeline_share_of_recogniser"]]

    detector = results["detector"]["tiny"]
    assert detector["transcripts"] >= 1 and detector["detector_cpu_s"] > 0
    assert detector["recogniser_cpu_s"] == call["callguard"]["recogniser_cpu_s"]
    assert detector["share_of_recogniser"] > 0 and detector["ms_per_final"]["p95"] is not None

    assert set(results["idle"]) == {"silence", "noise", "music"}
    # split where the truth says the noise starts
    silence, noise = results["idle"]["silence"]["window_s"], results["idle"]["noise"]["window_s"]
    assert silence[0] == 0.0 and abs(silence[1] - 2.0) <= 0.03 and noise[0] == 2.0
    for idle in results["idle"].values():
        assert idle["audio_s"] > 0 and idle["cpu_percent"] > 0

    reaction = results["reaction"]["reaction_ms"]
    assert reaction["n"] >= 1 and 0 < reaction["median"] <= reaction["p95"]
    lag = results["recogniser_lag"]
    assert lag["words"] >= 1 and lag["lag_ms"]["median"] is not None
    assert None not in results["end_to_end_ms"].values()

    memory = results["memory"]
    assert memory["slope_mb_per_hour"] is not None and memory["rss_end_mb"] > 0
    assert memory["finals_last_window"] >= 0 and len(memory["samples"]) >= 3
    assert results["peak_rss_mb"] >= memory["rss_max_mb"] - 0.1  # both rounded to 0.1 MB

    jobs = results["throughput"]
    assert jobs["measured"], jobs
    assert jobs["jobs_1"]["audio_s_per_wall_s"] > 0 and jobs["jobs_2"]["audio_s_per_cpu_s"] > 0
    assert not jobs["jobs_1"]["failed"] and not jobs["jobs_2"]["failed"]

    names = [line["name"] for line in results["budget"]]
    assert any("oracle" in n for n in names) and any("pipeline work" in n for n in names)
    assert sum(n.startswith("idle on") for n in names) == 3
    assert any("reaction p95" in n for n in names) and any("RSS slope" in n for n in names)
    assert any("whole detector CPU" in n for n in names)
    assert any("detector p95 per utterance (final)" in n for n in names)
    assert any("jobs vs 1 job" in n for n in names)
    assert all(line["mark"] in ("MET", "NOT MET") for line in results["budget"])
    assert "budget" in bench.table(results)


def test_a_partial_run_measures_and_marks_only_its_sections(
    tiny_bench: Callable[..., dict[str, Any]],
) -> None:
    results = tiny_bench("--only", "idle")
    assert results["sections"] == ["idle"] and set(results["idle"]) == {"silence", "noise", "music"}
    assert not {"calls", "memory", "reaction", "throughput"} & set(results)
    assert [line["name"].split(" (")[0] for line in results["budget"]] == [
        "idle on silence", "idle on noise", "idle on music",
    ]  # fmt: skip
    assert "idle (live, model loaded)" in bench.table(results) and "latency" not in bench.table(results)


def _memory(slope: float, stderr: float, finals: int = 105) -> dict[str, Any]:
    return {
        "slope_mb_per_hour": slope,
        "slope_stderr_mb_per_hour": stderr,
        "finals_last_window": finals,
        "audio_s": 3600.0,
        "fit_from_s": 300.0,
        "events_window_s": 600.0,
    }


def test_callguard_over_oracle_pairs_the_runs_of_a_round() -> None:
    def runs(*cpu: float) -> list[bench.RunFigures]:
        return [bench.RunFigures(c, c, c, 10.0, 5.0, recogniser_cpu_s=0.95 * c) for c in cpu]

    # Each round's two runs meet the same machine: round 2 ran fast for both, round 4 for the oracle only.
    oracle, callguard = runs(16.0, 12.0, 16.4, 11.0, 16.2), runs(16.8, 12.6, 17.2, 16.5, 17.0)
    over_oracle, shares = bench.round_ratios(oracle, callguard)
    assert over_oracle == pytest.approx([1.05, 1.05, 17.2 / 16.4, 1.5, 17.0 / 16.2])
    assert statistics.median(over_oracle) == pytest.approx(1.05, abs=0.003)
    assert min(c.cpu_s for c in callguard) / min(o.cpu_s for o in oracle) == pytest.approx(12.6 / 11.0)
    assert shares == pytest.approx([0.05 / 0.95] * 5)


def test_memory_budget_needs_a_fine_measurement_not_a_lucky_estimate() -> None:
    def marks(memory: dict[str, Any]) -> list[bool | None]:
        return [line.met for line in bench.memory_lines(memory)]

    # (indistinguishable from zero, shown at most 2 MB/h)
    assert marks(_memory(1.95, 4.24)) == [True, False]  # under 2 MB/h by its estimate, not by its error bar
    assert marks(_memory(0.3, 0.5)) == [True, True]
    assert marks(_memory(30.0, 2.0)) == [False, False]  # a real drift
    assert marks(_memory(0.5, 6.0)) == [False, False]  # too coarse to mean anything (2 s.e. > 10 MB/h)
    assert marks(_memory(0.3, 0.5, finals=0)) == [False, True]  # flat, but the recogniser stopped


def test_music_vs_speech_measures_every_piece_and_voice(tmp_path: Path) -> None:
    from scripts import music_vs_speech

    if not music_vs_speech.MOH.is_dir() or not music_vs_speech.SOUNDS.joinpath("fr").is_dir():
        pytest.skip("asterisk-moh-opsound-wav and asterisk-core-sounds-{en,fr}-wav not installed")
    out = tmp_path / "figures.json"
    assert music_vs_speech.main(["--prompts", "20", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert len(figures["music"]) == 6 and len(figures["speech"]) == 12
    pieces = [entry for name, entry in figures["music"].items() if "passage" not in name]
    assert all(0.0 <= entry["gate_blocked_share"] <= 1.0 for entry in pieces)
    # What README says of the drum passage: its rhythm is above most conversation's, its shape flux
    # below most clean voices' (and neither apart from every voice, which is why the gate does not
    # use rhythm).
    passage = figures["music"]["cold_day drum passage 52-70 s"]
    clean = figures["speech"]["speech en, noise -60 dBFS"]
    assert passage["rhythm"]["p50"] > clean["rhythm"]["p90"]
    assert passage["shape_flux"]["p50"] < clean["shape_flux"]["p10"]
