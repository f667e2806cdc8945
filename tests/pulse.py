"""A private headless PulseAudio for the tests that capture real audio (sources and the live daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CI_PULSE = REPO / "scripts" / "ci_pulse.sh"


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A headless PulseAudio with the null sink `callsink`; yields the environment to run clients in."""
    if shutil.which("pulseaudio") is None:
        pytest.fail(
            "pulseaudio is not installed: run scripts/ci_pulse.sh install (apt: pulseaudio pulseaudio-utils)"
        )
    runtime = tmp_path_factory.mktemp("xdg")
    started = subprocess.run(["bash", str(CI_PULSE), "start", str(runtime)], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    env = os.environ | {"XDG_RUNTIME_DIR": str(runtime), "PULSE_SOURCE": "callsink.monitor"}
    yield env
    subprocess.run(["bash", str(CI_PULSE), "stop", str(runtime)], check=False)


def play(env: dict[str, str], wav: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["paplay", str(wav)], env=env | {"PULSE_SINK": "callsink"})
