"""The generated calls are what their ground truth says: rates, codecs, timings, levels and words."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import webrtcvad

from scripts.make_fixtures import (
    DEFAULT_NAMES,
    LONG_NAMES,
    RECIPES,
    SAMPLE_DIR,
    SAMPLE_NAME,
    FixtureError,
    build,
    load_transcript,
    load_truth,
    vosk_words,
)

FRAME_S = 0.05
SILENCE_CEILING_DBFS = -50.0  # between utterances only the -70 dBFS noise floor may be heard
SPEECH_FLOOR_DBFS = -45.0
GUARD_S = 0.1  # keep level checks this far from span edges (resampling and codec ringing)


def _read(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    return audio, rate


def _dbfs(x: np.ndarray) -> float:
    return 20 * math.log10(max(float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0, 1e-10))


def _span(channel: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return channel[round(start * rate) : round(end * rate)]


def _frame_levels(channel: np.ndarray, rate: int) -> np.ndarray:
    n = int(FRAME_S * rate)
    frames = channel[: len(channel) // n * n].reshape(-1, n)
    return 10 * np.log10(np.maximum(np.mean(np.square(frames), axis=1), 1e-20))


def _covered(frame_starts: np.ndarray, spans: list[tuple[float, float]], guard: float) -> np.ndarray:
    """Frames that touch any span widened by `guard`."""
    mask = np.zeros(len(frame_starts), dtype=bool)
    for start, end in spans:
        mask |= (frame_starts + FRAME_S > start - guard) & (frame_starts < end + guard)
    return mask


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_fixture_reads_back_as_its_truth_says(fixture_call: Callable[[str], Path], name: str) -> None:
    wav = fixture_call(name)
    truth = load_truth(wav)
    info = sf.info(str(wav))
    assert truth["call"] == name
    assert info.samplerate == truth["rate"]
    assert info.channels == len(truth["channels"])
    assert info.subtype == truth["encoding"]
    assert abs(info.frames / info.samplerate - truth["duration"]) < 1.5 / info.samplerate
    assert set(truth["channels"]) <= {"customer", "agent"}
    audio, _ = _read(wav)
    assert np.max(np.abs(audio)) < 0.99, "clipped"
    for key in ("utterances", "nonspeech"):
        assert isinstance(truth[key], list)


def test_telephony_copies_are_really_mu_law_and_a_law(fixture_call: Callable[[str], Path]) -> None:
    copies = {"abusive_en_ulaw": "ULAW", "abusive_en_alaw": "ALAW", "abusive_fr_ulaw": "ULAW",
              "abusive_fr_alaw": "ALAW", "abusive_stereo_en_ulaw": "ULAW"}  # fmt: skip
    for name, subtype in copies.items():
        info = sf.info(str(fixture_call(name)))
        assert (info.samplerate, info.subtype) == (8000, subtype), name
    assert sf.info(str(fixture_call("abusive_stereo_en_ulaw"))).channels == 2


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_speech_where_the_truth_says_and_quiet_elsewhere(
    fixture_call: Callable[[str], Path], name: str
) -> None:
    _check_levels_against_truth(fixture_call(name))


def _check_levels_against_truth(wav: Path) -> None:
    """Utterances carry speech, non-speech spans sit at their stated level, and the rest is near silence."""
    truth = load_truth(wav)
    audio, rate = _read(wav)
    for c, role in enumerate(truth["channels"]):
        channel = audio[:, c]
        utterances = [(u["start"], u["end"]) for u in truth["utterances"] if u["speaker"] == role]
        spans = [s for s in truth["nonspeech"] if s["speaker"] == role]
        for start, end in utterances:
            assert 0 <= start < end <= truth["duration"]
            level = _dbfs(_span(channel, rate, start, end))
            assert level > SPEECH_FLOOR_DBFS, f"{role} utterance at {start} s is at {level:.1f} dBFS"
        for span in spans:
            assert 0 <= span["start"] < span["end"] <= truth["duration"] + 1e-3
        levels = _frame_levels(channel, rate)
        starts = np.arange(len(levels)) * FRAME_S
        speech = _covered(starts, utterances, GUARD_S)
        nonspeech = _covered(starts, [(s["start"], s["end"]) for s in spans], GUARD_S)
        quiet = ~speech & ~nonspeech
        assert quiet.any() or nonspeech.any() or speech.all()
        loudest = float(levels[quiet].max()) if quiet.any() else -120.0
        assert loudest < SILENCE_CEILING_DBFS, f"{role}: {loudest:.1f} dBFS outside every truth span"
        for span in spans:
            # the span's own level, away from any speech over it (line noise sits under speech)
            inside = _covered(starts, [(span["start"] + GUARD_S, span["end"] - GUARD_S)], 0.0)
            inside &= ~speech
            if span["kind"] == "tone":
                inside = _covered(starts, [(span["start"], span["end"])], -0.03)
            measured = 10 * np.log10(np.mean(10 ** (levels[inside] / 10)))
            assert abs(measured - span["level_dbfs"]) < 3.0, (
                f"{span['kind']} at {span['start']} s: {measured:.1f}"
            )


def test_the_shouted_utterances_are_at_least_10_db_louder(
    fixture_truth: Callable[[str], dict[str, Any]], fixture_call: Callable[[str], Path]
) -> None:
    checked = 0
    for name in DEFAULT_NAMES:
        truth = fixture_truth(name)
        if not any(u["shouting"] for u in truth["utterances"]):
            continue
        audio, rate = _read(fixture_call(name))
        for c, role in enumerate(truth["channels"]):
            mine = [u for u in truth["utterances"] if u["speaker"] == role]
            normal = [
                _dbfs(_span(audio[:, c], rate, u["start"], u["end"])) for u in mine if not u["shouting"]
            ]
            for u in (u for u in mine if u["shouting"]):
                shout = _dbfs(_span(audio[:, c], rate, u["start"], u["end"]))
                assert shout - float(np.median(normal)) >= 10.0, f"{name} {role} at {u['start']} s"
                checked += 1
    assert checked >= 8  # angry en/fr (2 each), abusive en/fr, the stereo calls' customer and agent


def test_transcript_words_lie_within_their_utterances(fixture_call: Callable[[str], Path]) -> None:
    for name in DEFAULT_NAMES:
        wav = fixture_call(name)
        truth, words = load_truth(wav), load_transcript(wav)
        expected = [w for u in truth["utterances"] for w in u["text"].split()]
        assert [w["word"] for w in words] == expected, name
        for w in words:
            assert re.fullmatch(r"[\w'\-]+", w["word"]) and w["word"] == w["word"].lower(), w
            owners = [u for u in truth["utterances"] if u["speaker"] == w["speaker"]
                      and u["start"] <= w["start"] <= w["end"] <= u["end"]]  # fmt: skip
            assert len(owners) == 1, f"{name}: {w} is not inside one {w['speaker']} utterance"


def test_vosk_form_of_text() -> None:
    assert vosk_words("Sorry you’re having problems…") == ["sorry", "you're", "having", "problems"]
    assert vosk_words("Taisez-vous, espèce d'idiot !") == ["taisez-vous", "espèce", "d'idiot"]
    with pytest.raises(FixtureError, match="spell out"):
        vosk_words("press 1")


def test_english_abusive_timeline_is_the_one_the_policy_is_tuned_on(
    fixture_truth: Callable[[str], dict[str, Any]],
) -> None:
    truth = fixture_truth("abusive_en")
    got = [(round(u["start"]), u["labels"], u["shouting"]) for u in truth["utterances"]]
    assert got == [
        (1, [], False),
        (8, ["profanity"], True),
        (16, [], False),
        (24, ["insult"], False),
        (50, ["insult"], False),
        (75, ["insult", "profanity"], False),
    ]
    assert abs(truth["duration"] - 85.0) <= 2.0
    assert truth["utterances"][1]["text"] == "this damn router is useless this is bullshit"
    french = fixture_truth("abusive_fr")
    assert [round(u["start"]) for u in french["utterances"]] == [1, 8, 16, 24, 50, 75]
    assert "connard" in french["utterances"][3]["text"]


def test_threat_and_calm_calls_carry_their_labels(fixture_truth: Callable[[str], dict[str, Any]]) -> None:
    for lang in ("en", "fr"):
        threat = fixture_truth(f"threat_{lang}")["utterances"]
        assert threat[0]["labels"] == [] and threat[-1]["labels"] == ["threat"]
        calm = fixture_truth(f"calm_{lang}")["utterances"]
        assert all(u["labels"] == [] and not u["shouting"] for u in calm)
        angry = fixture_truth(f"angry_{lang}")["utterances"]
        assert {label for u in angry for label in u["labels"]} == {"profanity"}
    calm_words = " ".join(u["text"] for u in fixture_truth("calm_en")["utterances"]).split()
    assert {"class", "assess", "computer", "console", "scunthorpe"} <= set(calm_words)


def test_stereo_call_has_the_agent_on_the_right(fixture_call: Callable[[str], Path]) -> None:
    wav = fixture_call("abusive_stereo_en")
    truth = load_truth(wav)
    assert truth["channels"] == ["customer", "agent"]
    audio, rate = _read(wav)
    agent = [u for u in truth["utterances"] if u["speaker"] == "agent"]
    assert len(agent) >= 5 and any(u["shouting"] and u["wpm"] > 250 for u in agent)
    assert all(u["wpm"] < 190 for u in agent if not u["shouting"])
    for u in agent:
        left, right = (_dbfs(_span(audio[:, c], rate, u["start"], u["end"])) for c in (0, 1))
        assert right - left > 30.0


def test_real_voice_calls(fixture_truth: Callable[[str], dict[str, Any]]) -> None:
    typical = fixture_truth("real_typical_en")
    assert 60.0 <= typical["duration"] <= 90.0
    speech = sum(u["end"] - u["start"] for u in typical["utterances"])
    assert 0.4 <= speech / typical["duration"] <= 0.65
    assert {u["speaker"] for u in typical["utterances"]} == {"customer", "agent"}
    assert all(u["voice"].startswith("asterisk en/") for u in typical["utterances"])
    hold = fixture_truth("real_hold_en")
    [music] = [s for s in hold["nonspeech"] if s["kind"] == "music"]
    assert music["speaker"] == "customer" and music["end"] - music["start"] == pytest.approx(30.0)
    assert all(u["end"] <= music["start"] or u["start"] >= music["end"] for u in hold["utterances"])
    noise = fixture_truth("real_noise_en")
    assert {(s["speaker"], s["kind"]) for s in noise["nonspeech"]} == {
        ("customer", "noise"),
        ("agent", "noise"),
    }
    assert all(-45.0 <= s["level_dbfs"] <= -35.0 for s in noise["nonspeech"])


def test_nonspeech_clips(fixture_truth: Callable[[str], dict[str, Any]]) -> None:
    kinds = {name: {s["kind"] for s in fixture_truth(name)["nonspeech"]} for name in DEFAULT_NAMES
             if name.startswith("clip_") and "speech" not in name}  # fmt: skip
    assert kinds["clip_ring_us"] == kinds["clip_busy_us"] == kinds["clip_dtmf"] == {"tone"}
    assert kinds["clip_music"] == {"music"} and kinds["clip_noise_pink"] == {"noise"}
    assert len(fixture_truth("clip_dtmf")["nonspeech"]) == 24
    for name in ("clip_speech_real_en", "clip_speech_real_fr", "clip_speech_espeak_en"):
        truth = fixture_truth(name)
        assert truth["nonspeech"] == [] and sum(u["end"] - u["start"] for u in truth["utterances"]) > 10.0


def test_webrtcvad_hears_the_utterances_and_not_the_noise_floor(fixture_call: Callable[[str], Path]) -> None:
    vad = webrtcvad.Vad(2)
    for name in ("abusive_en", "real_typical_en", "abusive_fr_alaw"):
        wav = fixture_call(name)
        truth = load_truth(wav)
        audio, rate = sf.read(wav, dtype="int16", always_2d=True)
        n = rate * 30 // 1000
        for c, role in enumerate(truth["channels"]):
            pcm = audio[:, c]
            flags = np.array(
                [vad.is_speech(pcm[i : i + n].tobytes(), rate) for i in range(0, len(pcm) - n, n)]
            )
            starts = np.arange(len(flags)) * 0.03
            spans = [(u["start"], u["end"]) for u in truth["utterances"] if u["speaker"] == role]
            inside = _covered(starts, [(s + 0.05, e - 0.05) for s, e in spans], -0.03)
            outside = ~_covered(starts, spans, 0.3)
            assert flags[inside].mean() > 0.6, f"{name} {role}: VAD hears too little of the speech"
            assert flags[outside].mean() < 0.02, f"{name} {role}: VAD fires on the silence"


def test_call_info_sidecars(fixtures_dir: Path) -> None:
    info = json.loads((fixtures_dir / "abusive_en.call.json").read_text())
    assert info == {"customer_name": "Mark Dunn", "company": "Northwind Broadband", "agent_name": "Sam",
                    "transfer_available": True, "transferred_in": False, "language": "en"}  # fmt: skip
    assert json.loads((fixtures_dir / "abusive_fr_ulaw.call.json").read_text())["language"] == "fr"
    assert (
        json.loads((fixtures_dir / "abusive_stereo_en.call.json").read_text())["transfer_available"] is False
    )
    assert not (fixtures_dir / "angry_en.call.json").exists()


def test_committed_sample_is_small_and_complete() -> None:
    files = {p.name: p for p in SAMPLE_DIR.iterdir() if p.is_file()}
    assert sum(p.stat().st_size for p in files.values()) < 1_000_000
    for suffix in (".wav", ".truth.json", ".transcript.json", ".call.json"):
        assert f"{SAMPLE_NAME}{suffix}" in files
    info = sf.info(str(files[f"{SAMPLE_NAME}.wav"]))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
    truth = load_truth(files[f"{SAMPLE_NAME}.truth.json"])
    assert abs(info.frames / 8000 - truth["duration"]) < 1e-3
    assert len(load_transcript(files[f"{SAMPLE_NAME}.wav"])) == sum(
        len(u["text"].split()) for u in truth["utterances"]
    )


def test_build_is_cached_deterministic_and_rebuilds_a_changed_recipe(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    names = ["threat_en", "clip_busy_us", "calm_en_ulaw"]
    paths = build(names, tmp_path)
    for name in names:
        assert paths[name].read_bytes() == (fixtures_dir / f"{name}.wav").read_bytes(), f"{name} differs"
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if not p.name.startswith(".")}
    build(names, tmp_path)
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if not p.name.startswith(".")}
    # a truth file from another recipe version makes its fixture stale
    truth_path = tmp_path / "threat_en.truth.json"
    truth = json.loads(truth_path.read_text())
    current = truth["recipe_hash"]
    truth_path.write_text(json.dumps({**truth, "recipe_hash": "0" * 16}))
    os.utime(tmp_path / "threat_en.wav", ns=(0, 0))
    build(["threat_en"], tmp_path)
    assert json.loads(truth_path.read_text())["recipe_hash"] == current
    assert (tmp_path / "threat_en.wav").stat().st_mtime_ns != 0


def test_unknown_fixture_is_named(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match=r"unknown fixture 'nope'.*abusive_en"):
        build(["nope"], tmp_path)


def test_ko_model_copy_without_upsample_fails_on_8khz_like_the_official_models(
    ko_model_path: Path, ko_model_no_upsample: Path, fixture_call: Callable[[str], Path]
) -> None:
    import vosk

    vosk.SetLogLevel(-1)
    assert "--allow-upsample" in (ko_model_path / "conf" / "mfcc.conf").read_text()
    assert "--allow-upsample" not in (ko_model_no_upsample / "conf" / "mfcc.conf").read_text()
    assert (ko_model_no_upsample / "am").resolve() == (ko_model_path / "am").resolve()
    pcm, rate = sf.read(fixture_call("clip_speech_real_en"), dtype="int16")
    chunk = pcm[: rate // 2].tobytes()
    vosk.KaldiRecognizer(vosk.Model(str(ko_model_path)), rate).AcceptWaveform(chunk)  # upsamples: fine
    recogniser = vosk.KaldiRecognizer(vosk.Model(str(ko_model_no_upsample)), rate)
    with pytest.raises(Exception, match="Failed to process waveform"):
        recogniser.AcceptWaveform(chunk)


@pytest.mark.slow
@pytest.mark.parametrize("name", LONG_NAMES)
def test_long_inputs(fixture_call: Callable[[str], Path], name: str) -> None:
    wav = fixture_call(name)
    truth = load_truth(wav)
    info = sf.info(str(wav))
    assert RECIPES[name].long
    assert (info.samplerate, info.channels) == (8000, 2)
    assert abs(info.frames / 8000 - truth["duration"]) < 1e-3
    assert truth["duration"] in (300.0, 3600.0)
    _check_levels_against_truth(wav)
    if name == "long_call_1h":
        assert len(truth["utterances"]) > 500
        assert all(u["end"] <= truth["duration"] for u in truth["utterances"])
