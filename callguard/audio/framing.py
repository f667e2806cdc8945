"""One speaker's audio cut into fixed PCM16 frames, each with its level."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from callguard.core.events import Frame, Role

FULL_SCALE_POWER = 32768.0**2
SILENCE_DB = -120.0  # the level of digital silence, and the least level a frame is given
SILENCE_POWER = 10.0 ** (SILENCE_DB / 10.0)


class Framer:
    """Cuts one speaker's stream of any block length into fixed frames."""

    def __init__(self, speaker: Role, rate: int, frame_ms: int) -> None:
        self.speaker = speaker
        self.rate = rate
        self.samples = rate * frame_ms // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._index = 0  # frames emitted: their count gives call time exactly

    @property
    def t(self) -> float:
        """Call time at the end of the audio framed so far."""
        return self._index * self.samples / self.rate

    def push(self, pcm: np.ndarray) -> Iterator[Frame]:
        if len(self._pending):
            pcm = np.concatenate((self._pending, pcm))
        n = len(pcm) // self.samples
        frames = pcm[: n * self.samples].reshape(n, self.samples)
        levels = levels_db(frames).tolist()  # the whole block's levels in one go
        for chunk, level in zip(frames, levels, strict=True):
            t = self._index * self.samples / self.rate
            yield Frame(t=t, speaker=self.speaker, pcm=chunk.tobytes(), level_db=level)
            self._index += 1
        self._pending = pcm[n * self.samples :].copy()


def levels_db(frames: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each row of int16 samples (a full-scale square wave is 0 dBFS, silence
    SILENCE_DB)."""
    samples = frames.astype(np.float32)
    power = np.add.reduce(samples * samples, axis=1) / (max(1, frames.shape[1]) * FULL_SCALE_POWER)
    return 10.0 * np.log10(np.maximum(power, SILENCE_POWER))
