"""Where a batch's calls run: a pool of local processes, or a Dask cluster. One interface for both.

An executor takes the jobs and the options, and yields one `CallResult` per job as each call
finishes, in any order; nothing else in the batch knows which executor runs. Both keep one
`WorkerState` per worker process (the speech model loaded once, the detector and prompt
catalogues built once per configuration), and neither writes a file: the client does.

- `LocalPool(workers)`: spawned processes on this machine (never forked: vosk starts threads
  when a model loads, and a fork after that can deadlock); in-process when `workers` is 1.
- `DaskCluster(address)`: the calls as tasks on an existing Dask cluster (`tcp://HOST:8786`).
  A worker plugin loads the model and builds the resources when each worker starts (and on a
  worker that joins later). Workers should run one thread each (`--nthreads 1`): the work is
  CPU-bound Python. A worker that dies mid-call has its call retried on another by the scheduler
  (up to `distributed.scheduler.allowed-failures` times, then the call's row says so), and the
  client gets one result per call, so a retried call is counted once. A scheduler that goes away
  raises `ClusterLost`; the calls already written stay, and `--resume` finishes the rest.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from callguard.core.errors import CallguardError, ConfigError
from callguard.core.events import CallFailed
from callguard.qa.jobs import CallJob, CallResult, ReplayOptions, WorkerState, replay_job

PLUGIN_NAME = "callguard-qa"
# The client's own loggers: a lost scheduler is told once, by ClusterLost, not by their tracebacks of
# each reconnection tried.
_QUIETED_LOGGERS = ("distributed", "distributed.client", "distributed.core", "distributed.utils",
                    "distributed.comm", "distributed.batched")  # fmt: skip


class ClusterLost(CallguardError):
    """The cluster went away (or could not be reached) before the batch was done."""


class CallExecutor(Protocol):
    """Runs calls somewhere and yields each result as its call finishes."""

    @property
    def description(self) -> str: ...

    def run(self, jobs: Sequence[CallJob], options: ReplayOptions) -> Iterator[CallResult]: ...

    def __enter__(self) -> CallExecutor: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# The worker process's state: set once per process (by the pool initializer, or by the Dask worker
# plugin), the only way to hand a loaded model to the tasks that later run in the same process.
_STATE: WorkerState | None = None


def process_state(preload: Path | None = None) -> WorkerState:
    """This process's worker state, made on first use (and its model loaded, if `preload`)."""
    global _STATE
    if _STATE is None:
        _STATE = WorkerState()
    if preload is not None:
        _STATE.preload(preload)
    return _STATE


# ---------------------------------------------------------------------------------------------- local


def _init_local_worker(preload: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    process_state(preload)


def _run_local_task(task: tuple[CallJob, ReplayOptions]) -> CallResult:
    return replay_job(*task, process_state())


class LocalPool(AbstractContextManager["LocalPool"]):
    """Spawned worker processes, each with its model loaded once; in-process when workers is 1."""

    def __init__(self, workers: int, preload: Path | None = None) -> None:
        if workers < 1:
            raise ConfigError("--jobs", "", f"must be 1 or more, got {workers}")
        self.workers = workers
        self._preload = preload
        self._local: WorkerState | None = None
        self._pool: Any = None

    @property
    def description(self) -> str:
        return f"{self.workers} local worker{'s' if self.workers > 1 else ''}"

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            if kind is None:
                self._pool.close()
            else:
                self._pool.terminate()  # interrupted: unfinished calls are redone on --resume
            self._pool.join()
            self._pool = None

    def run(self, jobs: Sequence[CallJob], options: ReplayOptions) -> Iterator[CallResult]:
        if self.workers == 1 or len(jobs) <= 1:
            if self._local is None:
                self._local = WorkerState(self._preload)
            for job in jobs:
                yield replay_job(job, options, self._local)
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_init_local_worker, initargs=(self._preload,))
        yield from self._pool.imap_unordered(_run_local_task, [(job, options) for job in jobs])


# ---------------------------------------------------------------------------------------------- Dask


def _dask_worker_plugin(preload: Path | None, options: ReplayOptions | None) -> Any:
    from distributed import WorkerPlugin

    class CallguardWorker(WorkerPlugin):  # type: ignore[misc]  # distributed is untyped here
        """Loads the model and builds the detector and catalogues once, when a worker starts."""

        name = PLUGIN_NAME

        def __init__(self) -> None:
            self.preload, self.options = preload, options

        async def setup(self, worker: Any) -> None:
            # In a thread: a large model takes a while, and the worker's event loop must keep
            # answering the scheduler meanwhile.
            await asyncio.to_thread(self._warm)

        def _warm(self) -> None:
            state = process_state(self.preload)
            if self.options is not None:
                state.warm(self.options)

    return CallguardWorker()


def replay_on_dask_worker(job: CallJob, options: ReplayOptions) -> CallResult:
    """A call as a Dask task: the worker's state, made by the plugin (or here, on a worker that ran
    no plugin), is reused by every call it runs."""
    return replay_job(job, options, process_state())


class DaskCluster(AbstractContextManager["DaskCluster"]):
    """The calls as tasks on a Dask cluster; the model loaded once per worker by a worker plugin."""

    def __init__(self, address: str, preload: Path | None = None, connect_timeout_s: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--cluster", address, "needs Dask (pip install 'callguard[cluster]')") from None
        self.address = address
        self._levels = {name: logging.getLogger(name).level for name in _QUIETED_LOGGERS}
        for name in _QUIETED_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._preload = preload
        self._warmed: set[str] = set()
        self._futures: list[Any] = []
        try:
            self._client = Client(address, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self._restore_loggers()
            raise ClusterLost(f"cannot reach the Dask scheduler at {address}: {exc}") from None

    def _restore_loggers(self) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    @property
    def workers(self) -> int:
        try:
            return len(self._client.scheduler_info().get("workers", {}))
        except (OSError, TimeoutError):
            return 0

    @property
    def description(self) -> str:
        return f"Dask cluster {self.address} ({self.workers} workers)"

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._futures and kind is not None:
                # interrupted: nothing left running for nobody; --resume redoes these calls
                self._client.cancel(self._futures, force=True)
        except Exception:  # the scheduler may be the reason we are leaving
            pass
        finally:
            self._futures = []
            self._client.close(timeout=5)
            self._restore_loggers()

    def _register(self, options: ReplayOptions) -> None:
        key = repr(options.config)
        if key in self._warmed:
            return
        # Registered again for a new configuration (a sweep's point): the state it warms is the
        # process's, so the model already loaded is kept.
        self._client.register_plugin(_dask_worker_plugin(self._preload, options), name=PLUGIN_NAME)
        self._warmed.add(key)

    def run(self, jobs: Sequence[CallJob], options: ReplayOptions) -> Iterator[CallResult]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        if not jobs:
            return
        try:
            self._register(options)
            batch = uuid.uuid4().hex[:8]
            futures = {
                self._client.submit(
                    replay_on_dask_worker, job, options, key=f"callguard-{batch}-{job.name}", pure=False
                ): job
                for job in jobs
            }
        except (OSError, TimeoutError) as exc:
            raise ClusterLost(f"the Dask scheduler at {self.address} cannot be reached: {exc}") from None
        self._futures = list(futures)
        try:
            for future in as_completed(futures, loop=self._client.loop):
                job = futures[future]
                try:
                    yield future.result()
                except KilledWorker as exc:
                    # every worker that tried this call died: the call's fault (or the workers')
                    message = f"{job.location}: the workers that replayed it died ({exc})"
                    yield CallResult(
                        name=job.name,
                        events=(CallFailed(t=0.0, speaker="system", message=message),),
                        processing_s=0.0,
                        call_info={},
                    )
                except (CancelledError, OSError, TimeoutError) as exc:  # FutureCancelledError among them
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ClusterLost(f"the Dask scheduler at {self.address} went away ({reason})") from None
                future.release()
        finally:
            self._futures = []


def open_executor(
    cluster: str, workers: int, preload: Path | None, connect_timeout_s: float = 30.0
) -> CallExecutor:
    """The Dask cluster at `cluster`, or else a local pool of `workers` processes."""
    if cluster:
        return DaskCluster(cluster, preload, connect_timeout_s)
    return LocalPool(workers, preload)
