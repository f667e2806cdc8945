"""Probe the daemon's HTTP API as a hostile or clumsy local process would: bursts and floods.

    python scripts/probe_api.py            # README's figures (about a minute)

Starts a real daemon (its sound devices closed) on a free port of 127.0.0.1 and measures:
- bursts: 10 rounds of 50 new connections at once, GET /health and POST of an agent action:
  latency p50/p99 and the requests that failed (reset, refused, timed out);
- a flood: MAX_CONNECTIONS + 150 connections that send nothing, held open, while the panel's
  `GET /api/v1/calls/current` is asked 20 times: its latency and failures.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from callguard.core.config import load_config
from callguard.live.daemon import Daemon, build_runtime
from callguard.live.server import MAX_CONNECTIONS
from callguard.testing import daemon_config_file

TOKEN = "probe-token-0123456789abcdef"


def start_daemon(folder: Path) -> Daemon:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = daemon_config_file(folder, port=port, token=TOKEN, daemon={"auto_calls": False})
    loaded = load_config(config)
    daemon = Daemon(config, loaded, build_runtime(loaded, ""))
    daemon.start(capture=False)
    return daemon


def request(port: int, method: str, path: str, body: dict[str, str] | None = None) -> float | None:
    """Seconds to the full answer, or None when the request failed."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        conn.getresponse().read()
        conn.close()
    except OSError:
        return None
    return time.perf_counter() - started


def burst(port: int, method: str, path: str, body: dict[str, str] | None, n: int = 50) -> list[float | None]:
    results: list[float | None] = [None] * n
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        gate.wait()
        results[i] = request(port, method, path, body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(times: list[float | None]) -> str:
    ok = sorted(t * 1000 for t in times if t is not None)
    failed = len(times) - len(ok)
    if not ok:
        return f"all {failed} failed"
    p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))]
    return f"p50 {statistics.median(ok):.1f} ms, p99 {p99:.1f} ms, {failed} of {len(times)} failed"


def measure_bursts(port: int) -> list[tuple[str, list[float | None]]]:
    """10 bursts of 50 new connections, of GET /health and of POST of an action on call `probe`
    (started here): each request's seconds, None for a failure."""
    request(port, "POST", "/api/v1/calls", {"call_id": "probe"})
    measured = []
    for method, path, body in (
        ("GET", "/health", None),
        ("POST", "/api/v1/calls/probe/actions", {"action": "acknowledged"}),
    ):
        times: list[float | None] = []
        for _ in range(10):
            times += burst(port, method, path, body)
        measured.append((f"{method} {path}", times))
    request(port, "POST", "/api/v1/calls/probe/end")
    return measured


def measure_idle_flood(port: int) -> tuple[int, list[float | None]]:
    """MAX_CONNECTIONS + 150 connections that send nothing, held open while the panel asks for
    the current call 20 times: how many were held, and the panel's times."""
    flood = []
    try:
        for _ in range(MAX_CONNECTIONS + 150):
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:
                break
        time.sleep(0.5)
        return len(flood), [request(port, "GET", "/api/v1/calls/current") for _ in range(20)]
    finally:
        for s in flood:
            s.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder))
        port = daemon.server.port
        try:
            for what, times in measure_bursts(port):
                print(f"10 bursts of 50 new connections, {what}: {summary(times)}")
            held, panel = measure_idle_flood(port)
            print(f"{held} idle connections held open, panel GET /api/v1/calls/current x20: {summary(panel)}")
        finally:
            daemon.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
