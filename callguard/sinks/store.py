"""The incident store: every call, detection, prompt and agent action in SQLite.

One writer (the daemon's worker) commits each event as it happens, in its own
short transaction, with the database in WAL mode and `synchronous=FULL`: a
process killed at any moment (kill -9) loses nothing that was committed.
Transcripts are redacted of card numbers, phone numbers and e-mail addresses
before they are written, unless IT turns `store.redact` off. While the disk
refuses writes (full, I/O errors), the sink holds the events in memory, in
order and bounded, and writes them once it accepts writes again.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import (
    LEVELS,
    Abuse,
    AgentAction,
    BreakTaken,
    CallEnd,
    CallStart,
    CallSummary,
    Event,
    HelpRequest,
    LanguageDecided,
    LevelChange,
    Notice,
    Prompt,
    Shouting,
    Transcript,
)
from callguard.core.redact import redact_text
from callguard.sinks.base import CallInfo
from callguard.sinks.outbox import FloorMessage, FloorMessages, Share

SCHEMA_VERSION = 2  # 2: the floor's outbox
_CALL_COLUMNS = (
    "call_id, started_at, source, customer_name, company, agent_name, language, transfer_available,"
    " transferred_in"
)
_EVENT_TABLES = ("detections", "prompts", "actions", "levels", "transcripts", "notices")
_CALL_SLOTS = ", ".join("?" * len(_CALL_COLUMNS.split(",")))
HELD_EVENTS = 20_000  # events kept in memory while the disk refuses writes: an hour of busy calls
log = logging.getLogger("callguard.sinks.store")


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    started_at REAL NOT NULL,          -- unix time
    ended_at REAL,                     -- NULL while the call runs (or if the daemon died)
    source TEXT NOT NULL,              -- 'api' (CTI connector) or 'auto' (started on speech)
    customer_name TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '',
    agent_name TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    transfer_available INTEGER NOT NULL DEFAULT 0,
    transferred_in INTEGER NOT NULL DEFAULT 0,
    level_reached TEXT NOT NULL DEFAULT 'calm',
    duration REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    call INTEGER NOT NULL REFERENCES calls(id),
    t REAL NOT NULL,
    speaker TEXT NOT NULL,
    category TEXT NOT NULL,            -- profanity, insult, threat, shouting
    severity INTEGER NOT NULL DEFAULT 1,
    detail TEXT NOT NULL DEFAULT ''    -- matched words (abuse) or level in dBFS (shouting)
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    call INTEGER NOT NULL REFERENCES calls(id),
    t REAL NOT NULL,
    prompt_id TEXT NOT NULL,
    level TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    alert INTEGER NOT NULL DEFAULT 0,
    because TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    call INTEGER NOT NULL REFERENCES calls(id),
    t REAL NOT NULL,
    action TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS levels (
    id INTEGER PRIMARY KEY,
    call INTEGER NOT NULL REFERENCES calls(id),
    t REAL NOT NULL,
    level TEXT NOT NULL,
    previous TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS transcripts (
    id INTEGER PRIMARY KEY,
    call INTEGER NOT NULL REFERENCES calls(id),
    t REAL NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY,
    call INTEGER REFERENCES calls(id),
    t REAL NOT NULL,
    message TEXT NOT NULL
);
-- What the supervisors' floor is to get, written in the same transaction as the event it comes from;
-- a message leaves when the floor has answered that it has it (sent_at). seq starts at the unix time in
-- milliseconds when the table is made, so a store deleted and recreated never reuses a number.
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,                  -- ISO 8601 UTC, the event's wall-clock time
    t REAL NOT NULL,
    data TEXT NOT NULL,                -- JSON, already cut down to what [floor] share allows
    priority INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,           -- unix time
    sent_at REAL,
    rejected TEXT                      -- why the floor refused it (kept, set aside, not sent again)
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(priority DESC, seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS detections_call ON detections(call);
CREATE INDEX IF NOT EXISTS prompts_call ON prompts(call);
CREATE INDEX IF NOT EXISTS actions_call ON actions(call);
"""

LEVEL_ORDER = LEVELS  # the ladder's one order, from core


# --- the store -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message of the outbox, as the floor link reads it back."""

    seq: int
    call_id: str
    kind: str
    at: str
    t: float
    data: dict[str, Any]
    priority: bool
    queued_at: float

    def wire(self) -> dict[str, Any]:
        """The message as docs/floor-protocol.md has it."""
        return {
            "seq": self.seq,
            "call_id": self.call_id,
            "kind": self.kind,
            "at": self.at,
            "t": self.t,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One row of `callguard incidents`."""

    id: int
    call_id: str
    started_at: float
    ended_at: float | None
    source: str
    customer_name: str
    company: str
    agent_name: str
    language: str
    level_reached: str
    duration: float | None
    end_reason: str | None
    detections: int
    prompts: int
    actions: int

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at)),
            "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ended_at))
            if self.ended_at
            else "",
            "source": self.source,
            "customer_name": self.customer_name,
            "company": self.company,
            "agent_name": self.agent_name,
            "language": self.language,
            "level_reached": self.level_reached,
            "duration_s": round(self.duration, 1) if self.duration is not None else "",
            "end_reason": self.end_reason or "",
            "detections": self.detections,
            "prompts": self.prompts,
            "actions": self.actions,
        }


class IncidentStore:
    """SQLite incident store. Thread-safe through one lock; meant for one writing process."""

    def __init__(self, path: Path, *, redact: bool = True) -> None:
        self.path = path
        self.redact = redact
        self._lock = threading.RLock()
        self._open_calls: dict[int, tuple[Any, ...]] = {}  # row -> its INSERT values, while it runs
        self._grouping = False  # inside _transaction: the first write begins it
        self.recreated = ""  # when the file was deleted or replaced under us, and recreated
        self._open()
        self.last_error = ""

    def _open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Incidents name customers: readable by the agent's user only. SQLite gives the WAL and
            # the shared-memory file the database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            if path.stat().st_mode & 0o077:
                with contextlib.suppress(PermissionError):  # not ours to change: IT's file, IT's modes
                    path.chmod(0o600)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            tables = {
                row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if tables and "calls" not in tables:  # someone else's database: never write our schema into it
                self._db.close()
                raise ConfigError(
                    path,
                    "store.path",
                    f"is not a callguard incident store (its tables: {', '.join(sorted(tables))})",
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced at every commit, so even a power cut keeps committed events.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ?"
                " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
                (int(time.time() * 1000),),
            )
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._identity = _file_identity(path)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(path, "store.path", f"cannot open the incident store ({exc})") from None

    def _reopen_if_replaced(self) -> None:
        """The file deleted or replaced while the daemon runs (a cleanup script, a restore): every
        later write would go to the unlinked file and be lost, silently. Recreate it, with the
        calls still running under their row ids, and say so (log, /health)."""
        if _file_identity(self.path) == self._identity:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        try:
            self._open()
        except ConfigError as exc:  # replaced by a foreign file: writes fail, health says why
            raise sqlite3.OperationalError(str(exc)) from None
        for row, values in self._open_calls.items():
            self._db.execute(
                f"INSERT OR IGNORE INTO calls (id, {_CALL_COLUMNS}) VALUES (?, {_CALL_SLOTS})", (row, *values)
            )
        self.recreated = (
            f"{self.path} was deleted or replaced at {time.strftime('%Y-%m-%d %H:%M:%S')}: recreated"
        )
        log.warning(
            "incident store recreated",
            extra={"fields": {"path": str(self.path), "calls": len(self._open_calls)}},
        )

    @classmethod
    def from_config(cls, config: Config) -> IncidentStore:
        return cls(config.path(config.store.path), redact=config.store.redact)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def healthy(self) -> bool:
        """Whether the store answers and its last write went through (the sink's retry of what the
        disk refused is the next write: StoreSink.retry)."""
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
            return not self.last_error
        except sqlite3.Error as exc:
            self.last_error = str(exc)
            return False

    def _write(self, sql: str, params: Iterable[Any]) -> int:
        """One statement: in its own committed transaction, or in the one `_transaction` holds."""
        with self._lock:
            try:
                if not self._db.in_transaction:
                    self._reopen_if_replaced()
                    if self._grouping:  # the transaction starts with its first write
                        self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(sql, tuple(params))
            except sqlite3.Error as exc:
                self.last_error = f"{exc} ({sql.split()[0]} {sql.split()[2]})"
                raise
            self.last_error = ""
            return int(cursor.lastrowid or 0)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Every write inside commits together or not at all (an event and its outbox message). It
        begins at the first write: most events (partials, speech starts) write nothing, and cost no
        transaction."""
        with self._lock:
            self._grouping = True
            try:
                yield
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            else:
                if self._db.in_transaction:
                    try:
                        self._db.execute("COMMIT")
                    except sqlite3.Error as exc:  # a full disk can refuse the commit itself
                        self.last_error = f"{exc} (COMMIT)"
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                        raise
            finally:
                self._grouping = False

    def _queue_message(self, message: FloorMessage | None) -> None:
        if message is None:
            return
        self._write(
            "INSERT INTO outbox (call_id, kind, at, t, data, priority, queued_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                message.call_id,
                message.kind,
                message.at,
                message.t,
                json.dumps(message.data, ensure_ascii=False),
                int(message.priority),
                time.time(),
            ),
        )

    def start_call(
        self,
        facts: Mapping[str, Any],
        *,
        source: str,
        started_at: float | None = None,
        message: FloorMessage | None = None,
    ) -> int:
        """Insert a call row and return its row id (the handle for every later write)."""
        values = (
            str(facts.get("call_id", "")),
            started_at if started_at is not None else time.time(),
            source,
            str(facts.get("customer_name", "")),
            str(facts.get("company", "")),
            str(facts.get("agent_name", "")),
            str(facts.get("language", "")),
            int(bool(facts.get("transfer_available", False))),
            int(bool(facts.get("transferred_in", False))),
        )
        with self._transaction():
            row = self._write(f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({_CALL_SLOTS})", values)
            self._queue_message(message)
        self._open_calls[row] = values
        return row

    def end_call(
        self,
        call: int,
        *,
        duration: float,
        reason: str,
        ended_at: float | None = None,
        message: FloorMessage | None = None,
    ) -> None:
        with self._transaction():
            self._write(
                "UPDATE calls SET ended_at = ?, duration = ?, end_reason = ? WHERE id = ?",
                (ended_at if ended_at is not None else time.time(), duration, reason, call),
            )
            self._queue_message(message)
        self._open_calls.pop(call, None)

    def close_interrupted(self) -> int:
        """Calls a killed daemon left open: ended at their last stored event, as "interrupted".
        Only a daemon that starts calls this: no call of its own is running yet."""
        last = (
            "MAX(calls.started_at, COALESCE((SELECT MAX(started_at + t) FROM ("
            + " UNION ALL ".join(f"SELECT t FROM {table} WHERE call = calls.id" for table in _EVENT_TABLES)
            + ")), calls.started_at))"
        )
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE calls SET ended_at = {last}, duration = {last} - started_at,"
                " end_reason = 'interrupted' WHERE ended_at IS NULL"
            )
        return cursor.rowcount

    def set_language(self, call: int, language: str) -> None:
        self._write("UPDATE calls SET language = ? WHERE id = ?", (language, call))

    def record(self, call: int | None, event: Event, message: FloorMessage | None = None) -> None:
        """Write one pipeline event if it is one the store keeps (others are ignored), and the
        floor's message about it, together. `call` None: the call has no row (the store was down
        when it started); the message is still kept."""
        with self._transaction():
            if call is not None:
                self._record(call, event)
            self._queue_message(message)

    def _record(self, call: int, event: Event) -> None:
        match event:
            case Abuse():
                self._write(
                    "INSERT INTO detections (call, t, speaker, category, severity, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    # a semantic match's words are the whole utterance: redacted like a transcript
                    (
                        call,
                        event.t,
                        event.speaker,
                        event.category,
                        event.severity,
                        self._text(" ".join(event.words)),
                    ),
                )
            case Shouting():
                self._write(
                    "INSERT INTO detections (call, t, speaker, category, severity, detail)"
                    " VALUES (?, ?, ?, 'shouting', 1, ?)",
                    (call, event.t, event.speaker, f"{event.level_db:.1f} dBFS ({event.reason})"),
                )
            case Prompt():
                self._write(
                    "INSERT INTO prompts (call, t, prompt_id, level, title, text, alert, because)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        call,
                        event.t,
                        event.id,
                        event.level,
                        event.title,
                        event.text,
                        int(event.alert),
                        "; ".join(event.because),
                    ),
                )
            case AgentAction():
                self._write(
                    "INSERT INTO actions (call, t, action) VALUES (?, ?, ?)", (call, event.t, event.action)
                )
            case LevelChange():
                self._write(
                    "INSERT INTO levels (call, t, level, previous, reason) VALUES (?, ?, ?, ?, ?)",
                    (call, event.t, event.level, event.previous, event.reason),
                )
                self._raise_level(call, event.level)
            case Transcript(final=True) if event.text.strip():
                text = self._text(event.text)
                self._write(
                    "INSERT INTO transcripts (call, t, speaker, text) VALUES (?, ?, ?, ?)",
                    (call, event.t, event.speaker, text),
                )
            case Notice():
                self._write(
                    "INSERT INTO notices (call, t, message) VALUES (?, ?, ?)", (call, event.t, event.message)
                )
            case LanguageDecided():
                self.set_language(call, event.lang)
            case CallSummary():
                self._raise_level(call, event.level_reached)
            case HelpRequest():
                self._write(
                    "INSERT INTO actions (call, t, action) VALUES (?, ?, 'help_requested')", (call, event.t)
                )

    def _text(self, said: str) -> str:
        return redact_text(said) if self.redact else said

    def _raise_level(self, call: int, level: str) -> None:
        # level_reached only ever goes up: a call that calmed down still reached its peak.
        rank = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 0
        case_sql = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(LEVEL_ORDER))
        self._write(
            "UPDATE calls SET level_reached = ? WHERE id = ?"
            f" AND (CASE level_reached {case_sql} ELSE 0 END) < ?",
            (level, call, rank),
        )

    # --- the floor's outbox ------------------------------------------------------------------------

    def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        """The next messages to send: threat alerts and help requests first, then in order."""
        return self._outbox_query("WHERE sent_at IS NULL ORDER BY priority DESC, seq LIMIT ?", (limit,))

    def outbox_unsent_priority(self, *, queued_before: float) -> list[OutboxEntry]:
        return self._outbox_query(
            "WHERE sent_at IS NULL AND priority = 1 AND queued_at < ? ORDER BY seq", (queued_before,)
        )

    def outbox_pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])

    def mark_sent(self, seqs: list[int], sent_at: float) -> None:
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        self._write(f"UPDATE outbox SET sent_at = ? WHERE seq IN ({marks})", (sent_at, *seqs))

    def mark_rejected(self, seq: int, reason: str, at: float) -> None:
        self._write("UPDATE outbox SET sent_at = ?, rejected = ? WHERE seq = ?", (at, reason[:1000], seq))

    def prune_sent(self, sent_before: float) -> int:
        with self._lock:
            cursor = self._db.execute("DELETE FROM outbox WHERE sent_at < ?", (sent_before,))
        return cursor.rowcount

    def _outbox_query(self, where: str, params: tuple[Any, ...]) -> list[OutboxEntry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, call_id, kind, at, t, data, priority, queued_at FROM outbox {where}", params
            ).fetchall()
        return [
            OutboxEntry(seq, call_id, kind, at, t, json.loads(data), bool(p), q)
            for seq, call_id, kind, at, t, data, p, q in rows
        ]

    # --- reading ---------------------------------------------------------------------------------

    def calls(self, *, limit: int = 50, min_level: str = "calm") -> list[CallRecord]:
        """The most recent calls first, with counts of their detections, prompts and actions."""
        rank = LEVEL_ORDER.index(min_level)
        wanted = LEVEL_ORDER[rank:]
        marks = ",".join("?" for _ in wanted)
        sql = (
            "SELECT c.id, c.call_id, c.started_at, c.ended_at, c.source, c.customer_name, c.company,"
            " c.agent_name, c.language, c.level_reached, c.duration, c.end_reason,"
            " (SELECT COUNT(*) FROM detections d WHERE d.call = c.id),"
            " (SELECT COUNT(*) FROM prompts p WHERE p.call = c.id),"
            " (SELECT COUNT(*) FROM actions a WHERE a.call = c.id)"
            f" FROM calls c WHERE c.level_reached IN ({marks}) ORDER BY c.id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*wanted, limit)).fetchall()
        return [CallRecord(*row) for row in rows]

    def details(self, call: int) -> dict[str, list[dict[str, Any]]]:
        """Every row that belongs to one call, table by table (for exports and tests)."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for table in ("detections", "prompts", "actions", "levels", "transcripts", "notices"):
                cursor = self._db.execute(f"SELECT * FROM {table} WHERE call = ? ORDER BY id", (call,))
                names = [d[0] for d in cursor.description]
                out[table] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return out

    def find_call(self, call_id: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM calls WHERE call_id = ? ORDER BY id DESC LIMIT 1", (call_id,)
            ).fetchone()
        return int(row[0]) if row else None


_Held = tuple[CallInfo, Event, FloorMessage | None, float]


class StoreSink:
    """The incident store as a sink: each call's row, its events, and, when a floor is configured,
    the floor's messages about them, each with its event in one transaction.

    A write the disk refuses (sqlite3.OperationalError: full, I/O error, locked) is held in memory
    with every event after it, in order, up to `capacity` events; each new event, and `retry()`
    (`BackgroundSinks` calls it every idle second while the sink is `waiting`), writes them oldest
    first. A call started on a full disk is stored, with its events, once the disk takes writes
    again. Without a store (it could not be opened), events are held the same way and each retry
    first asks `reopen`."""

    def __init__(
        self,
        store: IncidentStore | None,
        *,
        reopen: Callable[[], IncidentStore | None] | None = None,
        transcripts: bool = True,
        share: Share | None = None,
        capacity: int = HELD_EVENTS,
    ) -> None:
        self.store = store
        self.reopen = reopen
        self.transcripts = transcripts
        self.share = share  # None: no floor, no outbox
        self.capacity = capacity
        self._rows: dict[str, int | None] = {}
        self._messages: dict[str, FloorMessages] = {}
        # (call, event, its floor message, unix time it happened) not yet written, oldest first
        self._held: collections.deque[_Held] = collections.deque()
        self.lost = 0  # events beyond `capacity` while the disk refused writes
        self._refused = ""  # the disk's error while events are held
        self.on_priority: Callable[[], None] = lambda: None  # the floor link's wake-up
        self.successor: StoreSink | None = None  # the sink a reload puts in place: it takes what is held

    @property
    def held(self) -> int:
        """Events waiting in memory for the disk."""
        return len(self._held)

    @property
    def waiting(self) -> bool:
        """Events held, or a store still to open: `retry()` has work."""
        return bool(self._held) or (self.store is None and self.reopen is not None)

    def on_event(self, call: CallInfo, event: Event) -> None:
        if isinstance(event, Transcript) and not self.transcripts:
            return
        messages = self._messages.get(call.call_id)
        if messages is None and self.share is not None:
            messages = self._messages[call.call_id] = FloorMessages(call, self.share)
        message = messages.message(event) if messages is not None else None
        if isinstance(event, CallEnd | BreakTaken):  # the call's last message: its state goes
            self._messages.pop(call.call_id, None)
        if len(self._held) >= self.capacity:
            self.lost += 1
            if self.lost <= 10 or self.lost % 1000 == 0:
                log.error(
                    "incident store: events held for the disk at capacity, dropped",
                    extra={"fields": {"held": len(self._held), "lost": self.lost}},
                )
        else:
            self._held.append((call, event, message, time.time()))
            self.retry()
        if message is not None and message.priority:
            self.on_priority()

    def retry(self) -> bool:
        """Write the held events, oldest first, until the disk refuses one; True when none is left."""
        if self.store is None:
            self.store = self.reopen() if self.reopen is not None else None
            if self.store is None:
                return not self._held
        written = 0
        while self._held:
            call, event, message, at = self._held[0]
            try:
                self._write(call, event, message, at)
            except sqlite3.OperationalError as exc:
                if not self._refused:  # logged once as holding starts, not for every event
                    log.warning(
                        "incident store refuses writes: events held in memory until it takes them",
                        extra={"fields": {"error": str(exc), "capacity": self.capacity}},
                    )
                self._refused = str(exc)
                return False
            except Exception:  # not the disk: this event can never be written, the next ones can
                self._held.popleft()
                raise
            self._held.popleft()
            written += 1
        if self._refused:
            self._refused = ""
            log.info("incident store takes writes again", extra={"fields": {"written_from_memory": written}})
        return True

    def _write(self, call: CallInfo, event: Event, message: FloorMessage | None, at: float) -> None:
        store = self.store
        assert store is not None, "retry() writes only with a store"
        match event:
            case CallStart():
                self._rows[call.call_id] = None  # if the write fails, the call's events still reach the floor
                self._rows[call.call_id] = store.start_call(
                    call.facts, source=call.source, started_at=call.started_at, message=message
                )
            case BreakTaken():  # after its call: no row of its own, the outbox only
                store.record(None, event, message)
            case CallEnd():
                row = self._rows.get(call.call_id)
                if row is not None:
                    duration, reason = event.duration, event.reason
                    store.end_call(row, duration=duration, reason=reason, ended_at=at, message=message)
                else:
                    store.record(None, event, message)
                self._rows.pop(call.call_id, None)
            case _:
                store.record(self._rows.get(call.call_id), event, message)

    def adopt(self, old: StoreSink) -> None:
        """Take the events an older sink still holds, before any of this sink's own (a config reload
        replaced it while the disk refused writes): they are written once the disk takes them."""
        same_store = old.store is not None and self.store is not None and old.store.path == self.store.path
        if same_store:  # row ids of calls already stored stay valid
            self._rows = {**old._rows, **self._rows}
        self._held = collections.deque([*old._held, *self._held])
        self._refused = self._refused or old._refused
        old._held.clear()
        if self._held:
            log.info(
                "incident store: events held for the disk handed to the reloaded store",
                extra={"fields": {"held": len(self._held)}},
            )

    def close(self) -> None:
        """Write what is held if the store takes it (a store never opened is not asked for now: a
        reload may have replaced it), hand the rest to the successor if there is one, then close."""
        if self.store is not None:
            self.retry()
        if self._held and self.successor is not None:
            self.successor.adopt(self)
        if self._held:
            error = self.store.last_error if self.store is not None else "no store"
            log.error(
                "incident store closed with events it could not write",
                extra={"fields": {"lost": len(self._held), "error": error}},
            )
        if self.store is not None:
            self.store.close()


def write_csv(records: Iterable[CallRecord], out: TextIO) -> int:
    """Supervisor export: one line per call. Returns the number of lines written."""
    rows: Iterator[dict[str, Any]] = (r.as_row() for r in records)
    first = next(rows, None)
    fieldnames = list(first) if first else list(CallRecord.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fieldnames)
    writer.writeheader()
    count = 0
    for row in [first, *rows] if first else []:
        writer.writerow(row)
        count += 1
    return count


def cmd_incidents(config: Config, *, csv_out: Path | None, limit: int) -> int:
    """`callguard incidents`: list recent calls, or export them as CSV (`-` for stdout)."""
    path = config.path(config.store.path)
    if not path.exists():
        print(f"callguard: no incident store at {path} (store.path); nothing recorded yet", file=sys.stderr)
        return 1
    store = IncidentStore(path, redact=config.store.redact)
    try:
        records = store.calls(limit=limit)
        if csv_out is not None:
            if str(csv_out) == "-":
                write_csv(records, sys.stdout)
            else:
                with csv_out.open("w", newline="", encoding="utf-8") as out:
                    count = write_csv(records, out)
                print(f"wrote {count} calls to {csv_out}")
            return 0
        if not records:
            print(f"no calls recorded in {path}")
            return 0
        print(f"{'id':>5}  {'started':19}  {'level':8}  {'dur':>6}  det   pr  act  call / customer")
        for r in records:
            row = r.as_row()
            who = " / ".join(x for x in (r.call_id, r.customer_name, r.company) if x)
            print(
                f"{r.id:>5}  {row['started']:19}  {r.level_reached:8}  {row['duration_s']!s:>6}  "
                f"{r.detections:>3}  {r.prompts:>3}  {r.actions:>3}  {who}"
            )
        return 0
    finally:
        store.close()
