"""Helpers for driving a real daemon from a test or a probe script (not used by callguard itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from callguard.core.config import DEFAULT_CONFIG_DIR


def daemon_config_file(
    folder: Path, *, port: int, token: str, daemon: dict[str, Any] | None = None, extra: str = ""
) -> Path:
    """A config file for a daemon of its own: its store, models folder and port in `folder`, the
    shipped lexicons and prompts, and `daemon` settings over these defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "token": token, "reload_poll_s": 0.5}
    values |= daemon or {}
    lines = [
        "[store]",
        f'path = "{folder / "incidents.sqlite3"}"',
        "[asr]",
        f'models_dir = "{folder / "models"}"',
        "[detector]",
        f'lexicon_en = "{DEFAULT_CONFIG_DIR / "lexicon_en.toml"}"',
        f'lexicon_fr = "{DEFAULT_CONFIG_DIR / "lexicon_fr.toml"}"',
        "[policy]",
        f'prompts_en = "{DEFAULT_CONFIG_DIR / "prompts_en.toml"}"',
        f'prompts_fr = "{DEFAULT_CONFIG_DIR / "prompts_fr.toml"}"',
        "[daemon]",
        *(f"{key} = {json.dumps(value)}" for key, value in values.items()),
        extra,
    ]
    path = folder / "callguard.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
