"""The non-speech gate: keeps hold music, call-progress tones, DTMF and steady noise from the recogniser.

webrtcvad calls all of these speech. The gate sits after the VAD, sees every
frame of one speaker, and turns `speech` off for frames it judges non-speech,
so neither the recogniser nor the speaker's loudness baseline hears them.

It is biased toward passing speech: losing a word costs more than letting a
second of music through. Three causal detectors, each cheap per frame:

- tones: DTMF pairs and the usual call-progress tones (ring, busy, dial,
  European 425 Hz, UK) are recognised by where the frame's energy sits. DTMF
  blocks from its first frame; a progress tone after `tone_ms`, and at once
  when a tone plan already confirmed in the last seconds comes back (cadence).
- music and steady noise: speech changes its spectrum every syllable, music
  and noise much less. Over the last `window_ms`, a mean spectral flux below
  `music_flux` dB means music, or noise when the spectrum is also flat.
- release: a burst of flux (a voice starting over music or noise) passes the
  frame at once and restarts the window, so speech after hold music is not
  held back until the window forgets the music.

Every analysis covers the last 30 ms of audio whatever the frame length, so
the thresholds mean the same thing at 10, 20 and 30 ms frames and any rate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from callguard.config import GateConfig
from callguard.events import Frame, NonSpeech, Role

NonSpeechKind = Literal["music", "tone", "noise"]

ANALYSIS_MS = 30  # every feature is computed on the last 30 ms of audio
BAND_LO_HZ, BAND_HI_HZ = 150.0, 3600.0  # the telephone band, the same at every rate
BAND_COUNT = 16
FLUX_CAP_DB = 20.0  # one onset out of silence must not dominate a window mean
RELEASE_HOPS = 3  # analyses (about 90 ms) averaged for the release test
QUIET_RESET_MS = 240  # this much quiet ends what the music/noise window remembers
TONE_MEMORY_S = 8.0  # a confirmed tone plan blocks at once for this long (ring cadence is 2 s on, 4 s off)

# Call-progress tones (ITU-T E.180 and national plans): the frequency sets a frame may be made of.
PROGRESS_TONES_HZ: tuple[tuple[float, ...], ...] = (
    (350.0, 440.0),  # North American dial
    (440.0, 480.0),  # North American ring-back
    (480.0, 620.0),  # North American busy / reorder
    (425.0,),  # European dial, ring-back and busy
    (400.0, 450.0),  # UK ring-back
    (400.0,),  # UK busy
    (450.0,),  # several Asian plans
    (950.0, 1400.0, 1800.0),  # special information tone (SIT), as a set
)
DTMF_ROWS_HZ = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_MIN_BALANCE = 0.1  # the weaker tone of a pair within 10 dB of the stronger (twist)


@dataclass(slots=True)
class FrameFeatures:
    """What one analysis of the last 30 ms says."""

    level_db: float  # dBFS of the analysed 30 ms
    flux_db: float  # mean absolute change of the band levels against 30 ms earlier
    flatness: float  # spectral flatness in the telephone band, 0 (tones) .. ~0.56 (white noise)
    tone_plan: int  # index into PROGRESS_TONES_HZ of the best-fitting plan, -1 if none fits
    dtmf: bool  # the frame is a DTMF pair
    band_db: np.ndarray  # BAND_COUNT band levels (dB); a view the analyser overwrites on its next call


class SpectralAnalyser:
    """Per-hop spectral features of one speaker's audio, with buffers reused between calls."""

    def __init__(self, config: GateConfig, rate: int, frame_ms: int) -> None:
        self._hop = rate * frame_ms // 1000
        size = rate * ANALYSIS_MS // 1000
        self._samples = np.zeros(size, dtype=np.float32)  # the last 30 ms, newest at the end
        self._windowed = np.zeros(size, dtype=np.float32)
        self._hann = np.hanning(size).astype(np.float32)
        self._nfft = 1 << (size - 1).bit_length()
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / rate)
        in_band = np.flatnonzero((freqs >= BAND_LO_HZ) & (freqs <= BAND_HI_HZ))
        self._lo, self._hi = int(in_band[0]), int(in_band[-1]) + 1
        band_freqs = freqs[self._lo : self._hi]
        edges = np.geomspace(BAND_LO_HZ, BAND_HI_HZ, BAND_COUNT + 1)
        bands = np.stack([(band_freqs >= a) & (band_freqs < b) for a, b in itertools.pairwise(edges)])
        bands = bands.astype(np.float32)
        band_matrix = bands / np.maximum(bands.sum(axis=1, keepdims=True), 1.0)
        # A tone's energy spreads over the Hann main lobe: +-2 bins of the 30 ms frame's resolution.
        half_lobe = 1.6 * rate / size

        def near(tones: tuple[float, ...]) -> np.ndarray:
            return np.any([np.abs(band_freqs - f) <= half_lobe for f in tones], axis=0)

        rows = [
            np.ones_like(band_freqs),
            *band_matrix,
            *(near(plan) for plan in PROGRESS_TONES_HZ),
            *(near((f,)) for f in DTMF_ROWS_HZ),
            *(near((f,)) for f in DTMF_COLS_HZ),
        ]
        self._projection = np.stack(rows).astype(np.float64)
        self._projected = np.zeros(len(rows), dtype=np.float64)
        self._bands = slice(1, 1 + BAND_COUNT)
        self._plans = slice(self._bands.stop, self._bands.stop + len(PROGRESS_TONES_HZ))
        self._rows = slice(self._plans.stop, self._plans.stop + len(DTMF_ROWS_HZ))
        self._cols = slice(self._rows.stop, self._rows.stop + len(DTMF_COLS_HZ))
        self._tonality = config.tonality
        self._quiet_power = 10.0 ** (config.quiet_dbfs / 10.0)
        # Band history for the flux against the analysis 30 ms earlier (hops_back hops ago).
        self._hops_back = max(1, ANALYSIS_MS // frame_ms)
        self._band_history = np.full((self._hops_back, BAND_COUNT), -120.0, dtype=np.float64)
        self._history_at = 0
        self._band_db = np.zeros(BAND_COUNT, dtype=np.float64)
        self._scratch = np.zeros(BAND_COUNT, dtype=np.float64)

    def analyse(self, pcm: bytes) -> FrameFeatures:
        new = np.frombuffer(pcm, dtype=np.int16)[: self._hop]
        keep = len(self._samples) - len(new)
        self._samples[:keep] = self._samples[len(new) :]
        np.multiply(new, 1.0 / 32768.0, out=self._samples[keep:], casting="unsafe")
        mean_square = float(np.dot(self._samples, self._samples)) / len(self._samples)
        level_db = 10.0 * math.log10(mean_square + 1e-12)

        np.multiply(self._samples, self._hann, out=self._windowed)
        power = np.abs(np.fft.rfft(self._windowed, self._nfft)[self._lo : self._hi])
        np.multiply(power, power, out=power)
        power += 1e-20
        # One product gives the total, the band powers, the tone plans' and the DTMF tones' energies.
        np.dot(self._projection, power, out=self._projected)
        total = float(self._projected[0])
        band_db = self._band_db
        np.add(self._projected[self._bands], 1e-12, out=band_db)
        np.log10(band_db, out=band_db)
        band_db *= 10.0

        previous = self._band_history[self._history_at]
        np.subtract(band_db, previous, out=self._scratch)
        flux_db = min(float(np.abs(self._scratch, out=self._scratch).sum()) / BAND_COUNT, FLUX_CAP_DB)
        previous[:] = band_db
        self._history_at = (self._history_at + 1) % self._hops_back

        flatness = math.exp(float(np.log(power, out=power).sum()) / len(power)) * len(power) / total
        if mean_square < self._quiet_power:
            return FrameFeatures(level_db, flux_db, flatness, -1, False, band_db)
        plans = self._projected[self._plans].tolist()
        best_plan = max(range(len(plans)), key=plans.__getitem__)
        tone_plan = best_plan if plans[best_plan] >= self._tonality * total else -1
        row = max(self._projected[self._rows].tolist())
        col = max(self._projected[self._cols].tolist())
        dtmf = row + col >= self._tonality * total and min(row, col) >= DTMF_MIN_BALANCE * max(row, col)
        return FrameFeatures(level_db, flux_db, flatness, tone_plan, dtmf, band_db)


@dataclass(slots=True)
class _Run:
    """A stretch of frames judged non-speech, reported as one event when it ends."""

    kind: NonSpeechKind
    start: float
    end: float


class NonSpeechGate:
    """One speaker's gate: `process` every frame in order, `flush` at the end of the call."""

    def __init__(self, config: GateConfig, rate: int, frame_ms: int) -> None:
        self._config = config
        self._frame_s = frame_ms / 1000.0
        self._analyser = SpectralAnalyser(config, rate, frame_ms)
        self._window = max(2, config.window_ms // frame_ms)
        self._tone_hops = max(1, config.tone_ms // frame_ms)
        self._merge_gap_s = config.merge_gap_ms / 1000.0
        self._hops_per_analysis = max(1, ANALYSIS_MS // frame_ms)
        # Running sums over the last `window` loud hops; ring buffers so nothing is allocated per frame.
        self._flux_ring = np.zeros(self._window, dtype=np.float64)
        self._flat_ring = np.zeros(self._window, dtype=np.float64)
        self._ring_at = 0
        self._flux_sum = 0.0
        self._flat_sum = 0.0
        self._level_ring = np.zeros(self._window, dtype=np.float64)
        self._level_sum = 0.0
        self._level_sq_sum = 0.0
        self._band_ring = np.zeros((self._window, BAND_COUNT), dtype=np.float64)
        self._band_sum = np.zeros(BAND_COUNT, dtype=np.float64)
        self._excess = np.zeros(BAND_COUNT, dtype=np.float64)
        self._filled = 0  # loud hops since the window was last restarted
        self._recent_flux = np.zeros(RELEASE_HOPS * self._hops_per_analysis, dtype=np.float64)
        self._recent_at = 0
        self._recent_sum = 0.0
        self._tone_plan = -1
        self._tone_count = 0
        self._confirmed_plans: dict[int, float] = {}  # tone plan -> call time last confirmed
        self._run: _Run | None = None
        self._blocked_last = False
        self._quiet_hops = 0
        self._quiet_reset_hops = max(1, QUIET_RESET_MS // frame_ms)
        self._speaker: Role = "customer"

    def process(self, frame: Frame) -> tuple[Frame, list[NonSpeech]]:
        self._speaker = frame.speaker
        features = self._analyser.analyse(frame.pcm)
        kind = self._judge(frame.t, features)
        if kind == "tone" and self._run is not None and self._run.kind == "music":
            kind = "music"  # a held note can look like a progress tone: it is still the music
        events: list[NonSpeech] = []
        if self._run is not None and (
            frame.t - self._run.end > self._merge_gap_s or (kind is not None and kind != self._run.kind)
        ):
            events.append(self._close_run())
        if not self._config.enabled or not frame.speech:
            self._blocked_last = False
            return frame, events
        quiet = features.level_db < self._config.quiet_dbfs
        # A quiet gap (between DTMF digits or tone bursts, a staccato rest) keeps the run's verdict.
        if (
            kind is None
            and quiet
            and self._run is not None
            and (self._blocked_last or self._run.kind == "tone")
        ):
            kind = self._run.kind
        self._blocked_last = kind is not None
        if kind is None:
            return frame, events
        if self._run is None:
            self._run = _Run(kind, frame.t, frame.t + self._frame_s)
        self._run.end = frame.t + self._frame_s
        return replace(frame, speech=False), events

    def flush(self, t: float) -> list[NonSpeech]:
        """End of call: report a run still open."""
        return [self._close_run()] if self._run is not None else []

    def _close_run(self) -> NonSpeech:
        assert self._run is not None
        run, self._run = self._run, None
        return NonSpeech(t=run.start, speaker=self._speaker, kind=run.kind, duration=run.end - run.start)

    def _judge(self, t: float, features: FrameFeatures) -> NonSpeechKind | None:
        """Non-speech kind of the current frame, or None for speech (or undecided: passed)."""
        if features.level_db < self._config.quiet_dbfs:
            self._tone_count = 0
            self._quiet_hops += 1
            if self._quiet_hops >= self._quiet_reset_hops:
                self._filled = 0  # the music or noise stopped: what follows is judged afresh
            return None
        self._quiet_hops = 0
        if features.dtmf:
            self._tone_count = 0
            return "tone"
        if self._is_progress_tone(t, features.tone_plan, features.flux_db < self._config.tone_flux):
            return "tone"

        self._recent_sum += features.flux_db - self._recent_flux[self._recent_at]
        self._recent_flux[self._recent_at] = features.flux_db
        self._recent_at = (self._recent_at + 1) % len(self._recent_flux)
        if self._filled >= self._window and self._departs(features):
            self._filled = 0  # a voice starting: forget the music or noise the window remembers
        oldest = self._ring_at
        self._flux_sum += features.flux_db - self._flux_ring[oldest]
        self._flat_sum += features.flatness - self._flat_ring[oldest]
        self._level_sum += features.level_db - self._level_ring[oldest]
        self._level_sq_sum += features.level_db**2 - self._level_ring[oldest] ** 2
        self._flux_ring[oldest] = features.flux_db
        self._flat_ring[oldest] = features.flatness
        self._level_ring[oldest] = features.level_db
        self._band_sum += features.band_db
        self._band_sum -= self._band_ring[oldest]
        self._band_ring[oldest] = features.band_db
        self._ring_at = (oldest + 1) % self._window
        self._filled += 1
        if self._filled < self._window or self._flux_sum / self._window >= self._config.music_flux:
            return None
        mean_level = self._level_sum / self._window
        level_sd = max(self._level_sq_sum / self._window - mean_level**2, 0.0) ** 0.5
        if level_sd > self._config.max_level_sd:
            return None  # words between pauses over a quiet line: the pauses lower the flux, not music
        return "noise" if self._flat_sum / self._window >= self._config.noise_flatness else "music"

    def _departs(self, features: FrameFeatures) -> bool:
        """Whether this hop breaks from the music or noise of the window: a voice starting over it."""
        if self._recent_sum / len(self._recent_flux) > self._config.release_flux:
            return True
        if features.level_db - self._level_sum / self._window > self._config.release_db:
            return True
        if self._flat_sum / self._window < self._config.noise_flatness:
            return False  # music changes its spectrum all the time: only level and flux bursts count
        # Over steady noise, a voice raises the bands it occupies well above the noise's own spectrum.
        np.subtract(features.band_db, self._band_sum / self._window, out=self._excess)
        np.maximum(self._excess, 0.0, out=self._excess)
        return float(self._excess.sum()) > self._config.noise_release_db * BAND_COUNT

    def _is_progress_tone(self, t: float, plan: int, steady: bool) -> bool:
        # A confirmed plan coming back (the next ring or busy burst) is blocked from its first frame.
        recent = plan >= 0 and t - self._confirmed_plans.get(plan, -1e9) <= TONE_MEMORY_S
        if plan < 0 or not steady:
            self._tone_count = 0
            return recent
        self._tone_count = self._tone_count + 1 if plan == self._tone_plan else 1
        self._tone_plan = plan
        if self._tone_count >= self._tone_hops:
            self._confirmed_plans[plan] = t
            return True
        return recent
