"""The daemon's speech activity, which starts and ends calls when no CTI connector does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from callguard.audio.files import probe, read_blocks
from callguard.core.config import Config, load_config
from callguard.live.daemon import SpeechActivity
from callguard.pipeline.session import CallSession


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def _activity_over(path: Path, config: Config) -> SpeechActivity:
    activity = SpeechActivity(config)
    info = probe(path, config.audio)
    for block in read_blocks(info, config.audio.rate):
        activity.push("customer", block[:, 0])
    return activity


def test_real_speech_counts_as_speech(config: Config, fixture_call: Callable[[str], Path]) -> None:
    activity = _activity_over(fixture_call("clip_speech_real_en"), config)
    assert activity.speech_seconds("customer") >= config.daemon.auto_call_speech_s


@pytest.mark.parametrize("clip", ["clip_music", "clip_ring_us", "clip_busy_us"])
def test_hold_music_and_tones_do_not_start_a_call(
    clip: str, config: Config, fixture_call: Callable[[str], Path]
) -> None:
    """webrtcvad alone hears music and tones as speech; behind the gate they pass for at most
    gate.hold_ms, less than the speech that starts a call (daemon.auto_call_speech_s)."""
    activity = SpeechActivity(config)
    info = probe(fixture_call(clip), config.audio)
    most = 0.0
    for block in read_blocks(info, config.audio.rate):
        for i in range(0, len(block), 800):
            activity.push("customer", block[i : i + 800, 0])
            most = max(most, activity.speech_seconds("customer"))
    assert most < config.daemon.auto_call_speech_s


def test_a_calls_silence_comes_from_its_own_gated_frames(
    config: Config, fixture_call: Callable[[str], Path]
) -> None:
    """Issue 18.3: the daemon ran a second VAD and gate beside every call to see its silence. Now the
    call's own frames say it, in audio time, on the channels that hear audio; hold music is silence."""
    session = CallSession(config, roles=("customer", "agent"))
    session.feed("customer", np.zeros(config.audio.rate * 5, dtype=np.int16))
    # (less what the padded VAD and the gate still hold: a few hundred ms)
    assert session.silent_for() == pytest.approx(5.0, abs=0.5), "no agent audio: the customer's counts"
    for name, speaking in (("clip_speech_real_en", True), ("clip_music", False)):
        info = probe(fixture_call(name), config.audio)
        for block in read_blocks(info, config.audio.rate):
            session.feed("customer", block[:, 0])
        if speaking:
            assert session.silent_for() < 1.5, "speech just heard"
        else:
            # music passes the gate as speech for at most gate.hold_ms, as it does before a call
            most = config.gate.hold_ms / 1000 + 1.0
            assert session.silent_for() >= info.duration - most, "hold music is no speech"


def test_a_generated_token_is_kept_private_and_never_logged(tmp_path: Path) -> None:
    """Issue 17.10: a new token at every start, written to the journal in the panel URL."""
    from callguard.live.daemon import kept_token

    path = tmp_path / "data" / "api-token"
    first = kept_token(path)
    assert len(first) >= 32 and kept_token(path) == first  # the same at the next start
    assert (path.stat().st_mode & 0o777) == 0o600
