"""`callguard floor ...`: serve the floor, set up its database, enrol workstations, add supervisors.

    callguard floor serve [--config F] [--dsn DSN]
    callguard floor init-db [--config F] [--dsn DSN]
    callguard floor enrol NAME --team TEAM          (prints the workstation's credential, once)
    callguard floor revoke NAME
    callguard floor user add LOGIN --role supervisor|admin [--team TEAM] [--name NAME] [--password-file F]

`--config` defaults to $CALLGUARD_FLOOR_CONFIG when set; `--dsn` overrides the config's `dsn`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from callguard.floor import db
from callguard.floor.config import FloorConfig, FloorConfigError, load_config

CONFIG_ENV = "CALLGUARD_FLOOR_CONFIG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callguard floor", description="the supervisors' central service")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_store_options(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, help=f"the floor's TOML config (default: ${CONFIG_ENV})")
        sub.add_argument("--dsn", help="PostgreSQL DSN, instead of the config's dsn")
        return sub

    with_store_options(commands.add_parser("serve", help="serve the floor over HTTPS"))
    with_store_options(commands.add_parser("init-db", help="create or upgrade the floor's schema"))
    enrol = with_store_options(commands.add_parser("enrol", help="enrol a workstation, print its credential"))
    enrol.add_argument("name")
    enrol.add_argument("--team", required=True)
    revoke = with_store_options(commands.add_parser("revoke", help="revoke a workstation's credential"))
    revoke.add_argument("name")
    user = commands.add_parser("user", help="supervisors and admins")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = with_store_options(user_commands.add_parser("add", help="add a supervisor or an admin"))
    add.add_argument("login")
    add.add_argument("--role", required=True, choices=db.ROLES)
    add.add_argument("--team", help="the supervisor's team (optional for an admin)")
    add.add_argument("--name", help="the name the wallboard and the agents' panels show (default: LOGIN)")
    add.add_argument("--password-file", type=Path, help="read the password from this file (default: stdin)")
    return parser


def config_of(args: argparse.Namespace) -> FloorConfig:
    path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    return load_config(path).with_dsn(args.dsn)


def read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            return password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise db.AdminError(
                f"--password-file {str(password_file)!r}: cannot be read ({error.strerror})"
            ) from None
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise db.AdminError("password: the two entries differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def check_channels(config: FloorConfig) -> None:
    """Refuse to start on a bad [channels], [rules] or [delivery] table (their errors name the key)."""
    from callguard.floor.dispatch import DeliverySettings
    from callguard.floor.rules import routing_from_config

    try:
        routing_from_config(config.channels, config.rules)
        DeliverySettings.from_table(config.delivery)
    except ValueError as error:
        raise FloorConfigError(str(error)) from None


def serve(config: FloorConfig) -> int:
    # only serving needs the ASGI stack: the other commands start faster without it
    import uvicorn

    from callguard.floor.app import create_app

    cert_file, key_file = config.require_tls()
    check_channels(config)
    db.migrate(config.dsn)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # The workstations' long polls would hold the stop for the whole grace period, and be cut
            # with a traceback each: answer them first.
            release = getattr(app.state, "release_waiters", None)
            if release is not None:
                release()
            super().handle_exit(sig, frame)

    Server(
        uvicorn.Config(
            app, host=config.listen, port=config.port, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
            proxy_headers=False, server_header=False, timeout_graceful_shutdown=5, log_level="info",
        )
    ).run()  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.command == "serve":
        return serve(config)
    with psycopg.connect(config.dsn) as conn:
        if args.command == "init-db":
            applied = db.apply_migrations(conn)
            done = ", ".join(f"{v:03d}" for v in applied) if applied else "none (the schema is current)"
            print(f"migrations applied: {done}")
        elif args.command == "enrol":
            credential = db.enrol_workstation(conn, args.name, args.team)
            print(f"workstation {args.name!r} enrolled in team {args.team!r}; its credential, shown once:",
                  file=sys.stderr)  # fmt: skip
            print(credential)
        elif args.command == "revoke":
            db.revoke_workstation(conn, args.name)
            print(f"workstation {args.name!r} revoked: the floor now refuses its credential")
        elif args.command == "user" and args.user_command == "add":
            password = read_password(args.password_file)
            db.add_user(conn, args.login, args.role, args.team, args.name or args.login, password)
            print(f"{args.role} {args.login!r} added")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (FloorConfigError, db.AdminError, db.MigrationError) as error:
        print(f"callguard floor: {error}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"callguard floor: cannot reach PostgreSQL ({message})", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
