"""scripts/probe_daemon.py (issue 17's probe, re-run) on a fast subset of its items, so that it
cannot rot: a real daemon over real HTTP on 127.0.0.1, each item's line PASS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_probe_passes_its_fast_items() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "probe_daemon.py"), "--only", "1,5,13,14,16"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    verdicts = {int(m.group(1)): m.group(2) for line in lines if (m := re.match(r"\s*(\d+)\s+(\w+)\s", line))}
    assert verdicts == dict.fromkeys((1, 5, 13, 14, 16), "PASS"), done.stdout + done.stderr[-2000:]
    assert done.returncode == 0 and lines[-1] == "-- 5 PASS, 0 FAIL, 0 SKIP"
