"""Real Dask processes on 127.0.0.1: a `dask scheduler` and `dask worker`s, each worker one process with
one thread (`--nworkers 1 --nthreads 1`) under a nanny that restarts it if killed, no dashboards,
every socket on loopback. The workers import callguard from this checkout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DASK = Path(sys.executable).parent / "dask"


@dataclass
class DaskProcesses:
    """A scheduler and its workers, started by a test; stopped with `stop()`."""

    folder: Path
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    address: str = ""

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        log = (self.folder / f"{name}.log").open("wb")
        # a session of its own: stop() ends the process with its nanny's children, by its group id
        return subprocess.Popen(
            [str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def start_scheduler(self) -> str:
        scheduler_file = self.folder / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self.log('scheduler')}")
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
                return self.address
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        raise RuntimeError(f"dask scheduler did not start: {self.log('scheduler')}")

    def start_worker(self, name: str) -> None:
        self.workers.append(
            self._spawn(
                name,
                [
                    "worker",
                    self.address,
                    "--name",
                    name,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--local-directory",
                    str(self.folder / name),
                ],
            )
        )

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(timeout=30)

    def stop(self) -> None:
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def start_cluster(folder: Path, workers: int) -> DaskProcesses:
    folder.mkdir(parents=True, exist_ok=True)
    cluster = DaskProcesses(folder)
    try:
        cluster.start_scheduler()
        for n in range(workers):
            cluster.start_worker(f"worker{n + 1}")
        cluster.wait_for_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster
