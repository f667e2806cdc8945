"""The floor's PostgreSQL schema and administration: versioned migrations (callguard/floor/migrations/
NNN_name.sql, each applied once in its own transaction, recorded in schema_migrations with its checksum)
and the CLI's synchronous commands (enrol, revoke, user add). The API's async queries are in store.py."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from callguard.floor import auth

# pg_advisory_xact_lock key: two floor processes starting at once apply each migration once
MIGRATION_LOCK_KEY = 0x63_67_66_6C  # "cgfl"
MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed, or an applied one was changed after it was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The SQL files of callguard/floor/migrations/, in version order (001_*.sql, 002_*.sql, ...)."""
    folder = resources.files("callguard.floor").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r}: expected a name like 001_what_it_does.sql")
        migrations.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return migrations


def apply_migrations(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; return their versions.

    Idempotent: run at every start of the floor and by `callguard floor init-db`.
    """
    applied_now = []
    for migration in load_migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute(
                "SELECT checksum FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if row is not None:
                if row[0] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:03d}_{migration.name}.sql was changed after it was "
                        "applied to this database: add a new migration instead of editing an applied one"
                    )
                continue
            # no parameters: psycopg sends the file as one simple query, several statements allowed
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """The versions recorded in schema_migrations (empty when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if exists is None or not exists[0]:
        return []
    return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(dsn: str) -> list[int]:
    """Connect and apply the pending migrations (the floor's start, `init-db`)."""
    with psycopg.connect(dsn) as conn:
        return apply_migrations(conn)


# --- administration (the CLI) ----------------------------------------------------------------------------


class AdminError(ValueError):
    """A refused administrative command: the message says what is wrong and what to do."""


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def check_name(value: str, what: str, limit: int = 128) -> str:
    if not NAME_PATTERN.match(value) or len(value) > limit:
        raise AdminError(
            f"{what}: expected 1 to {limit} letters, digits, '.', '_', '@' or '-' "
            f"(starting with a letter or digit), got {value!r}"
        )
    return value


def team_id(conn: psycopg.Connection, team: str) -> int:
    """The team's id, the team created on first use."""
    check_name(team, "team", limit=64)
    row = conn.execute(
        "INSERT INTO teams (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id",
        (team,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def enrol_workstation(conn: psycopg.Connection, name: str, team: str) -> str:
    """Enrol a workstation in a team; return its credential (shown once: only its SHA-256 is kept)."""
    check_name(name, "workstation name")
    credential = auth.new_credential()
    with conn.transaction():
        existing = conn.execute("SELECT revoked_at FROM workstations WHERE name = %s", (name,)).fetchone()
        if existing is not None:
            state = "revoked" if existing[0] is not None else "enrolled"
            # a name is never reused: the floor keys its events by workstation and outbox seq
            raise AdminError(f"workstation {name!r} is already {state}: enrol it under a new name")
        conn.execute(
            "INSERT INTO workstations (name, team_id, credential_sha256) VALUES (%s, %s, %s)",
            (name, team_id(conn, team), auth.digest(credential)),
        )
    return credential


def revoke_workstation(conn: psycopg.Connection, name: str) -> None:
    with conn.transaction():
        row = conn.execute(
            "UPDATE workstations SET revoked_at = COALESCE(revoked_at, now()) WHERE name = %s RETURNING id",
            (name,),
        ).fetchone()
        if row is None:
            raise AdminError(f"workstation {name!r}: not enrolled (nothing to revoke)")


ROLES = ("supervisor", "admin")


def add_user(
    conn: psycopg.Connection, login: str, role: str, team: str | None, display_name: str, password: str
) -> None:
    """Add a supervisor (who sees their team) or an admin (every team; a team is optional)."""
    check_name(login, "login", limit=64)
    if role not in ROLES:
        raise AdminError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if role == "supervisor" and not team:
        raise AdminError("team: a supervisor sees only their team, so --team is required")
    if not display_name.strip() or len(display_name) > 128:
        raise AdminError(f"name: expected 1 to 128 characters, got {display_name!r}")
    try:
        password_hash = auth.hash_password(password)
    except ValueError as error:
        raise AdminError(str(error)) from None
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE login = %s", (login,)).fetchone():
            raise AdminError(f"login {login!r}: a user with this login exists already")
        conn.execute(
            "INSERT INTO users (login, display_name, role, team_id, password_hash)"
            " VALUES (%s, %s, %s, %s, %s)",
            (login, display_name.strip(), role, team_id(conn, team) if team else None, password_hash),
        )
