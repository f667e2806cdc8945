"""Every event of a call as one JSON object a line: `{"call": CALL_ID, **event.to_dict()}`.

`Event.from_dict` reads a line back (without its `call` key). With `part=True` the file is
written as NAME.part and renamed to NAME when the sink closes, so a file under its own name
is a finished one (a batch resumes on that).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from callguard.core.events import Event
from callguard.sinks.base import CallInfo


class JsonlSink:
    def __init__(self, path: Path, *, part: bool = False) -> None:
        self.path = path
        self._written = path.with_name(path.name + ".part") if part else path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self._written.open("w", encoding="utf-8")

    def on_event(self, call: CallInfo, event: Event) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: events written after the sink was closed")
        record = {"call": call.call_id, **event.to_dict()}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self._written != self.path:
            os.replace(self._written, self.path)
