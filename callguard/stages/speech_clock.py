"""When each speaker last spoke, read off the frames the non-speech gate let through as speech.

The live daemon ends a call that it started on speech after a silence (`daemon.auto_call_end_silence_s`).
It reads that silence here, from the call's own gated frames, rather than running a second VAD and gate
beside the call: hold music, tones and line noise (quieter than SPEECH_FLOOR_DBFS) are not speech.
"""

from __future__ import annotations

from callguard.core.events import Event, Frame

SPEECH_FLOOR_DBFS = -50.0  # quieter "speech" (line noise the VAD accepts) does not keep a call open


class SpeechClock:
    """A frame stage that changes nothing: it notes the audio time heard and the last speech in it."""

    def __init__(self, frame_ms: int, floor_dbfs: float = SPEECH_FLOOR_DBFS) -> None:
        self._frame_s = frame_ms / 1000
        self._floor = floor_dbfs
        self.heard = 0.0  # audio time at the end of the last frame through
        self.last_speech = 0.0  # audio time at the end of the last speech frame through

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        end = frame.t + self._frame_s
        self.heard = end
        if frame.speech and frame.level_db > self._floor:
            self.last_speech = end
        return [frame], []

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        return [], []

    @property
    def silent_for(self) -> float:
        return self.heard - self.last_speech
