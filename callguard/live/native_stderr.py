"""What C libraries print on stderr, as log records: every line of the daemon's stderr is JSON.

PortAudio and ALSA write their complaints ("ALSA lib pcm.c:2666: Unknown PCM ...") straight to file
descriptor 2, between the JSON log lines, and a journal reader that parses each line breaks on them.
`capture_native_stderr` points fd 2 at a pipe and keeps the real stderr for the log handler alone; a
thread reads the pipe and logs each line from the `callguard.native` logger. Python's own writes to
sys.stderr (a thread's traceback, a warning) take the same way.

The pipe's write end is non-blocking: when the reader falls behind by a full pipe (64 KB), a C
library's message is lost rather than the audio thread that printed it held up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from typing import TextIO

log = logging.getLogger("callguard.native")
LINE_LIMIT = 8192  # a longer line is logged in pieces


def capture_native_stderr() -> TextIO:
    """Send fd 2 to a reader thread that logs each line; return a stream on the real stderr, for the
    log handler (which must not write to fd 2 any more: its lines would come back as records)."""
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_NONBLOCK)
    threading.Thread(target=_log_lines, args=(read_end,), name="native-stderr", daemon=True).start()
    return real


def _log_lines(read_end: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        while line := pipe.readline(LINE_LIMIT):
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if text.strip():
                with contextlib.suppress(Exception):  # the log itself failing has nowhere else to go
                    log.warning(text)
