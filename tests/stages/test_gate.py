"""The non-speech gate on real material: real voices pass, hold music, tones, DTMF and noise do not.

`frame.speech` comes from the real webrtcvad (aggressiveness 2), as in the pipeline. "True speech
frames" are the frames of a speech clip that the VAD marks as speech; the rates asserted are the
ones measured on these fixtures, with a little margin. The generated calls (tests/fixtures/generated)
go through the pipeline's own Framer and VoiceActivityDetector, and their truth spans say what is speech.
Music and noise are blocked only after `hold_ms` (1.5 s) of them, so block rates are measured after it.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
import webrtcvad

from callguard.audio.files import probe, read_blocks
from callguard.audio.framing import Framer
from callguard.core.config import Config, GateConfig
from callguard.core.errors import ConfigError
from callguard.core.events import Event, Frame, NonSpeech
from callguard.stages.gate import BAND_COUNT, BAND_HI_HZ, BAND_LO_HZ, NonSpeechGate, SpectralAnalyser
from callguard.stages.vad import VoiceActivityDetector, VoiceCheck, VoiceCheckPool
from callguard.testing import run_frames

SOUNDS = Path("/usr/share/asterisk/sounds")
MOH = Path("/usr/share/asterisk/moh")
# Asterisk prompts that are not speech.
NOT_SPEECH = {"beep.wav", "beeperr.wav", "tt-monkeys.wav", "ascending-2tone.wav", "descending-2tone.wav"}
FRAME_MS = 30

needs_voices = pytest.mark.skipif(not (SOUNDS / "en").exists(), reason="asterisk-core-sounds not installed")
needs_moh = pytest.mark.skipif(not MOH.exists(), reason="asterisk-moh-opsound-wav not installed")


@dataclass
class GateRun:
    vad: np.ndarray  # webrtcvad's verdict per frame
    passed: np.ndarray  # speech after the gate
    events: list[NonSpeech]

    def pass_rate(self, mask: np.ndarray | slice = slice(None)) -> float:
        selected = self.vad[mask]
        return float(self.passed[mask][selected].mean())

    def block_rate(self, mask: np.ndarray | slice = slice(None)) -> float:
        return 1.0 - self.pass_rate(mask)


def load(path: Path, rate: int) -> np.ndarray:
    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, file_rate, rate).astype(np.float32) if file_rate != rate else mono


def at_dbfs(audio: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) + 1e-12
    return (audio * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def tones(
    freqs: tuple[float, ...], seconds: float, rate: int, on: float = 0.0, off: float = 0.0
) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    if on:
        wave = wave * ((t % (on + off)) < on)
    return (0.3 * wave).astype(np.float32)


def dtmf(digits: str, rate: int, on: float, off: float) -> np.ndarray:
    keys = "123A456B789C*0#D"
    rows, cols = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    parts = []
    for digit in digits:
        i = keys.index(digit)
        parts += [tones((rows[i // 4], cols[i % 4]), on, rate), silence(off, rate)]
    return np.concatenate(parts)


def coloured_noise(colour: str, seconds: float, rate: int, dbfs: float, seed: int) -> np.ndarray:
    white = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    if colour == "white":
        return at_dbfs(white, dbfs)
    spectrum = np.fft.rfft(white)
    k = np.maximum(np.arange(len(spectrum)), 1)
    spectrum /= np.sqrt(k) if colour == "pink" else k
    return at_dbfs(np.fft.irfft(spectrum, len(white)), dbfs)


def prompts(lang: str, count: int, seed: int) -> list[Path]:
    files = sorted(p for p in (SOUNDS / lang).glob("*.wav") if p.name not in NOT_SPEECH)
    random.Random(seed).shuffle(files)
    return files[:count]


def voice_clips(lang: str, count: int, rate: int, seed: int = 1) -> np.ndarray:
    return np.concatenate(
        [np.concatenate([load(p, rate), silence(0.3, rate)]) for p in prompts(lang, count, seed)]
    )


def run_gate(
    audio: np.ndarray,
    rate: int,
    frame_ms: int = FRAME_MS,
    config: GateConfig | None = None,
    gate: NonSpeechGate | None = None,
) -> GateRun:
    """Frames marked by webrtcvad alone (no padding: every frame it calls speech) through the gate."""
    size = rate * frame_ms // 1000
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    vad = webrtcvad.Vad(2)
    chunks = [pcm[i * size : (i + 1) * size].tobytes() for i in range(len(pcm) // size)]
    frames = [
        Frame(t=i * frame_ms / 1000, speaker="customer", pcm=chunk, speech=vad.is_speech(chunk, rate))
        for i, chunk in enumerate(chunks)
    ]
    gate = gate or NonSpeechGate(config or GateConfig(), rate, frame_ms)
    out, events = run_frames(gate, frames, len(pcm) / rate)
    verdicts, passed = np.array([f.speech for f in frames]), np.array([f.speech for f in out])
    return GateRun(verdicts, passed, non_speech(events))


def non_speech(events: list[Event]) -> list[NonSpeech]:
    """The gate's events, each checked to be a non-speech run: it says nothing else."""
    assert all(isinstance(e, NonSpeech) for e in events)
    return [e for e in events if isinstance(e, NonSpeech)]


def frames_of(seconds: float, frame_ms: int = FRAME_MS) -> int:
    return round(seconds * 1000 / frame_ms)


@pytest.fixture(scope="session")
def espeak_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    folder = tmp_path_factory.mktemp("espeak")
    lines = {
        "en-us": [
            "I have been waiting on this line for forty minutes and nobody can tell me anything.",
            "Listen to me, I want my money back today, not next week.",
            "Could you please check the order number I gave you earlier?",
        ],
        "fr": [
            "Cela fait une heure que j'attends et personne ne me répond.",
            "Je veux parler à votre responsable tout de suite, s'il vous plaît.",
            "Pouvez-vous vérifier le numéro de commande que je vous ai donné ?",
        ],
    }
    for voice, sentences in lines.items():
        for i, text in enumerate(sentences):
            subprocess.run(
                ["espeak-ng", "-v", voice, "-w", str(folder / f"{voice}-{i}.wav"), text], check=True
            )
    return folder


# --- speech passes ---------------------------------------------------------------------------


@needs_voices
@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_real_voices_pass(lang: str, rate: int) -> None:
    result = run_gate(voice_clips(lang, 80, rate), rate)
    assert result.vad.sum() > 2000  # the fixture really is mostly speech
    assert result.pass_rate() >= 0.99


@pytest.mark.parametrize("rate", [8000, 16000])
def test_espeak_voices_pass(espeak_dir: Path, rate: int) -> None:
    audio = np.concatenate(
        [np.concatenate([load(p, rate), silence(0.3, rate)]) for p in sorted(espeak_dir.iterdir())]
    )
    result = run_gate(audio, rate)
    assert result.vad.sum() > 300
    assert result.pass_rate() >= 0.99


@needs_voices
@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_over_low_noise_passes(rate: int) -> None:
    clean = voice_clips("en", 60, rate, seed=3)
    clean_vad = run_gate(clean, rate).vad  # true speech frames: voiced before the noise was added
    noisy = run_gate(clean + coloured_noise("pink", len(clean) / rate, rate, -45.0, seed=4), rate)
    speech = clean_vad & noisy.vad
    # Measured 0.987..0.995 over en/fr at 8 and 16 kHz; below 99% in the worst case, see the report.
    assert noisy.pass_rate(speech) >= 0.985


def music_then_voices(lang: str, seed: int, music_s: float, gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Hold music (every piece in turn, music_s each), the line quiet for gap_s, a real voice, and again;
    with the true speech frames (those of the voice)."""
    rate = 8000
    music_files = sorted(MOH.glob("*.wav"))
    parts, is_speech = [], []
    for i, voice in enumerate(prompts(lang, 30, seed=seed)):
        start = 20 + i
        music = load(music_files[i % len(music_files)], rate)[
            int(rate * start) : int(rate * (start + music_s))
        ]
        speech, gap = load(voice, rate), silence(gap_s, rate)
        parts += [at_dbfs(music, -22.0), gap, speech]
        is_speech += [np.zeros(len(music) + len(gap), bool), np.ones(len(speech), bool)]
    audio, labels = np.concatenate(parts), np.concatenate(is_speech)
    size = rate * FRAME_MS // 1000
    return audio, labels[: len(labels) // size * size].reshape(-1, size).mean(axis=1) > 0.5


@needs_voices
@needs_moh
@pytest.mark.parametrize(("lang", "seed", "gap_s"), [("fr", 5, 0.5), ("en", 11, 0.3), ("fr", 11, 0.3)])
def test_speech_after_hold_music_passes(lang: str, seed: int, gap_s: float) -> None:
    # Near music every sound the gate would pass is also asked of Silero, whose memory of the music can
    # make it slow to hear a voice (350 ms on "and"): what it blocks waits LOOK_BACK_MS and passes with
    # the voice. Measured 1.000, 0.997 and 1.000 (1.000, 0.998, 1.000 without the check); 0.989 on the
    # first with a 150 ms look-back.
    audio, speech_frames = music_then_voices(lang, seed, music_s=6.0, gap_s=gap_s)
    result = run_gate(audio, 8000)
    assert result.pass_rate(speech_frames) >= 0.995
    # The music events end about where the voice begins, not where Silero first heard it (which can be
    # 350 ms later). Measured 1.9-4.1 % of the voice's frames inside music events: about two frames of
    # each utterance's onset.
    in_events = np.zeros_like(speech_frames)
    for event in result.events:
        in_events[frames_of(event.t) : frames_of(event.t + event.duration)] = True
    assert (in_events & speech_frames).sum() <= 0.06 * speech_frames.sum()
    # 6 s of music each time: the first 1.5 s (hold_ms) passes. Measured 0.68-0.71 (0.63-0.64 without the
    # voice check: the gate's own music mode takes over after hold_ms either way).
    assert result.block_rate(~speech_frames) >= 0.6


@needs_voices
@needs_moh
def test_speech_straight_after_hold_music_is_a_known_limit() -> None:
    # No quiet between the music and the voice: the gate's music mode goes on into the voice until its
    # level or flux breaks away. Measured 0.92 (0.90 without the voice check): a limit, held here.
    audio, speech_frames = music_then_voices("en", 11, music_s=8.0, gap_s=0.0)
    assert run_gate(audio, 8000).pass_rate(speech_frames) >= 0.88


@needs_voices
@needs_moh
@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("music_name", ["reno_project-system.wav", "macroform-cold_day.wav"])
def test_speech_over_hold_music(lang: str, music_name: str) -> None:
    # A customer talking while the hold music plays on their channel: real voices at -20 dBFS, 1 s apart,
    # over music 18 dB and 12 dB below them. True speech frames: the voice alone above -45 dBFS.
    rate = 8000
    parts, labels = [], []
    for voice in prompts(lang, 20, seed=7):
        speech, gap = at_dbfs(load(voice, rate), -20.0), silence(1.0, rate)
        parts += [gap, speech]
        labels += [np.zeros(len(gap), bool), np.abs(speech) > 10 ** (-45 / 20)]
    voices, truth = np.concatenate(parts), np.concatenate(labels)
    size = rate * FRAME_MS // 1000
    frames = len(truth) // size
    speech_frames = truth[: frames * size].reshape(frames, size).mean(axis=1) > 0.3
    music = load(MOH / music_name, rate)[rate * 10 :]
    passed = {}
    for below_db in (18.0, 12.0):
        bed = np.resize(at_dbfs(music, -20.0 - below_db), len(voices))
        passed[below_db] = run_gate(voices + bed, rate).pass_rate(speech_frames)
    # Measured 0.996-0.998 at 18 dB. At 12 dB 0.91-0.97: a voice's first syllables over loud music are
    # blocked until its level or flux breaks from the music (release_db, release_flux). A known limit:
    # release_db = 10 (not 15) blocks 2.4% of such speech instead of 6.6% (four pieces, about 11 and 17 dB
    # below the voices), but lets 48 s more of the 18 min of hold music through.
    assert passed[18.0] >= 0.99, passed
    assert passed[12.0] >= 0.88, passed


# --- non-speech is blocked -------------------------------------------------------------------


@needs_moh
@pytest.mark.parametrize("rate", [8000, 16000])
def test_hold_music_is_blocked(rate: int) -> None:
    after_hold = slice(frames_of(2.0), None)
    rates = {}
    for path in sorted(MOH.glob("*.wav")):
        result = run_gate(load(path, rate)[rate * 30 : rate * 60], rate)
        rates[path.name] = result.block_rate(after_hold)
        assert result.events and {e.kind for e in result.events} == {"music"}
    # Measured: three pieces 0.98-1.00, cold_day 0.97-1.00, the_simplicity 0.84-0.90 (0.75 and 0.46 by the
    # spectral features alone: this excerpt of the_simplicity has beats that swing its level like syllables
    # and rests that end the music; the voice check catches them). It is reported as music, never otherwise.
    beats = rates.pop("macroform-the_simplicity.wav")
    assert beats >= 0.75, beats
    assert min(rates.values()) >= 0.95, rates


@needs_moh
def test_every_hold_music_piece_is_mostly_blocked_from_start_to_end() -> None:
    # Whole pieces, 18 minutes in all: cold_day, robot_dity and morning_coffee make the fixtures' hold music,
    # the_simplicity and reno_project-system are in no fixture, so no threshold was tuned on them alone.
    rate = 8000
    pieces = {path.name: at_dbfs(load(path, rate), -22.0) for path in sorted(MOH.glob("*.wav"))}
    rates = {name: run_gate(audio, rate).block_rate() for name, audio in pieces.items()}
    # Measured: cold_day 0.99, robot_dity 0.99, the_simplicity 0.98, morning_coffee 0.96, reno 0.99. By the
    # spectral features alone (music_memory_s = 0): 0.90, 0.99, 0.62, 0.91, 0.99.
    assert min(rates.values()) >= 0.92, rates
    assert np.mean(list(rates.values())) >= 0.95, rates


@needs_moh
def test_the_voice_check_blocks_drum_hits_the_spectral_features_pass() -> None:
    # cold_day's passage at 52-70 s: drum hits, short chords and noise bursts between silences, whose level
    # swings and spectral change are a voice's; six spectral features could not tell it from speech.
    rate = 8000
    run = run_gate(at_dbfs(load(MOH / "macroform-cold_day.wav", rate), -22.0), rate)
    passage = slice(frames_of(52.0), frames_of(70.0))
    without = GateConfig(music_memory_s=0.0)
    run_without = run_gate(at_dbfs(load(MOH / "macroform-cold_day.wav", rate), -22.0), rate, config=without)
    # Measured 0.91 with the voice check, 0.02 without.
    assert run.block_rate(passage) >= 0.85
    assert run_without.block_rate(passage) <= 0.2
    assert {e.kind for e in run.events} <= {"music", "tone"}  # a held note can pass for a progress tone
    assert sum(e.duration for e in run.events if e.kind == "music") > 0.9 * len(run.vad) * FRAME_MS / 1000


@needs_voices
@needs_moh
@pytest.mark.parametrize("rate", [8000, 16000, 48000])  # Silero's two rates, and one resampled to 16 kHz
def test_voice_check_hears_voices_and_not_hold_music(rate: int) -> None:
    def probabilities(audio: np.ndarray) -> np.ndarray:
        check = VoiceCheck(rate)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        size = rate * FRAME_MS // 1000
        heard = [check.hear(pcm[i * size : (i + 1) * size].tobytes()) for i in range(len(pcm) // size)]
        return np.array([p for p in heard if p is not None])

    voices = probabilities(voice_clips("en", 20, rate))
    music = probabilities(at_dbfs(load(MOH / "reno_project-system.wav", rate)[: rate * 30], -22.0))
    assert np.median(voices) > 0.9  # pauses between prompts included
    assert np.mean(music >= GateConfig().voice_probability) < 0.02


@needs_moh
def test_frames_held_by_the_voice_check_come_out_in_order_and_all() -> None:
    # cold_day from 40 s: music the gate knows, then the drum passage, which the voice check blocks and
    # holds back. Every frame comes out once, in call order, whatever was held.
    rate = 8000
    audio = at_dbfs(load(MOH / "macroform-cold_day.wav", rate)[rate * 40 : rate * 60], -22.0)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    size = rate * FRAME_MS // 1000
    gate = NonSpeechGate(GateConfig(), rate, FRAME_MS)
    out: list[Frame] = []
    held_at_once = 0
    for i in range(len(pcm) // size):
        frames, _ = gate.process(
            Frame(
                t=i * FRAME_MS / 1000,
                speaker="customer",
                pcm=pcm[i * size : (i + 1) * size].tobytes(),
                speech=True,
            )
        )
        held_at_once = max(held_at_once, i + 1 - len(out) - len(frames))
        out += frames
    out += gate.flush(len(pcm) / rate)[0]
    assert [f.t for f in out] == [i * FRAME_MS / 1000 for i in range(len(pcm) // size)]
    assert held_at_once >= 1  # the check did hold frames back
    assert held_at_once <= 450 // FRAME_MS + 1


@needs_moh
def test_a_loaded_voice_check_is_lent_to_one_call_after_another() -> None:
    # The drum passage of cold_day, which the voice check is asked about (see above), heard by two calls
    # in turn: the second borrows the check the first gave back at its end, reset, rather than loading one.
    rate = 8000
    audio = at_dbfs(load(MOH / "macroform-cold_day.wav", rate)[rate * 40 : rate * 60], -22.0)
    pool = VoiceCheckPool()
    lent = []
    for _call in range(2):
        run = run_gate(audio, rate, gate=NonSpeechGate(GateConfig(), rate, FRAME_MS, pool))
        assert run.block_rate(slice(frames_of(12.0), None)) >= 0.85  # the check was at work
        assert pool.idle(rate) == 1  # given back at the end of the call (run_gate flushes the gate)
        check = pool.acquire(rate)
        assert check.probability is None  # reset when lent
        lent.append(check)
        pool.release(check)
    assert lent[0] is lent[1]
    assert pool.idle(rate) == 1 and pool.idle(16000) == 0


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    "name, audio_of",
    [
        ("ring", lambda rate: tones((440, 480), 18, rate, on=2.0, off=4.0)),
        ("busy", lambda rate: tones((480, 620), 8, rate, on=0.5, off=0.5)),
        ("european", lambda rate: tones((425,), 6, rate)),
    ],
)
def test_progress_tones_are_blocked(name: str, audio_of, rate: int) -> None:
    result = run_gate(audio_of(rate), rate)
    assert result.vad.sum() > 50  # the VAD does take them for speech
    assert result.block_rate() >= 0.95
    assert result.events and {e.kind for e in result.events} == {"tone"}


@pytest.mark.parametrize("rate", [8000, 16000])
def test_dtmf_is_blocked(rate: int) -> None:
    fast = run_gate(dtmf("0123456789*#ABCD0123456789", rate, on=0.08, off=0.08), rate)
    slow = run_gate(dtmf("0123456789", rate, on=0.2, off=0.3), rate)
    # Every frame the VAD marks, onsets and hangover included: measured 0.88 and 0.94.
    assert fast.block_rate() >= 0.85
    assert slow.block_rate() >= 0.9
    assert {e.kind for e in fast.events + slow.events} == {"tone"}


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("colour, dbfs", [("white", -30.0), ("pink", -25.0), ("pink", -30.0)])
def test_steady_noise_is_blocked(colour: str, dbfs: float, rate: int) -> None:
    if colour == "white" and rate == 16000:
        dbfs = -24.0  # spread up to 8 kHz, white noise needs more level to fool the VAD in the voice band
    result = run_gate(coloured_noise(colour, 8.0, rate, dbfs, seed=7), rate)
    after_hold = slice(frames_of(2.0), None)
    assert result.vad[after_hold].sum() > 50
    assert result.block_rate(after_hold) >= 0.95
    assert result.pass_rate(slice(0, frames_of(1.4))) == 1.0  # nothing is blocked before hold_ms
    assert {e.kind for e in result.events} == {"noise"}


# --- events, frame lengths, configuration ----------------------------------------------------


def test_events_report_kind_start_and_duration() -> None:
    rate = 8000
    audio = np.concatenate([silence(1.0, rate), tones((425,), 3.0, rate), silence(2.0, rate)])
    result = run_gate(audio, rate)
    assert len(result.events) == 1
    event = result.events[0]
    assert event.kind == "tone" and event.to_dict()["type"] == "tone" and event.speaker == "customer"
    assert event.t == pytest.approx(1.0 + 0.09, abs=0.07)  # blocked after tone_ms of steady tone
    assert event.duration == pytest.approx(3.0 - 0.09, abs=0.15)


def test_flush_reports_the_open_run() -> None:
    rate = 8000
    gate = NonSpeechGate(GateConfig(), rate, FRAME_MS)
    pcm = (tones((425,), 1.5, rate) * 32767).astype(np.int16)
    size = rate * FRAME_MS // 1000
    for i in range(len(pcm) // size):
        frames, events = gate.process(
            Frame(t=i * 0.03, speaker="agent", pcm=pcm[i * size : (i + 1) * size].tobytes(), speech=True)
        )
        assert events == []
    assert [f.speech for f in frames] == [False]
    held, (event,) = gate.flush(1.5)
    assert held == []
    assert (event.kind, event.speaker) == ("tone", "agent")
    assert event.duration == pytest.approx(1.5 - 0.09, abs=0.05)
    assert gate.flush(1.5) == ([], [])


def test_frames_the_vad_calls_silence_are_returned_untouched() -> None:
    gate = NonSpeechGate(GateConfig(), 8000, FRAME_MS)
    frame = Frame(
        t=0.0, speaker="customer", pcm=(tones((425,), 0.03, 8000) * 32767).astype(np.int16).tobytes()
    )
    for _ in range(10):
        out, _ = gate.process(frame)
        assert out == [frame] and out[0] is frame


@pytest.mark.parametrize("frame_ms", [10, 20])
def test_short_frames_block_tones_and_pass_speech(frame_ms: int, espeak_dir: Path) -> None:
    rate = 16000
    speech = np.concatenate([load(p, rate) for p in sorted(espeak_dir.glob("en-us-*.wav"))])
    assert run_gate(speech, rate, frame_ms).pass_rate() >= 0.99
    assert run_gate(tones((480, 620), 6, rate, on=0.5, off=0.5), rate, frame_ms).block_rate() >= 0.9


def test_disabled_gate_passes_everything() -> None:
    result = run_gate(tones((425,), 3.0, 8000), 8000, config=GateConfig(enabled=False))
    assert result.vad.sum() > 50
    assert result.pass_rate() == 1.0 and result.events == []


def test_gate_settings_are_range_checked() -> None:
    with pytest.raises(ConfigError, match=r"gate\.music_flux.*between"):
        Config().with_overrides(gate={"music_flux": 50.0})
    with pytest.raises(ConfigError, match=r"gate\.window_ms"):
        Config().with_overrides(gate={"window_ms": 10})


# --- the generated calls, through the pipeline's own framer and VAD ----------------------------

SPEECH_FIXTURES = [
    "abusive_en",
    "abusive_fr",
    "abusive_en_ulaw",
    "abusive_stereo_en",
    "calm_en",
    "calm_fr",
    "angry_en",
    "threat_en",
    "real_typical_en",
    "real_typical_fr",
    "real_hold_en",
    "real_noise_en",
    "clip_speech_espeak_en",
    "clip_speech_espeak_fr",
    "clip_speech_real_en",
    "clip_speech_real_fr",
]


@dataclass
class ChannelRun:
    """One channel of a generated call after VAD and gate, with its truth spans."""

    times: np.ndarray  # call time of each frame
    vad: np.ndarray  # the VAD's (padded) verdict per frame
    passed: np.ndarray  # speech after the gate
    events: list[NonSpeech]
    speech_spans: list[tuple[float, float]]
    nonspeech_spans: list[tuple[str, float, float]]

    def inside(self, spans: list[tuple[float, float]]) -> np.ndarray:
        mask = np.zeros(len(self.times), bool)
        for start, end in spans:
            mask |= (self.times >= start) & (self.times < end)
        return mask


def gate_fixture(path: Path, truth: dict[str, Any]) -> dict[str, ChannelRun]:
    config = Config()
    rate, frame_ms = config.audio.rate, config.audio.frame_ms
    info = probe(path, config.audio)
    runs = {}
    for channel, role in enumerate(info.roles):
        framer = Framer(role, rate, frame_ms)
        framed = [frame for block in read_blocks(info, rate) for frame in framer.push(block[:, channel])]
        # One stage after the other (not a FrameChain): the VAD's frames are the gate's input, compared
        # with what the gate lets out.
        decided, _ = run_frames(VoiceActivityDetector(config.vad, rate, frame_ms, role), framed, framer.t)
        passed, events = run_frames(NonSpeechGate(config.gate, rate, frame_ms), decided, framer.t)
        runs[role] = ChannelRun(
            np.array([f.t for f in decided]),
            np.array([f.speech for f in decided]),
            np.array([f.speech for f in passed]),
            non_speech(events),
            [(u["start"], u["end"]) for u in truth["utterances"] if u["speaker"] == role],
            [(n["kind"], n["start"], n["end"]) for n in truth["nonspeech"] if n["speaker"] == role],
        )
    return runs


@pytest.fixture(scope="session")
def gated_fixture(
    fixture_call: Callable[[str], Path], fixture_truth: Callable[[str], dict[str, Any]]
) -> Callable[[str], dict[str, ChannelRun]]:
    """gated_fixture("real_hold_en") -> each channel's run through VAD and gate, computed once per session."""
    done: dict[str, dict[str, ChannelRun]] = {}

    def get(name: str) -> dict[str, ChannelRun]:
        if name not in done:
            done[name] = gate_fixture(fixture_call(name), fixture_truth(name))
        return done[name]

    return get


@pytest.mark.parametrize("name", SPEECH_FIXTURES)
def test_fixture_speech_is_not_lost(name: str, gated_fixture: Callable[[str], dict[str, ChannelRun]]) -> None:
    for role, run in gated_fixture(name).items():
        if not run.speech_spans:
            continue
        speech = run.vad & run.inside(run.speech_spans)
        assert speech.sum() > 100, f"{name}/{role}: too little true speech for the test to mean anything"
        lost = float(1.0 - run.passed[speech].mean())
        # Measured 0.00 on every channel but real_noise_en/customer (0.0035); 0.03-0.59 before the hysteresis.
        assert lost <= 0.01, f"{name}/{role}: {lost:.2%} of true speech frames blocked"
        for event in run.events:  # no music, tone or noise reported over the speaker's own words
            assert event.duration > 0, f"{name}/{role}: {event} is empty"
            overlap = max(
                (min(event.t + event.duration, end) - max(event.t, start) for start, end in run.speech_spans),
                default=0.0,
            )
            # An event starts where the music or noise began, which may be a fading word's last frames.
            assert overlap <= 0.2, f"{name}/{role}: {event} overlaps speech by {overlap:.2f} s"


def test_fixture_speech_over_line_noise_passes_and_pauses_are_noise(
    gated_fixture: Callable[[str], dict[str, ChannelRun]],
) -> None:
    runs = gated_fixture("real_noise_en")
    for role in ("customer", "agent"):
        run = runs[role]
        speech = run.vad & run.inside(run.speech_spans)
        assert run.passed[speech].mean() >= 0.99
        assert run.events and {e.kind for e in run.events} == {"noise"}
    # The long pauses between the customer's utterances are blocked as noise once hold_ms has passed.
    customer = runs["customer"]
    blocked_s = sum(e.duration for e in customer.events)
    assert blocked_s > 20.0, customer.events


def test_fixture_hold_music_is_one_music_event(gated_fixture: Callable[[str], dict[str, ChannelRun]]) -> None:
    run = gated_fixture("real_hold_en")["customer"]
    ((kind, start, end),) = run.nonspeech_spans
    assert kind == "music"
    music = run.vad & run.inside([(start, end)])
    assert music.sum() > 500
    # Measured 0.948: all but the first hold_ms.
    assert 1.0 - run.passed[music].mean() >= 0.9
    in_music = [e for e in run.events if e.t < end and e.t + e.duration > start]
    assert len(in_music) == 1, run.events
    (event,) = in_music
    assert event.kind == "music"
    assert event.t == pytest.approx(start, abs=0.5)  # reported from where it began, not where blocking began
    assert event.duration == pytest.approx(end - start, abs=1.0)


@pytest.mark.parametrize(
    "name, kind, min_block",
    [
        ("clip_music", "music", 0.9),  # measured 0.925
        ("clip_ring_eu", "tone", 0.95),  # measured 0.973
        ("clip_ring_us", "tone", 0.95),  # measured 0.970
        ("clip_busy_us", "tone", 0.95),  # measured 0.983
        ("clip_dtmf", "tone", 0.9),  # measured 0.917
    ],
)
def test_fixture_non_speech_clips_are_blocked(
    name: str, kind: str, min_block: float, gated_fixture: Callable[[str], dict[str, ChannelRun]]
) -> None:
    run = gated_fixture(name)["customer"]
    spans = [(start, end) for _, start, end in run.nonspeech_spans]
    marked = run.vad & run.inside(spans)
    assert marked.sum() > 50  # the VAD does take them for speech
    assert 1.0 - run.passed[marked].mean() >= min_block
    assert {e.kind for e in run.events} == {kind}


@pytest.mark.slow
def test_fixture_long_music_and_noise_are_blocked(
    gated_fixture: Callable[[str], dict[str, ChannelRun]],
) -> None:
    music = gated_fixture("long_music_5min")["customer"]
    assert 1.0 - music.passed[music.vad].mean() >= 0.9  # measured 0.916
    assert {e.kind for e in music.events} <= {"music", "tone"}
    assert max(e.duration for e in music.events) > 100.0
    # The VAD marks the noise mostly in its first seconds, before hold_ms has passed: measured 0.755
    # (customer, 200 marked frames) and 0.63 (agent, 70 marked frames).
    noise = gated_fixture("long_noise_5min")
    assert 1.0 - noise["customer"].passed[noise["customer"].vad].mean() >= 0.7
    assert 1.0 - noise["agent"].passed[noise["agent"].vad].mean() >= 0.5
    assert {e.kind for run in noise.values() for e in run.events} == {"noise"}


def reference_band_db(window: np.ndarray, rate: int) -> np.ndarray:
    """Band levels the plain way: Hann window, zero-padded FFT, mean power of the bins in each band."""
    nfft = 1 << (len(window) - 1).bit_length()
    power = np.abs(np.fft.rfft(window / 32768.0 * np.hanning(len(window)), nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / rate)
    edges = np.geomspace(BAND_LO_HZ, BAND_HI_HZ, BAND_COUNT + 1)
    in_band = (freqs >= BAND_LO_HZ) & (freqs <= BAND_HI_HZ)
    means = [power[in_band & (freqs >= lo) & (freqs < hi)].mean() for lo, hi in itertools.pairwise(edges)]
    return 10 * np.log10(np.array(means) + 1e-12)


@pytest.mark.parametrize(("rate", "frame_ms"), [(8000, 30), (16000, 30), (16000, 10)])
def test_spectrum_by_matrix_product_equals_the_fft(rate: int, frame_ms: int) -> None:
    """The analyser's precomputed DFT gives the band levels an FFT gives, on noise and on a voice-like mix."""
    analyser = SpectralAnalyser(GateConfig(), rate, frame_ms)
    t = np.arange(rate) / rate
    mix = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1330 * t)
    noise = np.random.default_rng(rate + frame_ms).normal(0, 0.1, rate)
    audio = np.round((mix + noise) * 32767).astype(np.int16)
    hop, size = rate * frame_ms // 1000, rate * 30 // 1000
    for k in range(len(audio) // hop):
        features = analyser.analyse(audio[k * hop : (k + 1) * hop].tobytes())
        if (k + 1) * hop < size:
            continue  # the first 30 ms are not all heard yet
        window = audio[(k + 1) * hop - size : (k + 1) * hop].astype(np.float64)
        assert features.band_db == pytest.approx(reference_band_db(window, rate), abs=0.01)
        assert features.level_db == pytest.approx(10 * np.log10(np.mean((window / 32768) ** 2)), abs=0.001)
