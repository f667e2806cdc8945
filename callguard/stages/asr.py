"""Speech recognition: the only module that sees vosk, its JSON and its exceptions.

One `SpeechModel` is shared by every recogniser (and every call); each speaker
has its own `Recogniser` (vosk's rule: one KaldiRecognizer per stream). The
recogniser hears speech frames only, so its clock runs slower than the call's:
`_Timeline` maps the recogniser's seconds back to call time.
"""

from __future__ import annotations

import ctypes
import json
import sys
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from callguard.core.errors import ModelError
from callguard.core.events import Event, Frame, Role, Transcript, Word
from callguard.models.catalogue import model_sample_rate

# glibc's mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
_TRIM_THRESHOLD = 4 * 1024 * 1024


def keep_memory_flat() -> bool:
    """Have glibc hand freed recogniser memory back to the system (the process's allocator: done by
    `SpeechModel.load`, before the model's own allocations; doing it again changes nothing).

    Renewing a recogniser frees tens of MB in blocks of a few hundred KB. By default glibc then
    raises its mmap threshold to those blocks' size, so the next recogniser's blocks come from the
    heap, where fragmentation keeps them when freed: RSS drifts up between renewals (measured over
    30 min of a call: peaks 869 -> 882 MB). A fixed threshold and a 4 MiB trim threshold kept the
    peaks at 821-826 MB, for no CPU that could be measured. Returns False where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: their allocators differ, nothing to tune
        return False
    mmap_set = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    return bool(mmap_set) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@dataclass(frozen=True)
class SpeechModel:
    path: Path
    rate: int
    handle: object  # vosk.Model

    @classmethod
    def load(cls, path: Path) -> SpeechModel:
        import vosk

        keep_memory_flat()
        vosk.SetLogLevel(-2)  # -1 still prints Kaldi warnings on every utterance
        try:
            handle = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception on a bad folder
            raise ModelError(path, f"cannot be loaded by vosk ({exc})") from None
        return cls(path=Path(path), rate=model_sample_rate(Path(path)), handle=handle)


class _Timeline:
    """Maps recogniser time (seconds of audio fed) to call time."""

    def __init__(self) -> None:
        self._fed_starts: list[float] = []
        self._call_starts: list[float] = []

    def start_segment(self, fed: float, call: float) -> None:
        self._fed_starts.append(fed)
        self._call_starts.append(call)

    def to_call(self, fed: float) -> float:
        i = max(0, bisect_right(self._fed_starts, fed + 1e-9) - 1)
        if not self._fed_starts:
            return fed
        return self._call_starts[i] + (fed - self._fed_starts[i])

    def forget_before(self, fed: float) -> None:
        """Drop segments wholly before `fed` (results never point back past an utterance)."""
        i = max(0, bisect_right(self._fed_starts, fed) - 1)
        del self._fed_starts[:i], self._call_starts[:i]


class Recogniser:
    """One speaker's streaming recogniser, a frame stage that only listens: speech frames in, partial
    and final transcripts out, no frames."""

    def __init__(
        self,
        model: SpeechModel,
        speaker: Role,
        rate: int,
        frame_ms: int,
        partials: bool = True,
        max_utterance_s: float = 15.0,
        renew_after_s: float = 60.0,
    ) -> None:
        self._model = model
        self._speaker = speaker
        self._partials = partials
        self._frame_s = frame_ms / 1000
        # A KaldiRecognizer's memory grows with every second it hears until vosk's own
        # 10-minute rebuild (vosk-api issues 209, 526; measured here: +25 MB a minute of
        # speech). A fresh one at an utterance boundary every minute of speech keeps a
        # shift-long daemon flat, for ~80 ms of CPU each time.
        self._renew_after_s = renew_after_s
        self._max_utterance_s = max_utterance_s
        # Feed each model at its own rate: vosk does not upsample for 16 kHz models (vosk-api 1726).
        self._resampler = (
            soxr.ResampleStream(rate, model.rate, 1, dtype="int16") if rate != model.rate else None
        )
        self._kaldi = self._new_recogniser()
        self._timeline = _Timeline()
        self._fed = 0.0  # seconds of audio fed to the current recogniser
        self._utterance_fed = 0.0
        self._in_segment = False
        self._last_partial = ""
        self._speech_frames = 0
        self.cpu_calls = 0

    def _new_recogniser(self) -> Any:  # a vosk.KaldiRecognizer (vosk ships no type hints)
        import vosk

        recogniser = vosk.KaldiRecognizer(self._model.handle, self._model.rate)
        recogniser.SetWords(True)
        recogniser.SetPartialWords(self._partials)
        return recogniser

    # What a machine that cannot keep up turns down (the live daemon's degradation steps): partials read
    # on one speech frame in `partial_every` (vosk's PartialResult is a good part of its cost), or the
    # recogniser paused altogether, the speaker's loudness still measured.
    partial_every = 1
    paused = False

    def pause(self, t: float) -> list[Event]:
        """Stop listening; the utterance in progress is closed with what was heard of it."""
        self.paused = True
        self._in_segment = False
        return self._finish(t)

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        if self.paused:
            return [], []
        return [], self._hear(frame)

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        self._in_segment = False
        return [], self._finish(t)

    def _hear(self, frame: Frame) -> list[Event]:
        if not frame.speech:
            if self._in_segment:
                self._in_segment = False
                return self._finish(frame.t)
            return []
        if not self._in_segment:
            self._in_segment = True
            self._timeline.start_segment(self._fed, frame.t)
        pcm = frame.pcm
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()
        self._fed += self._frame_s
        self._utterance_fed += self._frame_s
        try:
            ended = self._kaldi.AcceptWaveform(pcm)
        except Exception as exc:
            raise ModelError(self._model.path, f"rejected the audio ({exc})") from None
        if ended:
            return self._final(self._kaldi.Result(), frame.t)
        if self._utterance_fed >= self._max_utterance_s:
            return self._finish(frame.t)
        if self._partials:
            self._speech_frames += 1
            if self._speech_frames % self.partial_every == 0:
                return self._partial(frame.t)
        return []

    def _finish(self, t: float) -> list[Event]:
        if self._utterance_fed == 0:
            return []
        result = self._final(self._kaldi.FinalResult(), t)
        if self._fed >= self._renew_after_s:
            self._kaldi = self._new_recogniser()
            self._timeline = _Timeline()
            self._fed = 0.0
            if self._in_segment:  # cut by max_utterance_s: the next frame, at t + one frame, is fed at 0
                self._timeline.start_segment(0.0, t + self._frame_s)
        return result

    def _partial(self, t: float) -> list[Event]:
        raw = self._kaldi.PartialResult()
        # Most frames leave the partial unchanged: compare the string, parse only news.
        if raw == self._last_partial:
            return []
        self._last_partial = raw
        result = json.loads(raw)
        text = result.get("partial", "")
        if not text:
            return []
        words = self._words(result.get("partial_result", ()))
        return [Transcript(t=words[0].start if words else t, speaker=self._speaker, text=text, words=words)]

    def _final(self, raw: str, t: float) -> list[Event]:
        self._utterance_fed = 0.0
        self._last_partial = ""
        result = json.loads(raw)
        text = result.get("text", "")
        words = self._words(result.get("result", ())) if text else ()
        self._timeline.forget_before(self._fed)
        if not text:
            return []
        return [
            Transcript(
                t=words[0].start if words else t, speaker=self._speaker, text=text, words=words, final=True
            )
        ]

    def _words(self, items: Iterable[dict[str, Any]]) -> tuple[Word, ...]:
        to_call = self._timeline.to_call
        return tuple(
            Word(
                word=w["word"],
                start=round(to_call(w["start"]), 3),
                end=round(to_call(w["end"]), 3),
                conf=round(w.get("conf", 1.0), 3),
            )
            for w in items
        )
