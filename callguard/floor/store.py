"""The floor's async queries: ingest of workstations' batches, the live floor, acknowledgements, notices,
supervisors' sessions, incidents and figures. Each takes an open connection (autocommit; the functions
that write several rows open their own transaction).

A supervisor sees only their team: every read and write of the supervisors' API is filtered by
`Viewer.team_id` (None for an admin, who sees every team).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from callguard.floor import AlertSink, auth
from callguard.floor.alerts import Alert, alert_kind_of, format_time
from callguard.floor.protocol import LEVELS, Event

# a call whose workstation stopped reporting (crashed, never sent call_ended) leaves the wallboard after
LIVE_CALL_HOURS = 12
# acknowledged alerts stay on the wallboard (who acknowledged, when) this long
ACKNOWLEDGED_SHOWN_HOURS = 1
ALERT_KINDS_OF_EVENTS = {"threat_alert": "threat", "help": "help"}
INCIDENT_KINDS = ("abuse", "threat_alert", "help")


@dataclass(frozen=True)
class Workstation:
    id: int
    name: str
    team_id: int
    team: str


@dataclass(frozen=True)
class Viewer:
    """A logged-in supervisor or admin, from their session."""

    user_id: int
    login: str
    display_name: str
    role: str
    team_id: int | None
    team: str | None
    csrf_token: str

    @property
    def scope(self) -> int | None:
        """The team this viewer is limited to; None for an admin (every team)."""
        return None if self.role == "admin" else self.team_id

    def to_json(self) -> dict[str, Any]:
        return {"login": self.login, "name": self.display_name, "role": self.role, "team": self.team}


@dataclass(frozen=True)
class StoredBatch:
    stored: int
    duplicates: int
    # the wallboard's changes: the threat alerts and help requests stored, the calls they touched
    alerts: list[dict[str, Any]]
    calls: list[dict[str, Any]]


@dataclass(frozen=True)
class Outlet:
    """Where stored alerts go beyond the wallboard: the sink (None: nowhere) and the wallboard's link."""

    sink: AlertSink | None
    url: str


def iso(moment: datetime | None) -> str | None:
    """The protocol's time form: ISO 8601 UTC, milliseconds, Z."""
    return None if moment is None else format_time(moment)


# --- workstations ---------------------------------------------------------------------------------------


async def authenticate_workstation(conn: AsyncConnection, credential: str) -> Workstation | None:
    """The enrolled, unrevoked workstation of a credential, marked as seen; None when unknown or revoked."""
    cur = await conn.execute(
        "UPDATE workstations w SET last_seen = now() FROM teams t"
        " WHERE w.credential_sha256 = %s AND w.revoked_at IS NULL AND t.id = w.team_id"
        " RETURNING w.id, w.name, w.team_id, t.name",
        (auth.digest(credential),),
    )
    row = await cur.fetchone()
    return None if row is None else Workstation(*row)


# --- ingest ---------------------------------------------------------------------------------------------

INSERT_EVENTS = """
INSERT INTO events (workstation_id, seq, call_id, kind, at, t, data)
SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::jsonb[])
ON CONFLICT (workstation_id, seq) DO NOTHING
RETURNING id, seq, call_id, kind, at, t, data
"""

INSERT_ALERT = """
INSERT INTO alerts (kind, event_id, workstation_id, seq, call_id, team_id, at, title, message, words)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id
"""


async def store_batch(
    conn: AsyncConnection, ws: Workstation, events: Sequence[Event], outlet: Outlet
) -> StoredBatch:
    """Store a batch in one transaction: new events (a resent seq is skipped), their alerts, their calls,
    and the alerts handed to the outlet's sink (its own outbox, in this same transaction)."""
    async with conn.transaction():
        cur = await conn.execute(
            INSERT_EVENTS,
            (ws.id, [e.seq for e in events], [e.call_id for e in events], [e.kind for e in events],
             [e.at for e in events], [e.t for e in events], [Jsonb(e.data) for e in events]),
        )  # fmt: skip
        stored = sorted(await cur.fetchall(), key=lambda row: row[1])
        alert_ids = []
        for event_id, seq, call_id, kind, at, _t, data in stored:
            if kind in ALERT_KINDS_OF_EVENTS:
                alert_ids.append(await _insert_alert(conn, ws, event_id, seq, call_id, kind, at, data))
        call_ids = sorted({row[2] for row in stored})
        for call_id in call_ids:
            await refold_call(conn, ws, call_id)
        calls = {call_id: await call_json(conn, ws.id, call_id) for call_id in call_ids}
        if outlet.sink is not None:
            for _event_id, seq, call_id, kind, at, t, data in stored:
                event = {"seq": seq, "call_id": call_id, "kind": kind, "at": at, "t": t, "data": data}
                if alert_kind_of(event) is not None:
                    alert = Alert.from_event(
                        event, _alert_workstation(ws), url=outlet.url, call=calls[call_id]
                    )
                    await outlet.sink.enqueue(conn, alert)
        alerts = [await alert_json(conn, alert_id) for alert_id in alert_ids]
    return StoredBatch(len(stored), len(events) - len(stored), alerts, list(calls.values()))


def _alert_workstation(ws: Workstation) -> dict[str, str]:
    return {"name": ws.name, "team": ws.team}


async def _insert_alert(
    conn: AsyncConnection,
    ws: Workstation,
    event_id: int,
    seq: int,
    call_id: str,
    kind: str,
    at: datetime,
    data: dict[str, Any],
) -> int:
    cur = await conn.execute(
        INSERT_ALERT,
        (ALERT_KINDS_OF_EVENTS[kind], event_id, ws.id, seq, call_id, ws.team_id, at, data.get("title"),
         data.get("message"), Jsonb(data.get("words", []))),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns its row
    return int(row[0])


def fold_call(events: Iterable[tuple[int, str, datetime, dict[str, Any]]]) -> dict[str, Any]:
    """A call's row from its events (seq, kind, at, data) in seq order: the last level wins, and so on."""
    call: dict[str, Any] = {
        "agent": None, "queue": None, "language": None, "level": "calm", "level_reached": "calm",
        "started_at": None, "ended_at": None, "duration": None, "abuse_count": 0, "threat_count": 0,
        "transferred": False, "released": False, "last_seq": 0, "last_event_at": None,
    }  # fmt: skip
    first_at: datetime | None = None
    for seq, kind, at, data in events:
        first_at = at if first_at is None else min(first_at, at)
        call["last_seq"] = max(call["last_seq"], seq)
        call["last_event_at"] = at if call["last_event_at"] is None else max(call["last_event_at"], at)
        if kind == "call_started":
            call.update(agent=data["agent"], queue=data["queue"], language=data["language"], started_at=at)
        elif kind == "level":
            call["level"] = data["level"]
            call["level_reached"] = _higher_level(call["level_reached"], data["level"])
        elif kind == "abuse":
            call["abuse_count"] += 1
        elif kind == "threat_alert":
            call["threat_count"] += 1
        elif kind == "action" and data["action"] in ("transferred", "released"):
            call[data["action"]] = True
        elif kind == "call_ended":
            call.update(ended_at=at, duration=float(data["duration"]))
            call["level_reached"] = _higher_level(call["level_reached"], data["level_reached"])
    # a threat alert is sent ahead of its call_started: the call starts at its earliest event till then
    call["started_at"] = call["started_at"] or first_at
    return call


def _higher_level(a: str, b: str) -> str:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


UPSERT_CALL = """
INSERT INTO calls (workstation_id, call_id, team_id, agent, queue, language, level, level_reached,
    started_at, ended_at, duration, abuse_count, threat_count, transferred, released, last_seq, last_event_at)
VALUES (%(workstation_id)s, %(call_id)s, %(team_id)s, %(agent)s, %(queue)s, %(language)s, %(level)s,
    %(level_reached)s, %(started_at)s, %(ended_at)s, %(duration)s, %(abuse_count)s, %(threat_count)s,
    %(transferred)s, %(released)s, %(last_seq)s, %(last_event_at)s)
ON CONFLICT (workstation_id, call_id) DO UPDATE SET
    agent = EXCLUDED.agent, queue = EXCLUDED.queue, language = EXCLUDED.language, level = EXCLUDED.level,
    level_reached = EXCLUDED.level_reached, started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
    duration = EXCLUDED.duration, abuse_count = EXCLUDED.abuse_count, threat_count = EXCLUDED.threat_count,
    transferred = EXCLUDED.transferred, released = EXCLUDED.released, last_seq = EXCLUDED.last_seq,
    last_event_at = EXCLUDED.last_event_at, updated_at = now()
"""


async def refold_call(conn: AsyncConnection, ws: Workstation, call_id: str) -> None:
    """Rebuild a call's row from all its stored events, in seq order (never in order of arrival)."""
    # two batches of one workstation (its priority sender and its ordinary one) may touch the same call at
    # once: the lock makes the later fold read the earlier batch's committed events
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"call:{ws.id}:{call_id}",))
    cur = await conn.execute(
        "SELECT seq, kind, at, data FROM events WHERE workstation_id = %s AND call_id = %s ORDER BY seq",
        (ws.id, call_id),
    )
    call = fold_call(await cur.fetchall())
    await conn.execute(
        UPSERT_CALL, {**call, "workstation_id": ws.id, "call_id": call_id, "team_id": ws.team_id}
    )


# --- the live floor -------------------------------------------------------------------------------------

CALL_COLUMNS = """
c.id, w.name AS workstation, t.name AS team, c.call_id, c.agent, c.queue, c.language, c.level,
c.level_reached, c.started_at, c.ended_at, c.duration, c.abuse_count, c.threat_count, c.transferred,
c.released, c.last_seq, c.last_event_at, c.team_id
"""

ALERT_COLUMNS = """
a.id, a.kind, t.name AS team, w.name AS workstation, a.call_id, a.seq, c.agent, c.queue, a.at, a.title,
a.message, a.words, a.created_at, u.display_name AS acknowledged_by, a.acknowledged_at, a.team_id,
a.workstation_id
"""

ALERT_FROM = """
FROM alerts a JOIN workstations w ON w.id = a.workstation_id JOIN teams t ON t.id = a.team_id
LEFT JOIN calls c ON c.workstation_id = a.workstation_id AND c.call_id = a.call_id
LEFT JOIN users u ON u.id = a.acknowledged_by
"""


def _call_out(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    end = row["ended_at"] or now
    return {
        "id": row["id"], "workstation": row["workstation"], "team": row["team"], "call_id": row["call_id"],
        "agent": row["agent"], "queue": row["queue"], "language": row["language"], "level": row["level"],
        "level_reached": row["level_reached"], "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "duration": row["duration"] if row["duration"] is not None
        else max(0.0, (end - row["started_at"]).total_seconds()),
        "abuse_count": row["abuse_count"], "threat_count": row["threat_count"],
        "transferred": row["transferred"], "released": row["released"], "team_id": row["team_id"],
    }  # fmt: skip


def _alert_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "kind": row["kind"], "team": row["team"], "workstation": row["workstation"],
        "call_id": row["call_id"], "seq": row["seq"], "agent": row["agent"], "queue": row["queue"],
        "at": iso(row["at"]), "title": row["title"], "message": row["message"], "words": row["words"],
        "created_at": iso(row["created_at"]), "acknowledged_by": row["acknowledged_by"],
        "acknowledged_at": iso(row["acknowledged_at"]), "team_id": row["team_id"],
    }  # fmt: skip


async def _now(conn: AsyncConnection) -> datetime:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


async def call_json(conn: AsyncConnection, workstation_id: int, call_id: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {CALL_COLUMNS}, now() AS now FROM calls c JOIN workstations w ON w.id = c.workstation_id"
        " JOIN teams t ON t.id = c.team_id WHERE c.workstation_id = %s AND c.call_id = %s",
        (workstation_id, call_id),
    )
    row = await cur.fetchone()
    assert row is not None  # called for a call just folded
    return _call_out(row, row["now"])


async def alert_json(conn: AsyncConnection, alert_id: int) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {ALERT_COLUMNS} {ALERT_FROM} WHERE a.id = %s", (alert_id,))
    row = await cur.fetchone()
    assert row is not None  # called for an alert just stored
    return _alert_out(row)


async def floor_state(conn: AsyncConnection, viewer: Viewer) -> dict[str, Any]:
    """Live calls, and open or lately acknowledged alerts and help requests (unacknowledged first)."""
    now = await _now(conn)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {CALL_COLUMNS} FROM calls c JOIN workstations w ON w.id = c.workstation_id"
        " JOIN teams t ON t.id = c.team_id"
        " WHERE c.ended_at IS NULL AND c.last_event_at > now() - make_interval(hours => %(live)s)"
        " AND (%(scope)s::bigint IS NULL OR c.team_id = %(scope)s) ORDER BY c.started_at, c.id",
        {"scope": viewer.scope, "live": LIVE_CALL_HOURS},
    )
    calls = [_call_out(row, now) for row in await cur.fetchall()]
    await cur.execute(
        f"SELECT {ALERT_COLUMNS} {ALERT_FROM}"
        " WHERE (a.acknowledged_at IS NULL OR a.acknowledged_at > now() - make_interval(hours => %(shown)s))"
        " AND (%(scope)s::bigint IS NULL OR a.team_id = %(scope)s)"
        " ORDER BY a.acknowledged_at IS NOT NULL, a.created_at DESC, a.id DESC LIMIT 500",
        {"scope": viewer.scope, "shown": ACKNOWLEDGED_SHOWN_HOURS},
    )
    alerts = [_alert_out(row) for row in await cur.fetchall()]
    return {
        "now": iso(now),
        "user": viewer.to_json(),
        "calls": calls,
        "alerts": [a for a in alerts if a["kind"] == "threat"],
        "help": [a for a in alerts if a["kind"] == "help"],
    }


async def call_events(conn: AsyncConnection, viewer: Viewer, call_row_id: int) -> dict[str, Any] | None:
    """A call and its events in seq order (flagged words, prompts: what the workstation shared)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {CALL_COLUMNS}, c.workstation_id, now() AS now FROM calls c"
        " JOIN workstations w ON w.id = c.workstation_id JOIN teams t ON t.id = c.team_id"
        " WHERE c.id = %(id)s AND (%(scope)s::bigint IS NULL OR c.team_id = %(scope)s)",
        {"id": call_row_id, "scope": viewer.scope},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await cur.execute(
        "SELECT seq, kind, at, t, data FROM events WHERE workstation_id = %s AND call_id = %s ORDER BY seq",
        (row["workstation_id"], row["call_id"]),
    )
    events = [{**event, "at": iso(event["at"])} for event in await cur.fetchall()]
    return {"call": _call_out(row, row["now"]), "events": events}


# --- acknowledgements and notices -----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What answering an alert did: the alert as it now is, and the notice sent to its workstation."""

    alert: dict[str, Any]
    notice: dict[str, Any]
    workstation_id: int


class AnswerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


async def answer_alert(
    conn: AsyncConnection, viewer: Viewer, alert_id: int, kind: str, outlet: Outlet
) -> Answer:
    """Acknowledge a threat alert (kind "threat") or answer a help request "on my way" (kind "help").

    Stores who and when, a notice to the workstation, and the resolved alert for the sink, in one
    transaction. An alert of another team is answered 404, as one that does not exist: a supervisor does
    not learn of other teams' alerts.
    """
    notice_kind = "acknowledged" if kind == "threat" else "on_my_way"
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT a.acknowledged_at, u.display_name FROM alerts a"
            " LEFT JOIN users u ON u.id = a.acknowledged_by WHERE a.id = %(id)s AND a.kind = %(kind)s"
            " AND (%(scope)s::bigint IS NULL OR a.team_id = %(scope)s)"
            " FOR UPDATE OF a",
            {"id": alert_id, "kind": kind, "scope": viewer.scope},
        )
        row = await cur.fetchone()
        what = "threat alert" if kind == "threat" else "help request"
        if row is None:
            raise AnswerError(404, f"no {what} {alert_id} on your floor")
        if row[0] is not None:
            raise AnswerError(409, f"{what} {alert_id} was already answered by {row[1]} at {iso(row[0])}")
        cur = await conn.execute(
            "UPDATE alerts SET acknowledged_by = %s, acknowledged_at = now() WHERE id = %s"
            " RETURNING workstation_id, call_id, seq, acknowledged_at",
            (viewer.user_id, alert_id),
        )
        updated = await cur.fetchone()
        assert updated is not None
        workstation_id, call_id, seq, answered_at = updated
        cur = await conn.execute(
            "INSERT INTO notices (workstation_id, alert_id, call_id, kind, seq, by_name, at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (workstation_id, alert_id, call_id, notice_kind, seq, viewer.display_name, answered_at),
        )
        notice_row = await cur.fetchone()
        assert notice_row is not None
        if outlet.sink is not None:
            fired = await _fired_alert(conn, alert_id, outlet.url)
            await outlet.sink.enqueue(conn, fired.resolved(answered_at, viewer.display_name))
        alert = await alert_json(conn, alert_id)
    notice = {"id": notice_row[0], "call_id": call_id, "kind": notice_kind, "seq": seq,
              "by": viewer.display_name, "at": iso(answered_at)}  # fmt: skip
    return Answer(alert, notice, workstation_id)


async def _fired_alert(conn: AsyncConnection, alert_id: int, url: str) -> Alert:
    """The Alert its event made when it was stored (same id, so the channels resolve that one)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT e.seq, e.call_id, e.kind, e.at, e.t, e.data, w.name, t.name AS team, c.agent, c.queue"
        " FROM alerts a JOIN events e ON e.id = a.event_id JOIN workstations w ON w.id = a.workstation_id"
        " JOIN teams t ON t.id = w.team_id"
        " LEFT JOIN calls c ON c.workstation_id = a.workstation_id AND c.call_id = a.call_id WHERE a.id = %s",
        (alert_id,),
    )
    row = await cur.fetchone()
    assert row is not None  # the alert was just updated
    return Alert.from_event(row, {"name": row["name"], "team": row["team"]}, url=url, call=row)


async def notices_after(conn: AsyncConnection, workstation_id: int, after: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, call_id, kind, seq, by_name, at FROM notices WHERE workstation_id = %s AND id > %s"
        " ORDER BY id LIMIT 500",
        (workstation_id, after),
    )
    return [
        {"id": id_, "call_id": call_id, "kind": kind, "seq": seq, "by": by, "at": iso(at)}
        for id_, call_id, kind, seq, by, at in await cur.fetchall()
    ]


# --- supervisors' sessions ------------------------------------------------------------------------------


async def open_session(
    conn: AsyncConnection, login: str, password: str, hours: float
) -> tuple[str, Viewer] | None:
    """A new session (its cookie token, the viewer) when the password is right, else None."""
    cur = await conn.execute("SELECT id, password_hash FROM users WHERE login = %s", (login,))
    row = await cur.fetchone()
    # argon2 takes most of a second by design: off the event loop, so streams and long polls go on
    matches = await asyncio.to_thread(auth.password_matches, None if row is None else row[1], password)
    if not matches or row is None:
        return None
    token = auth.new_session_token()
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO sessions (token_sha256, user_id, csrf_token, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            (auth.digest(token), row[0], auth.new_csrf_token(), hours * 3600),
        )
    viewer = await session_viewer(conn, token)
    assert viewer is not None
    return token, viewer


async def session_viewer(conn: AsyncConnection, token: str) -> Viewer | None:
    cur = await conn.execute(
        "SELECT u.id, u.login, u.display_name, u.role, u.team_id, t.name, s.csrf_token FROM sessions s"
        " JOIN users u ON u.id = s.user_id LEFT JOIN teams t ON t.id = u.team_id"
        " WHERE s.token_sha256 = %s AND s.expires_at > now()",
        (auth.digest(token),),
    )
    row = await cur.fetchone()
    return None if row is None else Viewer(*row)


async def close_session(conn: AsyncConnection, token: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_sha256 = %s", (auth.digest(token),))


# --- incidents and figures ------------------------------------------------------------------------------


def day_range(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC bounds of a day of the site's time zone."""
    start = datetime.combine(day, time(), tzinfo=zone)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


INCIDENT_CATEGORY = (
    "CASE e.kind WHEN 'abuse' THEN e.data->>'category' WHEN 'threat_alert' THEN 'threat' ELSE 'help' END"
)


@dataclass(frozen=True)
class IncidentFilter:
    team: str | None = None
    agent: str | None = None
    day: date | None = None
    category: str | None = None
    limit: int = 1000


async def incidents(
    conn: AsyncConnection, viewer: Viewer, wanted: IncidentFilter, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Abuse, threat alerts and help requests, newest first, as the filter asks, within the viewer's teams."""
    start, end = day_range(wanted.day, zone) if wanted.day else (None, None)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT e.at, t.name AS team, w.name AS workstation, c.agent, c.queue, e.call_id, e.seq, e.kind,"
        f" {INCIDENT_CATEGORY} AS category, (e.data->>'severity')::int AS severity,"
        " COALESCE(e.data->'words', '[]') AS words, COALESCE(e.data->>'title', e.data->>'message') AS detail,"
        " u.display_name AS answered_by, a.acknowledged_at AS answered_at"
        " FROM events e JOIN workstations w ON w.id = e.workstation_id JOIN teams t ON t.id = w.team_id"
        " LEFT JOIN calls c ON c.workstation_id = e.workstation_id AND c.call_id = e.call_id"
        " LEFT JOIN alerts a ON a.event_id = e.id LEFT JOIN users u ON u.id = a.acknowledged_by"
        " WHERE e.kind = ANY(%(kinds)s) AND (%(scope)s::bigint IS NULL OR w.team_id = %(scope)s)"
        " AND (%(team)s::text IS NULL OR t.name = %(team)s)"
        " AND (%(agent)s::text IS NULL OR c.agent = %(agent)s)"
        " AND (%(start)s::timestamptz IS NULL OR (e.at >= %(start)s AND e.at < %(end)s))"
        f" AND (%(category)s::text IS NULL OR {INCIDENT_CATEGORY} = %(category)s)"
        " ORDER BY e.at DESC, e.id DESC LIMIT %(limit)s",
        {"kinds": list(INCIDENT_KINDS), "scope": viewer.scope, "team": wanted.team, "agent": wanted.agent,
         "start": start, "end": end, "category": wanted.category, "limit": wanted.limit},
    )  # fmt: skip
    return [
        {**row, "at": iso(row["at"]), "answered_at": iso(row["answered_at"])} for row in await cur.fetchall()
    ]


FIGURES = """
WITH day_events AS (
    SELECT e.*, w.team_id FROM events e JOIN workstations w ON w.id = e.workstation_id
    WHERE e.at >= %(start)s AND e.at < %(end)s
)
SELECT t.name AS team,
    count(DISTINCT (d.workstation_id, d.call_id)) FILTER (WHERE d.kind = 'call_started') AS calls,
    count(DISTINCT (d.workstation_id, d.call_id)) FILTER (WHERE
        (d.kind = 'level' AND d.data->>'level' IN ('abusive', 'transfer', 'release'))
        OR (d.kind = 'call_ended' AND d.data->>'level_reached' IN ('abusive', 'transfer', 'release'))
    ) AS abusive_calls,
    count(*) FILTER (WHERE d.kind = 'threat_alert') AS threats,
    count(*) FILTER (WHERE d.kind = 'action' AND d.data->>'action' = 'transferred') AS transfers,
    count(*) FILTER (WHERE d.kind = 'action' AND d.data->>'action' = 'released') AS releases,
    count(*) FILTER (WHERE d.kind = 'help') AS help_requests,
    count(*) FILTER (WHERE d.kind = 'break') AS breaks,
    COALESCE(sum((d.data->>'minutes')::float8) FILTER (WHERE d.kind = 'break'), 0) AS break_minutes
FROM teams t LEFT JOIN day_events d ON d.team_id = t.id
WHERE %(scope)s::bigint IS NULL OR t.id = %(scope)s
GROUP BY t.name ORDER BY t.name
"""


async def figures(conn: AsyncConnection, viewer: Viewer, day: date, zone: ZoneInfo) -> list[dict[str, Any]]:
    """Per team, for a day of the site: calls, abusive calls, threats, transfers, releases, help, breaks."""
    start, end = day_range(day, zone)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(FIGURES, {"start": start, "end": end, "scope": viewer.scope})
    return list(await cur.fetchall())
