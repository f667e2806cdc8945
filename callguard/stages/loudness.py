"""Loudness: frame level in dBFS, a per-speaker baseline, and shouting.

Line levels differ by tens of dB between calls, so shouting is judged against
the speaker's own active speech level (ITU-T P.56 idea: speech frames only).
The baseline is the median level of all the speaker's speech frames so far,
kept in a fixed histogram: constant memory over a shift, and a few shouts do
not drag it up. An absolute ceiling catches shouting before a baseline exists.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from callguard.audio.framing import SILENCE_DB, levels_db
from callguard.core.config import LoudnessConfig
from callguard.core.events import Event, Frame, Role, Shouting

_FLOOR_DB = SILENCE_DB
_BIN_DB = 0.5
_BINS = int(-_FLOOR_DB / _BIN_DB) + 1


def frame_level_db(pcm: bytes) -> float:
    """RMS level of a PCM16 frame in dBFS (a full-scale square wave is 0 dBFS)."""
    return float(levels_db(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1))[0])


class LoudnessTracker:
    """One speaker's loudness, a frame stage: every frame passes through unchanged, shouting comes out."""

    def __init__(
        self, config: LoudnessConfig, frame_ms: int, speaker: Role, margin_db: float | None = None
    ) -> None:
        self._config = config
        self._speaker = speaker
        self._frame_s = frame_ms / 1000
        self._margin = config.margin_db if margin_db is None else margin_db
        self._window: deque[float] = deque(maxlen=max(1, config.smoothing_ms // frame_ms))
        self._window_power = 0.0
        self._histogram = np.zeros(_BINS, dtype=np.int64)
        self._speech_frames = 0
        self._baseline: float | None = None
        self._baseline_due = 0
        self._min_baseline_frames = max(1, round(config.baseline_speech_s / self._frame_s))
        self._min_shout_frames = max(1, round(config.min_shout_s / self._frame_s))
        self._loud_run = 0
        self._loud_start = 0.0
        self._peak = _FLOOR_DB
        self._quiet_until = -math.inf

    @property
    def baseline_db(self) -> float | None:
        return self._baseline

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        level = frame.level_db  # measured by the Framer, a block at a time
        if not frame.speech:
            self._reset_run()
            return [frame], []
        if level > self._config.floor_dbfs:
            self._learn(level)
        smoothed = self._smooth(level)
        return [frame], self._judge(frame.t, smoothed)

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        """Nothing is held back, and a loud run cut by the end of the call is judged as it stands."""
        return [], []

    def _learn(self, level: float) -> None:
        self._histogram[min(_BINS - 1, int((level - _FLOOR_DB) / _BIN_DB))] += 1
        self._speech_frames += 1
        # The median moves slowly: recompute it once a second of speech, not every frame.
        if self._speech_frames >= self._min_baseline_frames and self._speech_frames >= self._baseline_due:
            cumulative = np.cumsum(self._histogram)
            median_bin = int(np.searchsorted(cumulative, cumulative[-1] / 2))
            self._baseline = _FLOOR_DB + (median_bin + 0.5) * _BIN_DB
            self._baseline_due = self._speech_frames + round(1.0 / self._frame_s)

    def _smooth(self, level: float) -> float:
        power = 10.0 ** (level / 10.0)
        if len(self._window) == self._window.maxlen:
            self._window_power -= self._window[0]
        self._window.append(power)
        self._window_power += power
        return 10.0 * math.log10(max(self._window_power / len(self._window), 1e-12))

    def _judge(self, t: float, smoothed: float) -> list[Event]:
        over_ceiling = smoothed >= self._config.ceiling_dbfs
        over_baseline = self._baseline is not None and smoothed >= self._baseline + self._margin
        if not (over_ceiling or over_baseline):
            self._reset_run()
            return []
        if self._loud_run == 0:
            self._loud_start = t
        self._loud_run += 1
        self._peak = max(self._peak, smoothed)
        if self._loud_run != self._min_shout_frames or t < self._quiet_until:
            return []
        self._quiet_until = t + self._config.cooldown_s
        return [
            Shouting(
                t=self._loud_start,
                speaker=self._speaker,
                level_db=round(self._peak, 1),
                baseline_db=None if self._baseline is None else round(self._baseline, 1),
                reason="baseline" if over_baseline else "ceiling",
                duration=round(self._loud_run * self._frame_s, 3),
            )
        ]

    def _reset_run(self) -> None:
        self._loud_run = 0
        self._peak = _FLOOR_DB
