"""A recorded call played into the live daemon as if it came from the devices, at the pace it was
spoken (`callguard daemon --replay FILE`): for trials of the panel and the floor, training, and the
end-to-end path from audio to a supervisor's wallboard without a headset.

It has the shape of the device capture (start, stop, split, health, watchdog) and queues the same
blocks, so the daemon's worker cannot tell the two apart.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from callguard.audio.files import RecordingInfo, probe, read_blocks
from callguard.core.config import Config
from callguard.core.events import AudioBlock, Role
from callguard.sources.devices import CapturedBlock


class RecordingPlayback:
    def __init__(
        self, path: Path, config: Config, blocks: queue.Queue[CapturedBlock], block_s: float
    ) -> None:
        self.info: RecordingInfo = probe(
            path, config.audio
        )  # a bad file fails here, before the daemon starts
        self.rate = config.audio.rate
        self.blocks = blocks
        self.block_samples = max(1, int(self.rate * block_s))
        self.finished = threading.Event()  # every block of the file is queued
        self.queued_s = 0.0
        self._split_samples = 0  # samples handed on: the blocks' audio time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="playback", daemon=True)

    @property
    def roles(self) -> tuple[Role, ...]:
        return self.info.roles

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def split(self, block: CapturedBlock) -> list[AudioBlock]:
        t, self._split_samples = self._split_samples / self.rate, self._split_samples + len(block.data)
        return [
            AudioBlock(role, np.ascontiguousarray(block.data[:, i]), self.rate, t)
            for i, role in enumerate(self.info.roles)
        ]

    def health(self) -> list[dict[str, Any]]:
        playing = self._thread.is_alive()
        return [
            {
                "roles": list(self.info.roles),
                "role": "+".join(self.info.roles),
                "device": f"recording {self.info.path.name}",
                "ok": playing or self.finished.is_set(),
                "state": "running" if playing else "finished" if self.finished.is_set() else "closed",
                "rate": self.info.rate,
                "played_s": round(self.queued_s, 1),
            }
        ]

    def watchdog(self) -> None:
        """Nothing to reopen: a recording does not get unplugged."""

    def _play(self) -> None:
        started = time.monotonic()
        for block in read_blocks(self.info, self.rate):
            for start in range(0, len(block), self.block_samples):
                chunk = block[start : start + self.block_samples]
                self.queued_s += len(chunk) / self.rate
                # at the pace it was spoken: each chunk when its last sample would have been heard
                if self._stop.wait(max(0.0, started + self.queued_s - time.monotonic())):
                    return
                self.blocks.put(CapturedBlock(0, 1, self.rate, np.ascontiguousarray(chunk), time.monotonic()))
        self.finished.set()
