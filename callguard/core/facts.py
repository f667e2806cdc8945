"""What is known about a call before it starts: from a CTI connector, a softphone or --call-info."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from callguard.core.errors import ConfigError

LANGUAGES = ("en", "fr")
PLACEHOLDERS = ("customer_name", "company", "agent_name")  # what a prompt's phrase may name


@dataclass(frozen=True)
class CallFacts:
    """What is known about the call before it starts (CTI, softphone or --call-info)."""

    call_id: str = ""
    customer_name: str = ""
    company: str = ""
    agent_name: str = ""
    language: str = ""  # '' (not known), 'en' or 'fr'
    transfer_available: bool = True  # a supervisor or colleague can take the call
    transferred_in: bool = False  # this call was already transferred to this agent
    queue: str = ""  # the CTI's queue or skill, for the supervisors' floor

    @property
    def can_transfer(self) -> bool:
        return self.transfer_available and not self.transferred_in

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def placeholder_values(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in PLACEHOLDERS}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> CallFacts:
        """Validate a call-info mapping; every key optional, null meaning unknown."""
        if not isinstance(d, dict):
            raise ConfigError(source, "", f"must be a JSON object, got {type(d).__name__}")
        kinds = {
            f.name: (bool if f.name in ("transfer_available", "transferred_in") else str) for f in fields(cls)
        }
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key not in kinds:
                raise ConfigError(source, key, f"unknown key (expected one of {', '.join(kinds)})")
            if value is None:
                continue
            if not isinstance(value, kinds[key]):
                expected = "true or false" if kinds[key] is bool else "a string"
                raise ConfigError(source, key, f"must be {expected}, got {type(value).__name__} {value!r}")
            values[key] = value.strip() if isinstance(value, str) else value
        if "language" in values:
            values["language"] = _normalise_language(values["language"], source)
        return cls(**values)


def _normalise_language(value: str, source: str) -> str:
    # Softphones send tags like "fr-CA" or "en_US"; the ladder only needs the language.
    lang = value.lower().replace("_", "-").split("-")[0]
    if lang not in ("", *LANGUAGES):
        raise ConfigError(source, "language", f"must be 'en', 'fr' or empty, got {value!r}")
    return lang


def load_call_info(path: Path) -> CallFacts:
    """Read a `--call-info` JSON file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "call-info file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, "", f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    facts = CallFacts.from_dict(document, str(path))
    return facts if facts.call_id else replace(facts, call_id=Path(path).stem)
