"""Who may open which panel: the agents file and the panel's session cookie.

The agents file (`[serve] agents_file`) maps each agent id to the SHA-256 of that agent's panel
token, so the file gives nobody a token:

    [agents]
    "a-1042" = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

`callguard serve agent add ID` writes a line and prints the token once. The file is read again
when it changes, so an agent added (or removed) while serve runs is taken at their next request.
A panel's cookie is `<agent id>.<HMAC of the id and the token's hash>`, keyed with the server's
admin token: it is not the token, and it stops working when the agent's token is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from callguard.core.config import read_toml
from callguard.core.errors import ConfigError

AGENT_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_agents(path: Path) -> dict[str, str]:
    """Agent id -> token SHA-256; a missing file is no agents, a malformed one an error naming the entry."""
    if not path.exists():
        return {}
    document = read_toml(path, "agents file")
    agents = document.get("agents", {})
    unknown = set(document) - {"agents"}
    if unknown:
        raise ConfigError(path, sorted(unknown)[0], "unknown key (expected the [agents] table)")
    if not isinstance(agents, dict):
        raise ConfigError(path, "agents", "must be a table of agent id = token SHA-256")
    out: dict[str, str] = {}
    for agent_id, digest in agents.items():
        if not AGENT_ID.fullmatch(agent_id):
            raise ConfigError(path, f"agents.{agent_id}", "an agent id is 1-64 of A-Z a-z 0-9 . _ @ -")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise ConfigError(path, f"agents.{agent_id}", "must be a SHA-256 in 64 lower-case hex digits")
        out[agent_id] = digest
    return out


def add_agent(path: Path, agent_id: str) -> str:
    """Give `agent_id` a new token (replacing any they had): its hash goes to the file, the token is
    returned to be shown once."""
    if not AGENT_ID.fullmatch(agent_id):
        raise ConfigError(path, "agent id", f"1-64 of A-Z a-z 0-9 . _ @ -, got {agent_id!r}")
    agents = load_agents(path)
    token = secrets.token_urlsafe(24)
    agents[agent_id] = token_hash(token)
    lines = ["# callguard serve: agent id = SHA-256 of their panel token (`callguard serve agent add ID`)",
             "[agents]", *(f'"{a}" = "{d}"' for a, d in sorted(agents.items()))]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return token


@dataclass
class AgentDirectory:
    """The agents file, read again when its modification time changes."""

    path: Path
    _agents: dict[str, str] = field(default_factory=dict)
    _by_hash: dict[str, str] = field(default_factory=dict)
    _mtime: float = -1.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_error: str = ""

    def refresh(self) -> None:
        mtime = -2.0
        with contextlib.suppress(OSError):
            mtime = self.path.stat().st_mtime
        with self._lock:
            if mtime == self._mtime:
                return
            self._mtime = mtime
            try:
                agents = load_agents(self.path)
            except ConfigError as exc:  # the agents already known keep working
                self.last_error = str(exc)
                return
            self.last_error = ""
            self._agents = agents
            self._by_hash = {digest: agent for agent, digest in agents.items()}

    def agent_for_token(self, token: str) -> str | None:
        self.refresh()
        digest = token_hash(token)
        with self._lock:
            for known, agent in self._by_hash.items():
                if hmac.compare_digest(known, digest):
                    return agent
        return None

    def cookie_value(self, agent_id: str, key: str) -> str:
        with self._lock:
            digest = self._agents.get(agent_id, "")
        mac = hmac.new(key.encode(), f"{agent_id}\n{digest}".encode(), hashlib.sha256).hexdigest()
        return f"{agent_id}.{mac}"

    def agent_for_cookie(self, value: str, key: str) -> str | None:
        self.refresh()
        agent_id, _, _mac = value.rpartition(".")
        with self._lock:
            known = agent_id in self._agents
        if not known:
            return None
        return agent_id if hmac.compare_digest(value, self.cookie_value(agent_id, key)) else None

    def knows(self, agent_id: str) -> bool:
        self.refresh()
        with self._lock:
            return agent_id in self._agents

    def __len__(self) -> int:
        self.refresh()
        return len(self._agents)
