"""callguard's own errors: each names the file, key or value at fault."""

from __future__ import annotations

from pathlib import Path


class CallguardError(Exception):
    """Base of every error callguard reports to a user as one line."""


class ConfigError(CallguardError):
    def __init__(self, source: str | Path, key: str, problem: str) -> None:
        self.source, self.key, self.problem = str(source), key, problem
        where = f"{source}: {key}" if key else str(source)
        super().__init__(f"{where}: {problem}")


class AudioError(CallguardError):
    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class ModelError(CallguardError):
    def __init__(self, model: str | Path, reason: str) -> None:
        self.model, self.reason = str(model), reason
        super().__init__(f"model {model}: {reason}")
