"""The floor's schema migrations on a real PostgreSQL: applied in order, once; re-applied, a no-op."""

from __future__ import annotations

import psycopg
import psycopg.conninfo
import pytest

from callguard.floor.db import MigrationError, applied_versions, apply_migrations, load_migrations


def table_names(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_migrations_apply_in_order_then_reapply_as_a_no_op(empty_db_dsn: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    with psycopg.connect(empty_db_dsn) as conn:
        assert applied_versions(conn) == []
        assert apply_migrations(conn) == versions
        assert applied_versions(conn) == versions
        expected = {"schema_migrations", "teams", "workstations", "users", "sessions", "events", "calls",
                    "alerts", "notices"}  # fmt: skip
        assert expected <= table_names(conn)
        conn.execute("INSERT INTO teams (name) VALUES ('kept')")
        conn.commit()
        assert apply_migrations(conn) == []
        assert applied_versions(conn) == versions
        assert conn.execute("SELECT name FROM teams").fetchall() == [("kept",)]


def test_a_changed_applied_migration_is_refused(empty_db_dsn: str) -> None:
    with psycopg.connect(empty_db_dsn) as conn:
        apply_migrations(conn)
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        conn.commit()
        with pytest.raises(MigrationError, match=r"001_core\.sql was changed after it was applied"):
            apply_migrations(conn)


def test_events_are_unique_per_workstation_and_seq(floor_dsn: str) -> None:
    with psycopg.connect(floor_dsn) as conn:
        team = conn.execute("INSERT INTO teams (name) VALUES ('a') RETURNING id").fetchone()
        assert team is not None
        ws = conn.execute(
            "INSERT INTO workstations (name, team_id, credential_sha256) VALUES ('w', %s, %s) RETURNING id",
            (team[0], b"\x00" * 32),
        ).fetchone()
        assert ws is not None
        insert = (
            "INSERT INTO events (workstation_id, seq, call_id, kind, at, t, data)"
            " VALUES (%s, 1, 'c', 'help', now(), 0, '{}') ON CONFLICT (workstation_id, seq) DO NOTHING"
        )
        assert conn.execute(insert, (ws[0],)).rowcount == 1
        assert conn.execute(insert, (ws[0],)).rowcount == 0


def test_the_test_cluster_listens_on_loopback_only_and_wants_a_password(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    wrong = psycopg.conninfo.make_conninfo(pg_dsn, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)
