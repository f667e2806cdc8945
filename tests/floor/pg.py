"""A real PostgreSQL cluster and a self-signed TLS certificate for the floor, outside pytest as well: the
floor's test fixtures (conftest.py) and the floor benchmark (scripts/bench_floor.py) both use them.

- `start_cluster(bindir)`: initdb/pg_ctl in a temporary folder owned by the `postgres` user (initdb and
  the server refuse root), listening only on 127.0.0.1 at a free port, SCRAM password authentication over
  TCP; `stop_cluster` stops it and removes the folder. `durable=True` keeps fsync on (the benchmark's
  commits cost what a site's do); tests leave it off.
- `kill_postmaster` (kill -9) and `restart_cluster` (pg_ctl start again, crash recovery included).
- `make_tls_cert(folder)`: a self-signed certificate and key for 127.0.0.1 and localhost (openssl).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

PG_USER = "postgres"


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed, or a cluster would not start."""


def pg_bindir() -> Path:
    """The folder of initdb/pg_ctl: pg_config's, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise PgUnavailable(
            "PostgreSQL server binaries (initdb) not found: run scripts/setup.sh (apt: postgresql)"
        )
    return Path(candidates[-1]).parent


def as_pg_user(argv: list[str]) -> list[str]:
    """The command run as the postgres user when we are root (the server refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    return argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgCluster:
    root: Path
    port: int
    password: str
    durable: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=PG_USER, password=self.password, dbname=dbname
        )

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (the first line of postmaster.pid), None when it is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def _pg_ctl_start(bindir: Path, cluster: PgCluster) -> subprocess.CompletedProcess[str]:
    options = (
        f"-c listen_addresses=127.0.0.1 -p {cluster.port} -c unix_socket_directories={cluster.root} "
        "-c max_connections=200"
    )
    if not cluster.durable:
        options += " -c fsync=off"  # test data only: nothing needs to survive a crash of the machine
    return subprocess.run(
        as_pg_user([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-l", str(cluster.root / "log"),
                    "-o", options, "-w", "-t", "60", "start"]),
        capture_output=True, text=True,
    )  # fmt: skip


def start_cluster(bindir: Path, *, durable: bool = False) -> PgCluster:
    root = Path(tempfile.mkdtemp(prefix="callguard-floor-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user=PG_USER, group=PG_USER)
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, user=PG_USER, group=PG_USER)
    subprocess.run(
        as_pg_user(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", PG_USER, "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
             *([] if durable else ["--no-sync"])]
        ),
        check=True, capture_output=True,
    )  # fmt: skip
    pwfile.unlink()
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between our probe and the server's bind
        cluster = PgCluster(root, free_port(), password, durable)
        started = _pg_ctl_start(bindir, cluster)
        if started.returncode == 0:
            return cluster
        last_error = started.stdout + started.stderr + (root / "log").read_text(errors="replace")
    shutil.rmtree(root, ignore_errors=True)
    raise PgUnavailable(f"the test PostgreSQL cluster did not start:\n{last_error}")


def kill_postmaster(cluster: PgCluster) -> int:
    """kill -9 of the postmaster (its backends are left to notice and exit); returns the pid killed."""
    pid = cluster.postmaster_pid()
    if pid is None:
        raise PgUnavailable(f"no postmaster.pid in {cluster.data_dir}: the cluster is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def restart_cluster(bindir: Path, cluster: PgCluster, timeout: float = 90.0) -> float:
    """Start the cluster again on its port after a crash (the server replays its WAL); retried while the
    killed postmaster's backends still hold its shared memory. Returns the seconds it took."""
    began = time.monotonic()
    while True:
        started = _pg_ctl_start(bindir, cluster)
        if started.returncode == 0:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            log = (cluster.root / "log").read_text(errors="replace")[-3000:]
            raise PgUnavailable(
                f"the PostgreSQL cluster did not restart:\n{started.stdout}{started.stderr}{log}"
            )
        time.sleep(0.5)


def stop_cluster(bindir: Path, cluster: PgCluster) -> None:
    subprocess.run(
        as_pg_user([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "immediate", "-w", "stop"]),
        capture_output=True,
    )
    shutil.rmtree(cluster.root, ignore_errors=True)


@dataclass(frozen=True)
class TlsCert:
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this certificate, host name checked (127.0.0.1 or localhost)."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_tls_cert(folder: Path) -> TlsCert:
    """A self-signed EC certificate for CN=localhost, SAN localhost and 127.0.0.1, valid two days."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return TlsCert(cert, key)
