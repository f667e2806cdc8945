"""Audio in: every format call centers keep, resampled to the pipeline rate, cut into exact frames."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callguard.audio.files import channel_roles, probe, read_blocks
from callguard.audio.framing import Framer
from callguard.core.config import AudioConfig
from callguard.core.errors import AudioError

SUBTYPES = ["PCM_16", "ULAW", "ALAW", "FLOAT"]
FILE_RATES = [8000, 16000, 44100, 48000]
LEFT_HZ, RIGHT_HZ = 440.0, 1000.0
DURATION_S = 1.5


def tones(rate: int, channels: int, seconds: float = DURATION_S) -> np.ndarray:
    """Left channel 440 Hz, right 1 kHz, at half scale: each channel recognisable by its pitch."""
    t = np.arange(round(rate * seconds)) / rate
    columns = [0.5 * np.sin(2 * np.pi * hz * t) for hz in (LEFT_HZ, RIGHT_HZ)[:channels]]
    return np.stack(columns, axis=1).astype(np.float32)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def read_all(path: Path, rate: int, config: AudioConfig | None = None) -> np.ndarray:
    info = probe(path, config or AudioConfig())
    return np.concatenate(list(read_blocks(info, rate)))


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int, int], Path]:
    """One file per (subtype, rate, channels), written by libsndfile."""
    folder = tmp_path_factory.mktemp("recordings")
    made = {}
    for subtype in SUBTYPES:
        for rate in FILE_RATES:
            for channels in (1, 2):
                path = folder / f"{subtype}_{rate}_{channels}.wav"
                soundfile.write(path, tones(rate, channels), rate, subtype=subtype)
                made[subtype, rate, channels] = path
    return made


# ---------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("subtype", SUBTYPES)
@pytest.mark.parametrize("file_rate", FILE_RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_every_format_reads_at_the_pipeline_rate(
    recordings: dict[tuple[str, int, int], Path], subtype: str, file_rate: int, channels: int
) -> None:
    path = recordings[subtype, file_rate, channels]
    info = probe(path, AudioConfig())
    assert (info.rate, info.channels, info.subtype) == (file_rate, channels, subtype)
    assert info.duration == pytest.approx(DURATION_S, abs=1e-4)
    assert info.roles == (("customer",) if channels == 1 else ("customer", "agent"))

    pipeline_rate = 16000
    audio = read_all(path, pipeline_rate)
    assert audio.dtype == np.int16 and audio.shape[1] == channels
    # Resampling keeps the length (to within a sample) and each channel's pitch.
    assert abs(len(audio) - DURATION_S * pipeline_rate) <= 1
    for channel, hz in enumerate((LEFT_HZ, RIGHT_HZ)[:channels]):
        assert dominant_hz(audio[:, channel], pipeline_rate) == pytest.approx(hz, abs=2.0)
        # Half scale in, half scale out (mu-law/A-law are lossy, resampling ripples a little).
        middle = audio[len(audio) // 4 : -len(audio) // 4, channel]
        assert np.abs(middle).max() / 32768 == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("pipeline_rate", [8000, 16000, 32000, 48000])
def test_resampling_to_each_pipeline_rate(
    recordings: dict[tuple[str, int, int], Path], pipeline_rate: int
) -> None:
    audio = read_all(recordings["PCM_16", 44100, 1], pipeline_rate)
    assert abs(len(audio) - DURATION_S * pipeline_rate) <= 1
    assert dominant_hz(audio[:, 0], pipeline_rate) == pytest.approx(LEFT_HZ, abs=2.0)


def test_pcm16_at_the_pipeline_rate_is_bit_exact(tmp_path: Path) -> None:
    samples = np.random.default_rng(7).integers(-32768, 32767, size=(12345, 2), dtype=np.int16)
    path = tmp_path / "exact.wav"
    soundfile.write(path, samples, 8000, subtype="PCM_16")
    assert np.array_equal(read_all(path, 8000), samples)


def test_long_file_is_read_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    soundfile.write(path, tones(8000, 1, seconds=5.3), 8000, subtype="PCM_16")
    blocks = list(read_blocks(probe(path, AudioConfig()), 16000))
    assert len(blocks) >= 5
    assert max(len(b) for b in blocks) <= 1.1 * 16000, "about a second at a time, never the whole call"
    assert abs(sum(len(b) for b in blocks) - 5.3 * 16000) <= 1


@pytest.mark.parametrize("rate", [8000, 16000])
def test_reading_from_a_start_time_skips_exactly_that_much(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "ramp.wav"
    ramp = (np.arange(8000 * 4) % 30000 - 15000).astype(np.int16)  # every sample different nearby
    soundfile.write(path, ramp, 8000, subtype="PCM_16")
    info = probe(path, AudioConfig())
    whole = np.concatenate(list(read_blocks(info, rate)))[:, 0]
    late = np.concatenate(list(read_blocks(info, rate, start_s=2.5)))[:, 0]
    assert len(late) == pytest.approx(len(whole) - 2.5 * rate, abs=2)
    if rate == 8000:  # no resampling: the very samples
        assert np.array_equal(late, whole[-len(late) :])
    else:  # the resampler restarts at the seek; past its filter's start the audio is the same
        tail = slice(rate // 10, len(late) - rate // 10)
        assert np.abs(late[tail].astype(int) - whole[-len(late) :][tail]).max() <= 2
    assert list(read_blocks(info, rate, start_s=10.0)) == []  # past the end: nothing, no error


def test_sox_written_telephony_files(tmp_path: Path) -> None:
    """Files as telephony tools write them (sox), not only as libsndfile does."""
    source = tmp_path / "source.wav"
    soundfile.write(source, tones(8000, 1), 8000, subtype="PCM_16")
    for encoding in ("u-law", "a-law"):
        out = tmp_path / f"{encoding}.wav"
        subprocess.run(["sox", str(source), "-e", encoding, str(out)], check=True)
        audio = read_all(out, 16000)
        assert dominant_hz(audio[:, 0], 16000) == pytest.approx(LEFT_HZ, abs=2.0)


def test_streamed_wav_with_unknown_length_is_read(tmp_path: Path) -> None:
    """sox writing to a pipe cannot seek back to fill in the length: the file is whole all the same."""
    source = tmp_path / "source.wav"
    soundfile.write(source, tones(8000, 1), 8000, subtype="PCM_16")
    raw = subprocess.run(["sox", str(source), "-t", "raw", "-"], check=True, capture_output=True).stdout
    piped = subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", "-", "-t", "wav", "-"],
        input=raw,
        check=True,
        capture_output=True,
    ).stdout
    path = tmp_path / "streamed.wav"
    path.write_bytes(piped)
    assert struct.unpack("<I", piped[40:44])[0] > 0x7FFF0000, "sox wrote its placeholder length"
    assert probe(path, AudioConfig()).duration == pytest.approx(DURATION_S)
    assert len(read_all(path, 8000)) == DURATION_S * 8000


# ---------------------------------------------------------------------------
# Roles


def test_default_roles() -> None:
    assert channel_roles(1, AudioConfig()) == ("customer",)
    assert channel_roles(2, AudioConfig()) == ("customer", "agent")


def test_configured_roles(recordings: dict[tuple[str, int, int], Path]) -> None:
    config = AudioConfig(mono_role="agent", stereo_roles=["agent", "customer"])
    assert probe(recordings["PCM_16", 8000, 1], config).roles == ("agent",)
    assert probe(recordings["PCM_16", 8000, 2], config).roles == ("agent", "customer")


@pytest.mark.parametrize("roles", [["customer"], ["customer", "customer"], ["customer", "agent", "agent"]])
def test_stereo_roles_must_be_two_different_roles(
    recordings: dict[tuple[str, int, int], Path], roles: list[str]
) -> None:
    path = recordings["PCM_16", 8000, 2]
    with pytest.raises(AudioError, match="stereo_roles") as caught:
        probe(path, replace(AudioConfig(), stereo_roles=roles))
    assert caught.value.path == str(path)


def test_three_channels_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "three.wav"
    soundfile.write(path, np.zeros((800, 3), dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="3 channels: expected a mono or stereo recording"):
        probe(path, AudioConfig())


# ---------------------------------------------------------------------------
# Unusable files: one line naming the file and the reason


def one_line_error(path: Path) -> str:
    with pytest.raises(AudioError) as caught:
        probe(path, AudioConfig())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return caught.value.reason


def test_not_found(tmp_path: Path) -> None:
    assert one_line_error(tmp_path / "missing.wav") == "file not found"


def test_folder(tmp_path: Path) -> None:
    assert "is a folder" in one_line_error(tmp_path)


def test_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert one_line_error(path) == "empty file"


@pytest.mark.parametrize("content", [b"hello, not audio", np.random.default_rng(3).bytes(5000)])
def test_junk_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(content)
    assert "not a readable audio file" in one_line_error(path)


def test_truncated_wav_is_read_as_far_as_it_goes(
    recordings: dict[tuple[str, int, int], Path], tmp_path: Path
) -> None:
    source = recordings["PCM_16", 16000, 1]
    whole = source.read_bytes()
    path = tmp_path / "truncated.wav"
    path.write_bytes(whole[: len(whole) // 2])
    full, cut = probe(source, AudioConfig()), probe(path, AudioConfig())
    assert not full.truncated and cut.truncated
    assert cut.promised_s == pytest.approx(full.duration, abs=0.01)
    assert cut.duration == pytest.approx(full.duration / 2, abs=0.01)
    held = np.concatenate(list(read_blocks(cut, 16000)))
    assert len(held) == pytest.approx(cut.duration * 16000, abs=2)


def test_header_only_wav(recordings: dict[tuple[str, int, int], Path], tmp_path: Path) -> None:
    whole = recordings["PCM_16", 16000, 1].read_bytes()
    path = tmp_path / "header.wav"
    path.write_bytes(whole[:44])
    assert one_line_error(path).startswith("truncated")


def test_wav_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 8000)
    assert "no audio" in one_line_error(path)


def test_unsupported_codec(recordings: dict[tuple[str, int, int], Path], tmp_path: Path) -> None:
    data = bytearray(recordings["PCM_16", 8000, 1].read_bytes())
    format_tag = data.index(b"fmt ") + 8
    data[format_tag : format_tag + 2] = struct.pack("<H", 0x9999)  # no codec has this tag
    path = tmp_path / "codec.wav"
    path.write_bytes(bytes(data))
    assert "not a readable audio file" in one_line_error(path)


# ---------------------------------------------------------------------------
# Framer


@pytest.mark.parametrize(("rate", "frame_ms"), [(8000, 10), (8000, 30), (16000, 20), (48000, 30)])
def test_framer_loses_no_sample_whatever_the_block_sizes(rate: int, frame_ms: int) -> None:
    samples = np.random.default_rng(rate + frame_ms).integers(-32768, 32767, size=rate * 2, dtype=np.int16)
    framer = Framer("agent", rate, frame_ms)
    frame_samples = rate * frame_ms // 1000
    sizes = [1, 7, frame_samples - 1, frame_samples, frame_samples + 1, 2 * frame_samples + 3, 0, 997]
    frames, offset, i = [], 0, 0
    while offset < len(samples):
        size = sizes[i % len(sizes)]
        frames.extend(framer.push(samples[offset : offset + size]))
        offset += size
        i += 1
    complete = len(samples) // frame_samples
    assert len(frames) == complete
    joined = np.frombuffer(b"".join(f.pcm for f in frames), dtype=np.int16)
    assert np.array_equal(joined, samples[: complete * frame_samples])
    assert all(len(f.pcm) == 2 * frame_samples for f in frames)
    assert [f.t for f in frames] == [k * frame_samples / rate for k in range(complete)]
    assert all(f.speaker == "agent" and not f.speech for f in frames)
    assert framer.t == complete * frame_samples / rate
    # Each frame carries its own RMS level, however the blocks cut across frames.
    for frame in frames:
        values = np.frombuffer(frame.pcm, dtype=np.int16).astype(np.float64) / 32768.0
        assert frame.level_db == pytest.approx(10 * np.log10(np.mean(values**2)), abs=1e-3)


def test_framer_gives_silence_and_a_quiet_tone_their_levels() -> None:
    rate, samples = 8000, 240
    tone = np.round(3276.8 * np.sin(2 * np.pi * 400 * np.arange(samples) / rate)).astype(np.int16)
    block = np.concatenate([np.zeros(samples, dtype=np.int16), tone, np.full(samples, -32768, np.int16)])
    levels = [f.level_db for f in Framer("agent", rate, 30).push(block)]
    assert levels == pytest.approx([-120.0, -23.01, 0.0], abs=0.02)  # silence, -20 dB sine (-3 - 20), square


def test_framer_times_stay_exact_over_a_long_call() -> None:
    framer = Framer("customer", 8000, 30)
    block = np.zeros(8000, dtype=np.int16)
    last = None
    for _ in range(3600):  # an hour, one-second blocks
        for frame in framer.push(block):
            last = frame
    assert last is not None
    assert last.t == (3600 / 0.03 - 1) * 240 / 8000
    assert framer.t == 3600.0


def test_framer_accepts_a_channel_view_of_a_stereo_block() -> None:
    stereo = np.arange(960, dtype=np.int16).reshape(480, 2)
    frames = list(Framer("customer", 8000, 30).push(stereo[:, 1]))
    assert np.array_equal(np.frombuffer(frames[0].pcm, dtype=np.int16), stereo[:240, 1])


@pytest.mark.parametrize("rate", [1, 4000, 96000])
def test_a_rate_outside_8_to_48_khz_is_refused(rate: int, tmp_path: Path) -> None:
    path = tmp_path / f"rate{rate}.wav"
    soundfile.write(str(path), np.zeros(max(rate // 10, 8), dtype=np.int16), rate, subtype="PCM_16")
    assert one_line_error(path) == f"sample rate {rate} Hz: expected 8000 to 48000 Hz"
