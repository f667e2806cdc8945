"""The non-speech gate: keeps hold music, call-progress tones, DTMF and steady noise from the recogniser.

webrtcvad calls all of these speech. The gate sits after the VAD, sees every
frame of one speaker, and turns `speech` off for frames it judges non-speech,
so neither the recogniser nor the speaker's loudness baseline hears them.

It must not lose speech, so it blocks music and noise only once they have
lasted `hold_ms` with no sign of a voice (hysteresis), and lets a frame with
such a sign through at once. All of it is causal and cheap per frame:

- tones: DTMF pairs and the usual call-progress tones (ring, busy, dial,
  European 425 Hz, UK) are recognised by where the frame's energy sits. DTMF
  blocks from its first frame; a progress tone after `tone_ms`, and at once
  when a tone plan already confirmed in the last seconds comes back (cadence).
- noise: the line's noise floor is the quietest spectrum of the last
  `floor_ms`. Steady noise stays within `noise_margin_db` of it; a voice lifts
  the bands it occupies well above it, and its pauses between words fall back
  to it for less than `hold_ms`, so speech over noise is never a long run at
  the floor.
- music: it changes the shape of its spectrum less than speech, whose
  formants move from one sound to the next. Two ways in, each lasting
  `hold_ms`: legato music never falls back to the floor between words and
  changes its spectrum and level little (over the last `window_ms`, mean
  spectral flux below `music_flux`, mean level swing below `music_swing_db`);
  music with beats or notes apart swings its level like syllables, but the
  mean shape flux (flux less the change of overall level, onsets out of quiet
  left out) of its last `window_ms` above the floor stays below
  `music_shape_flux`. Once started, only a voice or a window that no longer
  sounds like music by either measure ends it.
- release: a burst of flux or level (a voice starting over the music) passes
  the frame at once and ends the music; over noise, every frame above the
  floor passes, and a few in a row end the noise.
- voice check: music whose drum hits and short chords swing and move like
  syllables defeats every spectral feature tried (six, see README). So for
  `music_memory_s` after music was last blocked, a frame the rules above would
  pass is also asked of Silero VAD (`vad.VoiceCheck`): from the first frame
  after blocked music, and after `voice_check_ms` with no voice heard, it is
  music until Silero hears a voice. Its frames are held back `LOOK_BACK_MS`
  rather than dropped: Silero can take 350 ms to hear a short word after music,
  and a voice heard in time takes the held frames with it. A second of voice
  ends the memory, so a conversation after hold music goes back to the rules
  above. It costs 0.15-0.25 ms per 32 ms heard, and is asked only near music.

Every analysis covers the last 30 ms of audio whatever the frame length, so
the thresholds mean the same thing at 10, 20 and 30 ms frames and any rate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from callguard.core.config import GateConfig
from callguard.core.events import Event, Frame, NonSpeech, Role
from callguard.stages.vad import VoiceCheck, VoiceCheckPool

NonSpeechKind = Literal["music", "tone", "noise"]

ANALYSIS_MS = 30  # every feature is computed on the last 30 ms of audio
BAND_LO_HZ, BAND_HI_HZ = 150.0, 3600.0  # the telephone band, the same at every rate
BAND_COUNT = 16
FLUX_CAP_DB = 20.0  # one onset out of silence must not dominate a window mean
RELEASE_HOPS = 3  # analyses (about 90 ms) averaged for the release test
QUIET_RESET_MS = 240  # this much quiet ends the music or noise being blocked
SMOOTH_MS = 90  # band levels are smoothed over about this long before they are compared with the noise floor
FLOOR_BLOCK_MS = 500  # the noise floor keeps one minimum per block of this length
SWING_MS = 90  # level swing: the change of level against this long ago (syllables rise and fall)
VOICE_MS = 90  # this long above the noise floor is a voice, not a lone peak of the noise
QUIET_BAND_DB = -120.0  # band level given to quiet hops, which are not analysed
UNKNOWN_FLOOR_DB = np.inf  # a block not heard yet: the floor is the quietest hop so far
LOOK_BACK_MS = 450  # frames the voice check blocks wait this long, for a voice Silero is slow to hear
VOICE_CONFIRM_HOPS = 2  # frames in a row Silero must call voice to release what it held
VOICE_FORGETS_MS = 1000  # this much voice heard by the voice check ends the music memory
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
    shape_flux_db: float  # the same less the change of overall level: how the spectrum's shape moved
    after_quiet: bool  # the analysis 30 ms earlier was quiet: the changes are an onset, not a movement
    tone_plan: int  # index into PROGRESS_TONES_HZ of the best-fitting plan, -1 if none fits
    dtmf: bool  # the frame is a DTMF pair
    band_db: np.ndarray  # BAND_COUNT band levels (dB); a view the analyser overwrites on its next call


class SpectralAnalyser:
    """Per-hop spectral features of one speaker's audio, with buffers reused between calls.

    The spectrum is a product with a precomputed matrix rather than an FFT: only the
    telephone band's bins are wanted, the Hann window and the int16 scale are folded
    into the matrix, and a frame then costs a handful of NumPy calls instead of a dozen.
    """

    def __init__(self, config: GateConfig, rate: int, frame_ms: int) -> None:
        self._hop = rate * frame_ms // 1000
        size = rate * ANALYSIS_MS // 1000
        self._samples = np.zeros(size, dtype=np.float32)  # the last 30 ms as int16 values, newest at the end
        self._power_scale = 1.0 / (size * 32768.0**2)  # mean square of the window in full-scale units
        nfft = 1 << (size - 1).bit_length()  # the bins of a zero-padded FFT, for the same resolution
        freqs = np.arange(nfft // 2 + 1) * rate / nfft
        in_band = np.flatnonzero((freqs >= BAND_LO_HZ) & (freqs <= BAND_HI_HZ))
        band_freqs = freqs[in_band]
        # Real and imaginary parts of the in-band DFT bins of the windowed, full-scale frame.
        phase = 2.0 * np.pi * np.outer(in_band, np.arange(size)) / nfft
        window = np.hanning(size) / 32768.0
        self._dft = np.concatenate((np.cos(phase) * window, np.sin(phase) * window)).astype(np.float32)
        self._spectrum = np.zeros(len(self._dft), dtype=np.float32)
        edges = np.geomspace(BAND_LO_HZ, BAND_HI_HZ, BAND_COUNT + 1)
        bands = np.stack([(band_freqs >= a) & (band_freqs < b) for a, b in itertools.pairwise(edges)])
        band_matrix = bands / np.maximum(bands.sum(axis=1, keepdims=True), 1.0)
        # A tone's energy spreads over the Hann main lobe: +-2 bins of the 30 ms frame's resolution.
        half_lobe = 1.6 * rate / size

        def near(tones: tuple[float, ...]) -> np.ndarray:
            close: np.ndarray = np.any([np.abs(band_freqs - f) <= half_lobe for f in tones], axis=0)
            return close

        rows = np.stack(
            [
                np.ones_like(band_freqs),
                *band_matrix,
                *(near(plan) for plan in PROGRESS_TONES_HZ),
                *(near((f,)) for f in DTMF_ROWS_HZ),
                *(near((f,)) for f in DTMF_COLS_HZ),
            ]
        )
        # Applied to the squared real and imaginary parts at once: one product gives the total, the
        # band powers, the tone plans' and the DTMF tones' energies.
        self._projection = np.concatenate((rows, rows), axis=1).astype(np.float32)
        self._projected = np.zeros(len(rows), dtype=np.float32)
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
        self._quiet_history = [True] * self._hops_back
        self._band_db = np.zeros(BAND_COUNT, dtype=np.float64)
        self._scratch = np.zeros(BAND_COUNT, dtype=np.float64)
        self._abs_change = np.zeros(BAND_COUNT, dtype=np.float64)

    def analyse(self, pcm: bytes) -> FrameFeatures:
        samples = self._samples
        new = np.frombuffer(pcm, dtype=np.int16)[: self._hop]
        keep = len(samples) - len(new)
        if keep:
            samples[:keep] = samples[len(new) :]
        samples[keep:] = new
        mean_square = float(np.dot(samples, samples)) * self._power_scale
        level_db = 10.0 * math.log10(mean_square + 1e-12)
        band_db = self._band_db
        at = self._history_at
        previous = self._band_history[at]
        after_quiet = self._quiet_history[at]
        self._history_at = (at + 1) % self._hops_back
        self._quiet_history[at] = quiet = mean_square < self._quiet_power
        if quiet:
            # Silence is most of a call: no spectrum for it, so an idle line costs next to nothing.
            band_db.fill(QUIET_BAND_DB)
            previous[:] = band_db
            return FrameFeatures(level_db, 0.0, 0.0, after_quiet, -1, False, band_db)

        spectrum = self._spectrum
        np.dot(self._dft, samples, out=spectrum)
        np.multiply(spectrum, spectrum, out=spectrum)
        np.dot(self._projection, spectrum, out=self._projected)
        np.add(self._projected[self._bands], 1e-12, out=band_db)
        np.log10(band_db, out=band_db)
        band_db *= 10.0
        change = self._scratch
        np.subtract(band_db, previous, out=change)
        level_change = float(np.add.reduce(change)) / BAND_COUNT
        flux_db = min(float(np.add.reduce(np.abs(change, out=self._abs_change))) / BAND_COUNT, FLUX_CAP_DB)
        change -= level_change
        shape_flux_db = min(float(np.add.reduce(np.abs(change, out=change))) / BAND_COUNT, FLUX_CAP_DB)
        previous[:] = band_db

        energies = self._projected.tolist()
        total = energies[0]
        plans = energies[self._plans]
        best_plan = plans.index(max(plans))
        tone_plan = best_plan if plans[best_plan] >= self._tonality * total else -1
        row, col = max(energies[self._rows]), max(energies[self._cols])
        dtmf = row + col >= self._tonality * total and min(row, col) >= DTMF_MIN_BALANCE * max(row, col)
        return FrameFeatures(level_db, flux_db, shape_flux_db, after_quiet, tone_plan, dtmf, band_db)


class NoiseFloor:
    """The line's noise floor: the quietest band spectrum of the last `floor_ms` of sound.

    Minimum statistics over blocks of FLOOR_BLOCK_MS. Quiet hops (below quiet_dbfs) are left out, so
    a line that falls silent now and then keeps its noise floor. Band levels are smoothed over
    SMOOTH_MS first, so the random dips of noise in narrow bands do not pull the minimum far below
    the noise's typical level.
    """

    def __init__(self, floor_ms: int, frame_ms: int) -> None:
        self._keep = math.exp(-frame_ms / SMOOTH_MS)  # exponential smoothing, time constant SMOOTH_MS
        self._started = False
        self._block_hops = max(1, FLOOR_BLOCK_MS // frame_ms)
        self._block_hop = 0
        self._blocks = np.full((max(1, floor_ms // FLOOR_BLOCK_MS), BAND_COUNT), UNKNOWN_FLOOR_DB)
        self._block_at = 0
        self._blocks_min = self._blocks.min(axis=0)
        self._block_min = np.full(BAND_COUNT, np.inf)
        self._level = np.zeros(BAND_COUNT)
        self._excess = np.zeros(BAND_COUNT)

    def excess_db(self, band_db: np.ndarray) -> float:
        """Mean dB by which this hop's smoothed band levels rise above the floor; learns the hop."""
        if self._started:
            # Rises at once (a voice's onset passes from its first hop), decays smoothly (noise's dips):
            # max(band, keep * level + (1 - keep) * band), in place.
            level = self._level
            np.subtract(level, band_db, out=level)
            np.maximum(level, 0.0, out=level)
            level *= self._keep
            level += band_db
        else:
            self._level[:], self._started = band_db, True
        np.minimum(self._block_min, self._level, out=self._block_min)
        np.minimum(self._block_min, self._blocks_min, out=self._excess)
        # The level is never below its block's minimum, so the excess needs no clipping at zero.
        np.subtract(self._level, self._excess, out=self._excess)
        excess = float(np.add.reduce(self._excess)) / BAND_COUNT
        self._block_hop += 1
        if self._block_hop == self._block_hops:
            self._blocks[self._block_at] = self._block_min
            self._block_at = (self._block_at + 1) % len(self._blocks)
            self._blocks.min(axis=0, out=self._blocks_min)
            self._block_min.fill(np.inf)
            self._block_hop = 0
        return excess


@dataclass(slots=True)
class _Run:
    """A stretch of frames judged non-speech, reported as one event when it ends."""

    kind: NonSpeechKind
    start: float
    end: float
    noise_hops: int = 0  # music and noise hops: a run is reported as the kind most of it was
    music_hops: int = 0

    def add(self, kind: NonSpeechKind, end: float) -> None:
        self.end = end
        if kind == "noise":
            self.noise_hops += 1
        elif kind == "music":
            self.music_hops += 1
        if self.kind != "tone":
            self.kind = "noise" if self.noise_hops > self.music_hops else "music"


class NonSpeechGate:
    """One speaker's gate: `process` every frame in order, `flush` at the end of the call."""

    def __init__(
        self, config: GateConfig, rate: int, frame_ms: int, voice_checks: VoiceCheckPool | None = None
    ) -> None:
        """`voice_checks`: where the voice check is borrowed from (a pool of its own if None)."""
        self._config = config
        self._frame_s = frame_ms / 1000.0
        self._analyser = SpectralAnalyser(config, rate, frame_ms)
        self._floor = NoiseFloor(config.floor_ms, frame_ms)
        self._window = max(2, config.window_ms // frame_ms)
        self._hold_hops = max(1, config.hold_ms // frame_ms)
        self._voice_hops = max(1, VOICE_MS // frame_ms)
        self._tone_hops = max(1, config.tone_ms // frame_ms)
        self._quiet_reset_hops = max(1, QUIET_RESET_MS // frame_ms)
        self._merge_gap_s = config.merge_gap_ms / 1000.0
        # Flux and level over the last `window` loud hops: ring buffers and running sums, no allocation.
        # (Python lists: a frame touches one element of each, and NumPy scalars cost more than floats.)
        self._flux_ring = [0.0] * self._window
        self._level_ring = [0.0] * self._window
        self._swing_ring = [0.0] * self._window
        self._ring_at = 0
        self._flux_sum = 0.0
        self._level_sum = 0.0
        self._swing_sum = 0.0
        # Levels of the last SWING_MS, floored at quiet_dbfs, for the level swing of speech's syllables.
        self._swing_levels = [config.quiet_dbfs] * max(1, SWING_MS // frame_ms)
        self._swing_at = 0
        self._filled = 0  # loud hops since the window was last restarted
        # Shape flux of the last `window` hops above the noise floor, onsets out of quiet left out.
        self._shape_ring = [0.0] * self._window
        self._shape_at = 0
        self._shape_sum = 0.0
        self._shape_filled = 0
        self._shaped_hops = 0  # hops in a row whose shape window sounds like music
        self._shaped_since = 0.0
        self._recent_flux = [0.0] * (RELEASE_HOPS * max(1, ANALYSIS_MS // frame_ms))
        self._recent_at = 0
        self._recent_sum = 0.0
        # Hysteresis state: what is being blocked, and how long the evidence for music or noise has lasted.
        self._mode: Literal["music", "noise"] | None = None
        self._floor_hops = 0  # hops at the noise floor, not broken by a lone hop above it
        self._above_hops = 0  # hops above the floor with no dip back to it (nor into quiet)
        self._floor_since = 0.0
        self._above_since = 0.0
        self._mode_since = 0.0  # call time the evidence for the current mode began
        self._voice_started = False  # the judge saw a voice end the music or noise: the run ends there
        self._quiet_hops = 0
        self._tone_plan = -1
        self._tone_count = 0
        self._confirmed_plans: dict[int, float] = {}  # tone plan -> call time last confirmed
        self._run: _Run | None = None
        self._reported_until = -math.inf  # end of the last run reported
        self._speaker: Role = "customer"
        # Near music (for music_memory_s after it was last heard), frames the gate would pass are asked of
        # a neural voice check; what it blocks is held back LOOK_BACK_MS, in case a voice is just starting.
        # Borrowed when first needed (loading Silero costs 80 ms of CPU): most calls hear no music.
        self._voice_checks = voice_checks if voice_checks is not None else VoiceCheckPool()
        self._voice_check: VoiceCheck | None = None
        self._voice_check_on = config.enabled and config.music_memory_s > 0
        self._rate = rate
        self._music_until = -math.inf
        self._check_hops = max(1, config.voice_check_ms // frame_ms)
        self._forget_hops = max(1, VOICE_FORGETS_MS // frame_ms)
        self._look_back_hops = max(1, LOOK_BACK_MS // frame_ms)
        self._unvoiced_hops = 0
        self._voiced_hops = 0
        self._last_checked = -math.inf
        self._checking = False  # the voice check is blocking: its frames are held back
        self._held: list[Frame] = []

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        """The frames now decided, in order (usually just this one, with `speech` turned off if it is
        non-speech; near music, up to `LOOK_BACK_MS` of them held back and released together), and the
        non-speech runs that ended."""
        self._speaker = frame.speaker
        features = self._analyser.analyse(frame.pcm)
        kind = self._judge(frame.t, features)
        run = self._run
        if kind == "tone" and run is not None and run.kind == "music":
            kind = "music"  # a held note can look like a progress tone: it is still the music
        events: list[Event] = []
        voice_started, self._voice_started = self._voice_started, False
        if run is not None and (
            voice_started
            or frame.t - run.end > self._merge_gap_s
            or (kind is not None and (kind == "tone") != (run.kind == "tone"))
        ):
            events.append(self._close_run())
        if not self._config.enabled or not frame.speech:
            return self._release_held(frame), events
        if kind is None and self._run is not None and self._run.kind == "tone" and self._quiet_hops:
            kind = "tone"  # the quiet gap between DTMF digits or tone bursts keeps the verdict
        if kind == "music":
            self._music_until = frame.t + self._config.music_memory_s
            self._unvoiced_hops = self._check_hops  # what follows the music is held until a voice is heard
        elif kind is None and self._voice_check_on and frame.t < self._music_until:
            kind = self._check_voice(frame)
            if kind is None and self._held:
                # A voice after frames held as music: they were its onset, and pass with it.
                held, self._held = self._held, []
                self._voice_started = True
                if self._run is not None:  # the run ends where the voice's held frames begin
                    if held[0].t <= self._run.start:
                        self._run = None  # all of it was the voice's onset: no music to report
                    else:
                        self._run.end = held[0].t
                return [*held, frame], events
        if kind is None:
            return self._release_held(frame), events
        if self._run is None:
            # Music and noise start where their evidence began, but never inside the run reported before.
            start = frame.t if kind == "tone" else max(self._mode_since, self._reported_until)
            self._run = _Run(kind, start, frame.t)
        self._run.add(kind, frame.t + self._frame_s)
        if self._checking:
            self._held.append(frame)
            if len(self._held) <= self._look_back_hops:
                return [], events
            return [self._held.pop(0).with_speech(False)], events
        return self._release_held(frame.with_speech(False)), events

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        """End of call: the frames still held back, and the run still open. The voice check goes back."""
        held, self._held = [f.with_speech(False) for f in self._held], []
        if self._voice_check is not None:
            self._voice_checks.release(self._voice_check)
            self._voice_check = None
        return held, [self._close_run()] if self._run is not None else []

    def _release_held(self, frame: Frame) -> list[Frame]:
        """Frames held back by the voice check are music after all: out, blocked, before `frame`."""
        self._checking = False
        if not self._held:
            return [frame]
        held, self._held = self._held, []
        return [*(f.with_speech(False) for f in held), frame]

    def _check_voice(self, frame: Frame) -> NonSpeechKind | None:
        """Near music, a frame the gate would pass is asked of the voice check: music from the start of
        what follows blocked music, or once no voice was heard for `voice_check_ms`, until a voice is."""
        if self._voice_check is None:
            self._voice_check = self._voice_checks.acquire(self._rate)
        if frame.t - self._last_checked > 1.5 * self._frame_s:
            # A new stretch of sound: Silero's memory of the last one (the music) would mute a voice starting
            # now. What was blocked stays blocked, held back: a voice is heard within the look-back.
            self._voice_check.reset()
            self._voiced_hops = 0
        self._last_checked = frame.t
        probability = self._voice_check.hear(frame.pcm)
        if probability is not None and probability >= self._config.voice_probability:
            self._voiced_hops += 1
            if self._voiced_hops >= self._forget_hops:
                self._music_until = -math.inf  # a voice for a while: the music is over
            if self._unvoiced_hops >= self._check_hops and self._voiced_hops < VOICE_CONFIRM_HOPS:
                return self._hold_as_music(frame)  # one voiced window in music may be a note: wait for more
            self._unvoiced_hops = 0
            return None
        if probability is not None:  # None: the first frame of a stretch, no verdict yet, the last one holds
            self._voiced_hops = 0
            self._unvoiced_hops += 1
        return None if self._unvoiced_hops < self._check_hops else self._hold_as_music(frame)

    def _hold_as_music(self, frame: Frame) -> NonSpeechKind:
        if self._mode is None and self._run is None:
            self._mode_since = frame.t
        self._checking = True
        return "music"

    def _close_run(self) -> NonSpeech:
        assert self._run is not None
        run, self._run = self._run, None
        self._reported_until = run.end
        return NonSpeech(t=run.start, speaker=self._speaker, kind=run.kind, duration=run.end - run.start)

    def _judge(self, t: float, features: FrameFeatures) -> NonSpeechKind | None:
        """Non-speech kind of the current frame, or None for speech (or undecided: passed)."""
        if features.level_db < self._config.quiet_dbfs:
            self._tone_count = 0
            self._above_hops = 0  # a pause: music does not pause between words, speech does
            self._quiet_hops += 1
            if self._quiet_hops >= self._quiet_reset_hops:
                # The music or noise stopped: what follows is judged afresh.
                self._mode, self._floor_hops, self._filled, self._shaped_hops = None, 0, 0, 0
            return self._mode
        self._quiet_hops = 0
        if features.dtmf:
            self._tone_count = 0
            return "tone"
        if self._is_progress_tone(t, features.tone_plan, features.flux_db < self._config.tone_flux):
            return "tone"

        excess_db = self._floor.excess_db(features.band_db)
        departs = self._update_window(features)
        steady = self._filled >= self._window and self._flux_sum < self._config.music_flux * self._window
        # Only what rises above the line's noise enters the shape window: noise's own spectrum moves little.
        shaped = self._update_shape(t, features, excess_db >= self._config.noise_margin_db)
        if excess_db < self._config.noise_margin_db:
            if self._floor_hops == 0:
                self._floor_since = t
            self._floor_hops += 1
            self._above_hops = 0
        else:
            if self._above_hops == 0:
                self._above_since = t
            self._above_hops += 1
            if self._above_hops >= self._voice_hops:
                self._floor_hops = 0  # not a lone noise peak: something rose above the floor and stayed

        if self._mode == "noise":
            if self._floor_hops == 0:
                self._mode, self._voice_started = None, True  # a voice over the noise: its frames passed
            return "noise" if self._above_hops == 0 else None
        if self._mode == "music":
            if departs or not (steady or shaped):
                # A voice starting over the music, or the window no longer sounds like it.
                self._mode, self._voice_started = None, departs
                return None
            if self._floor_hops >= self._hold_hops:
                self._mode = "noise"  # the floor caught up with a steady sound: it was noise all along
            return self._mode
        if self._floor_hops >= self._hold_hops:
            self._mode, self._mode_since = "noise", self._floor_since
        elif (
            self._above_hops >= self._hold_hops
            and steady
            and self._swing_sum < self._config.music_swing_db * self._window
        ):  # the swing of syllables is asked only to start the music: within it, only voices end it
            self._mode, self._mode_since = "music", self._above_since
        elif self._shaped_hops >= self._hold_hops:
            # Music whose level swings like syllables (beats, notes apart): its spectrum's shape moves
            # less than a voice's formants do.
            self._mode, self._mode_since = "music", self._shaped_since
        return self._mode

    def _update_shape(self, t: float, features: FrameFeatures, above_floor: bool) -> bool:
        """Adds a hop's shape flux to its window; whether the window sounds like music."""
        counted = above_floor and not features.after_quiet
        if counted:
            oldest = self._shape_at
            self._shape_sum += features.shape_flux_db - self._shape_ring[oldest]
            self._shape_ring[oldest] = features.shape_flux_db
            self._shape_at = (oldest + 1) % self._window
            self._shape_filled += 1
        limit = self._config.music_shape_flux * self._window
        shaped = self._shape_filled >= self._window and self._shape_sum < limit
        if not shaped:
            self._shaped_hops = 0
        elif counted:
            if self._shaped_hops == 0:
                self._shaped_since = t
            self._shaped_hops += 1
        return shaped

    def _update_window(self, features: FrameFeatures) -> bool:
        """Adds a loud hop to the flux window; whether it breaks from the window (a voice starting)."""
        self._recent_sum += features.flux_db - self._recent_flux[self._recent_at]
        self._recent_flux[self._recent_at] = features.flux_db
        self._recent_at = (self._recent_at + 1) % len(self._recent_flux)
        departs = self._filled >= self._window and (
            (self._recent_sum > self._config.release_flux * len(self._recent_flux))
            or features.level_db - self._level_sum / self._window > self._config.release_db
        )
        if departs:
            self._filled = 0  # forget the music the window remembers
        level = max(features.level_db, self._config.quiet_dbfs)
        swing = abs(level - self._swing_levels[self._swing_at])
        self._swing_levels[self._swing_at] = level
        self._swing_at = (self._swing_at + 1) % len(self._swing_levels)
        oldest = self._ring_at
        self._flux_sum += features.flux_db - self._flux_ring[oldest]
        self._level_sum += features.level_db - self._level_ring[oldest]
        self._swing_sum += swing - self._swing_ring[oldest]
        self._flux_ring[oldest] = features.flux_db
        self._level_ring[oldest] = features.level_db
        self._swing_ring[oldest] = swing
        self._ring_at = (oldest + 1) % self._window
        self._filled += 1
        return departs

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
