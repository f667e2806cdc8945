"""An install from a built wheel works outside the repository: what IT does on a workstation.

The wheel is built from this checkout and installed, with its dependencies, into a fresh venv;
every command then runs from an empty folder elsewhere, so nothing can be read from the source
tree by accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "fixtures" / "sample" / "abusive_en_ulaw"


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheel-install")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)],
        root,
        dict(os.environ),
    )
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("callguard-*.whl"))
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CALLGUARD_CONFIG")}
    env["HOME"] = str(root / "home")
    env["XDG_CONFIG_HOME"] = str(root / "home" / ".config")
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    constraints = ["-c", str(REPO / "constraints.txt")] if (REPO / "constraints.txt").exists() else []
    done = _run([str(python), "-m", "pip", "install", "-q", *constraints, str(wheel)], root, env, timeout=900)
    assert done.returncode == 0, done.stderr
    return root, env


def test_the_wheel_holds_what_the_commands_read(installed: tuple[Path, dict[str, str]]) -> None:
    root, env = installed
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    for suffix in (".wav", ".transcript.json", ".call.json"):
        shutil.copy(f"{SAMPLE}{suffix}", elsewhere / f"call{suffix}")
    where = _run(
        [str(root / "venv" / "bin" / "python"), "-c", "import callguard; print(callguard.__file__)"],
        elsewhere,
        env,
    )
    assert str(root / "venv") in where.stdout, "the test must run the installed wheel, not the checkout"

    check = _run(["callguard", "config", "check"], elsewhere, env)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
    models = _run(["callguard", "models", "list"], elsewhere, env)
    assert models.returncode == 0 and "vosk-model-small-en-us-0.15" in models.stdout, models.stderr
    daemon = _run(["callguard", "daemon", "--help"], elsewhere, env)
    assert daemon.returncode == 0 and "--model" in daemon.stdout, daemon.stderr
    replay = _run(
        [
            "callguard",
            "replay",
            "call.wav",
            "--transcript",
            "call.transcript.json",
            "--call-info",
            "call.call.json",
        ],
        elsewhere,
        env,
    )
    assert replay.returncode == 0, replay.stderr
    assert "PROMPT [abusive]" in replay.stdout and "PROMPT [release]" in replay.stdout

    # IT's editable copy, found in the user's folder without --config
    init = _run(["callguard", "config", "init"], elsewhere, env)
    assert init.returncode == 0, init.stderr
    mine = Path(env["XDG_CONFIG_HOME"]) / "callguard" / "callguard.toml"
    mine.write_text(mine.read_text().replace("threat_sensitivity = 0.4", "threat_sensitivity = 0.5"))
    check = _run(["callguard", "config", "check"], elsewhere, env)
    assert check.returncode == 0 and str(mine) in check.stdout, check.stdout + check.stderr
    trained = _run(["callguard", "detector", "train", "--help"], elsewhere, env)
    assert trained.returncode == 0


def test_the_service_cannot_be_shadowed_by_a_checkout_in_its_folder(tmp_path: Path) -> None:
    """Issue 17.17: started from a folder holding a callguard/ directory, the daemon imported that."""
    unit = (REPO / "scripts" / "callguard.service").read_text()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert " -P -m callguard.live.daemon " in start and "WorkingDirectory=%h" in unit
    shadow = tmp_path / "callguard"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise ImportError("a checkout shadowed the package")\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shadowed = _run([sys.executable, "-m", "callguard.live.daemon", "--help"], tmp_path, env)
    assert "shadowed" in shadowed.stderr  # what the unit used to run
    as_the_unit_runs = _run([sys.executable, "-P", "-m", "callguard.live.daemon", "--help"], tmp_path, env)
    assert as_the_unit_runs.returncode == 0 and "--config" in as_the_unit_runs.stdout, as_the_unit_runs.stderr


def test_install_service_writes_the_config_copy_and_the_unit(tmp_path: Path) -> None:
    """scripts/install_service.sh, without starting anything: the agent's config and unit."""
    config_dir, unit_dir = tmp_path / "config", tmp_path / "units"
    env = dict(os.environ) | {"CALLGUARD_CONFIG_DIR": str(config_dir), "SYSTEMD_USER_DIR": str(unit_dir)}
    env["HOME"] = str(tmp_path / "home")  # the store's folder the script makes private: the test's own
    env["CALLGUARD_ALLOW_ROOT"] = "1"  # CI runs as root; the script refuses it for a real agent
    done = _run(
        ["bash", str(REPO / "scripts" / "install_service.sh"), "--no-start", "--python", sys.executable],
        tmp_path,
        env,
    )
    assert done.returncode == 0, done.stderr
    config = config_dir / "callguard.toml"
    assert (config_dir / "lexicon_en.toml").exists() and (config_dir / "labelled" / "README.md").exists()
    assert (config.stat().st_mode & 0o777) == 0o600  # it holds the token
    token = next(
        line.split('"')[1] for line in config.read_text().splitlines() if line.startswith("token = ")
    )
    assert len(token) >= 24 and f"#token={token}" in done.stdout
    unit = (unit_dir / "callguard.service").read_text()
    assert f"-P -m callguard.live.daemon --config {config}" in unit and "@PYTHON@" not in unit


def test_install_service_makes_private_what_it_finds_open_to_others(tmp_path: Path) -> None:
    """Issue 17.9: a config with a token IT set, the api-token file and the store were left readable by
    every user; the script only set 600 on a token it generated itself."""
    config_dir, unit_dir, home = tmp_path / "config", tmp_path / "units", tmp_path / "home"
    config_dir.mkdir()
    store = home / ".local" / "share" / "callguard" / "incidents.sqlite3"
    store.parent.mkdir(parents=True)
    config = config_dir / "callguard.toml"
    config.write_text('[daemon]\ntoken = "set-by-it-0123456789abcdef"\n', encoding="utf-8")
    for path, mode in ((config, 0o644), (store.parent, 0o755)):
        path.chmod(mode)
    for private in (store, Path(f"{store}-wal"), store.parent / "api-token"):
        private.write_bytes(b"")
        private.chmod(0o644)
    env = dict(os.environ) | {"CALLGUARD_CONFIG_DIR": str(config_dir), "SYSTEMD_USER_DIR": str(unit_dir)}
    env |= {"HOME": str(home), "CALLGUARD_ALLOW_ROOT": "1"}
    script = ["bash", str(REPO / "scripts" / "install_service.sh"), "--no-start", "--python", sys.executable]
    done = _run(script, tmp_path, env)
    assert done.returncode == 0, done.stderr
    modes = {p: p.stat().st_mode & 0o777 for p in (config, store.parent, store, Path(f"{store}-wal"))}
    modes[store.parent / "api-token"] = (store.parent / "api-token").stat().st_mode & 0o777
    assert modes == {
        config: 0o600,
        store.parent: 0o700,
        store: 0o600,
        Path(f"{store}-wal"): 0o600,
        store.parent / "api-token": 0o600,
    }
    assert f"made {config} private (mode 600, was 644)" in done.stdout
    assert 'token = "set-by-it-0123456789abcdef"' in config.read_text(), "IT's token kept"
    again = _run(script, tmp_path, env)
    assert again.returncode == 0 and "private" not in again.stdout, "nothing to change the second time"

    # a store path that points into a folder of other things: the folder is not the script's to close
    shared = home / "shared"
    shared.mkdir(mode=0o755)
    (shared / "notes.txt").write_text("the agent's")
    shared.chmod(0o755)
    config.write_text(config.read_text() + f'[store]\npath = "{shared / "incidents.sqlite3"}"\n')
    third = _run(script, tmp_path, env)
    assert third.returncode == 0 and (shared.stat().st_mode & 0o777) == 0o755
    assert "holds other files: left as is" in third.stderr
