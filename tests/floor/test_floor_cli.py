"""`callguard floor ...` (python -m callguard.floor.cli) and the floor's config, on a real PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from floor_events import event

from callguard.floor import cli
from callguard.floor.config import FloorConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "callguard.floor.cli", *args], input=stdin, capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip


def test_init_db_applies_the_migrations_once(empty_db_dsn: str) -> None:
    first = run_cli("init-db", "--dsn", empty_db_dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("migrations applied: 001")
    again = run_cli("init-db", "--dsn", empty_db_dsn)
    assert (again.returncode, again.stdout.strip()) == (0, "migrations applied: none (the schema is current)")


def test_enrol_prints_a_working_credential_once_and_revoke_refuses_it(
    floor_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["enrol", "ws-07", "--team", "north", "--dsn", floor_server.dsn]) == 0
    enrolled = capsys.readouterr()
    credential = enrolled.out.strip()
    assert credential.startswith("cgf_") and len(credential) > 40
    assert "shown once" in enrolled.err and credential not in enrolled.err
    with psycopg.connect(floor_server.dsn) as conn:
        stored = conn.execute("SELECT credential_sha256 FROM workstations WHERE name = 'ws-07'").fetchone()
    assert stored is not None and credential.encode() not in bytes(stored[0])
    headers = {"Authorization": f"Bearer {credential}"}
    body = {"events": [event(1, "call_started")]}
    assert floor_server.request("POST", "/api/v1/events", json_body=body, headers=headers).status == 200
    assert cli.main(["enrol", "ws-07", "--team", "north", "--dsn", floor_server.dsn]) == 2
    assert "'ws-07' is already enrolled" in capsys.readouterr().err
    assert cli.main(["revoke", "ws-07", "--dsn", floor_server.dsn]) == 0
    assert floor_server.request("POST", "/api/v1/events", json_body=body, headers=headers).status == 401
    assert cli.main(["revoke", "ws-99", "--dsn", floor_server.dsn]) == 2
    assert "'ws-99': not enrolled" in capsys.readouterr().err
    assert cli.main(["enrol", "bad name", "--team", "north", "--dsn", floor_server.dsn]) == 2
    assert "workstation name: expected 1 to 128 letters" in capsys.readouterr().err


def test_user_add_reads_the_password_from_stdin_or_a_file(
    floor_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert cli.main(["user", "add", "nora", "--role", "supervisor", "--team", "north", "--name", "Nora Petit",
                     "--dsn", floor_server.dsn]) == 0  # fmt: skip
    login = {"login": "nora", "password": "correct horse battery"}
    answer = floor_server.request("POST", "/login", json_body=login)
    assert answer.status == 200 and answer.json()["user"]["name"] == "Nora Petit"
    secret = tmp_path / "pw"
    secret.write_text("another long secret\n")
    assert cli.main(["user", "add", "root", "--role", "admin", "--password-file", str(secret),
                     "--dsn", floor_server.dsn]) == 0  # fmt: skip
    admin = floor_server.request(
        "POST", "/login", json_body={"login": "root", "password": "another long secret"}
    )
    assert admin.json()["user"] == {"login": "root", "name": "root", "role": "admin", "team": None}
    with psycopg.connect(floor_server.dsn) as conn:
        hashes = [row[0] for row in conn.execute("SELECT password_hash FROM users")]
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "supervisor"], "long enough pw", "team: a supervisor sees only their team"),
        (["--role", "admin"], "short", "password: expected at least 10 characters"),
        (["--role", "admin", "--name", " "], "long enough pw", "name: expected 1 to 128 characters"),
    ],
)
def test_user_add_refuses_bad_input(
    floor_dsn: str, args: list[str], stdin: str, message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin + "\n"))
    assert cli.main(["user", "add", "olga", *args, "--dsn", floor_dsn]) == 2
    assert message in capsys.readouterr().err
    with psycopg.connect(floor_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_an_unreachable_database_is_said_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=2"
    assert cli.main(["init-db", "--dsn", dsn]) == 3
    assert "callguard floor: cannot reach PostgreSQL" in capsys.readouterr().err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_reads_a_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path / "floor.toml", """
listen = "0.0.0.0"
port = 9443
dsn = "host=db.example dbname=floor"
cert_file = "tls/floor.crt"
key_file = "/etc/callguard/floor.key"
session_hours = 8
timezone = "Europe/Paris"
public_url = "https://floor.example:9443/"
[channels.chat]
type = "webhook"
url = "https://chat.example/hook"
[[rules]]
kinds = ["threat"]
channels = ["chat"]
""")  # fmt: skip
    config = load_config(path)
    assert (config.listen, config.port, config.dsn) == ("0.0.0.0", 9443, "host=db.example dbname=floor")
    assert config.cert_file == tmp_path / "tls/floor.crt"
    assert config.key_file == Path("/etc/callguard/floor.key")
    assert (config.session_hours, config.timezone) == (8.0, "Europe/Paris")
    assert config.wallboard_url == "https://floor.example:9443/wallboard"
    assert config.channels == {"chat": {"type": "webhook", "url": "https://chat.example/hook"}}
    assert config.rules == [{"kinds": ["threat"], "channels": ["chat"]}]
    assert config.with_dsn("dbname=other").dsn == "dbname=other"
    defaults = load_config(None)
    assert (defaults.listen, defaults.port, defaults.dsn) == ("127.0.0.1", 8443, "dbname=callguard_floor")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = 70000", "port: expected an integer from 1 to 65535, got 70000"),
        ('port = "8443"', "port: expected an integer from 1 to 65535, got '8443'"),
        ('listen = "a b"', "listen: expected a host name or IP address"),
        ('dsn = ""', "dsn: expected a PostgreSQL DSN"),
        ("session_hours = 0", "session_hours: expected a number of hours above 0"),
        ('timezone = "Mars/Olympus"', "timezone: expected an IANA time zone name"),
        ('public_url = "http://floor"', "public_url: expected an https:// address"),
        ("cert_file = 3", "cert_file: expected a file path"),
        ('channels = "all"', "channels: expected a table"),
        ("prot = 8443", "prot: unknown key"),
        ("port = ", "not valid TOML"),
    ],
)
def test_a_bad_config_value_is_named(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(FloorConfigError) as raised:
        load_config(write(tmp_path / "floor.toml", toml + "\n"))
    assert message in str(raised.value)


def test_serve_refuses_to_start_without_tls_or_with_bad_channels(
    tmp_path: Path, floor_dsn: str, tls_cert: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    no_tls = write(tmp_path / "a.toml", f"dsn = {floor_dsn!r}\n")
    assert cli.main(["serve", "--config", str(no_tls)]) == 2
    assert "cert_file: expected the path of the site's TLS cert file" in capsys.readouterr().err
    missing = write(tmp_path / "b.toml", f'cert_file = "nope.crt"\nkey_file = "{tls_cert.key_file}"\n')
    assert cli.main(["serve", "--config", str(missing)]) == 2
    assert "cert_file: expected an existing file" in capsys.readouterr().err
    bad_rule = write(tmp_path / "c.toml", f"""cert_file = "{tls_cert.cert_file}"
key_file = "{tls_cert.key_file}"
[rules.threats]
kinds = ["threat"]
channels = ["nowhere"]
""")  # fmt: skip
    assert cli.main(["serve", "--config", str(bad_rule), "--dsn", floor_dsn]) == 2
    assert "rules.threats.channels" in capsys.readouterr().err
