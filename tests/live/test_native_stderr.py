"""Every line the daemon writes on stderr is JSON, C libraries' messages included (issue 17.18:
PortAudio's and ALSA's messages broke the JSON log lines). A real daemon in a subprocess, with C code
writing to fd 2 through libc, as PortAudio and ALSA do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.live.harness import free_port, write_config

DRIVER = "import sys; from pathlib import Path; from callguard.testing import run_daemon_writing_from_c;"
DRIVER += " sys.exit(run_daemon_writing_from_c(Path(sys.argv[1])))"


def test_every_stderr_line_is_json_with_c_messages_as_native_records(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, daemon={"auto_calls": False})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(config)],
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    lines = done.stderr.decode("utf-8").splitlines()
    assert done.returncode == 0, lines[-20:]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
    native = [r["msg"] for r in records if r["logger"] == "callguard.native"]
    assert "ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear" in native
    assert "PortAudio fprintf from C {not json" in native
    assert "a Python print on sys.stderr" in native
    messages = [r["msg"] for r in records if r["logger"] == "callguard.live.daemon"]
    assert "daemon ready" in messages and messages[-1] == "stopped", "the daemon's own records as before"
