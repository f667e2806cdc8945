"""Batch replay: many recorded calls through an executor (local processes or a Dask cluster), an
events file and a summary row per call.

The output folder holds, per call NAME (the recording's stem, made unique in the batch):

    NAME.events.jsonl   every event of the call, one JSON object a line; written as
                        NAME.events.jsonl.part and renamed when the call is done
    summary.csv         one row per call, appended (and flushed) as each call finishes, and
                        rewritten in the order of the calls when the batch is done
    NAME.html           the call's report, and index.html listing every call (with reports on)

A recording's sidecars are used when they sit beside it with the same stem:
`NAME.transcript.json` (words, used instead of the recogniser) and `NAME.call.json`
(call facts). A bad recording gets a summary row with its error and the batch goes on.
`resume=True` keeps the rows of calls that finished without error and whose events file
is complete, and replays the rest (failed calls included: the file may have been fixed).

The workers only compute (`qa.jobs`); this module, in the client, writes every file, so a batch
on a cluster gives the same files as one on this machine (`qa.executors`).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from callguard.core.errors import ConfigError
from callguard.core.events import CATEGORIES, CallEnd, CallFailed, Event, EventFormatError
from callguard.core.outcome import CallOutcome, fold_call
from callguard.qa.executors import CallExecutor, ClusterLost, LocalPool, open_executor
from callguard.qa.jobs import (
    CallJob,
    CallResult,
    ReplayOptions,
    WorkerState,
    call_info_document,
    call_model_path,
    is_url,
    model_language,
    replay_job,
)
from callguard.sinks.base import CallInfo
from callguard.sinks.jsonl import JsonlSink

__all__ = [
    "CallJob",
    "ReplayOptions",
    "ReplayPool",
    "SummaryRow",
    "WorkerState",
    "collect_calls",
    "model_language",
    "run_batch",
]

ReplayPool = LocalPool  # its older name (scripts/bench.py)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".au", ".aif", ".aiff", ".caf", ".w64"})
SUMMARY_NAME = "summary.csv"
INDEX_NAME = "index.html"
EVENTS_SUFFIX = ".events.jsonl"
TRANSCRIPT_SUFFIX = ".transcript.json"
CALL_INFO_SUFFIX = ".call.json"
COUNT_FIELDS = (*CATEGORIES, "shouting", "agent_shouting")
SUMMARY_FIELDS = (
    "call",
    "path",
    "duration_s",
    "lang",
    "level_reached",
    *COUNT_FIELDS,
    "prompts",
    "alerts",
    "first_prompt_s",
    "error",
    "processing_s",
)
# The last line of a finished call's events file is one of these.
_LAST_EVENT_TYPES = frozenset({CallEnd.type, CallFailed.type})
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SummaryRow:
    """A call's row in summary.csv."""

    call: str
    path: str
    duration_s: float | None = None
    lang: str = ""
    level_reached: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    prompts: int = 0
    alerts: int = 0
    first_prompt_s: float | None = None
    error: str = ""
    processing_s: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @classmethod
    def of(cls, job: CallJob, outcome: CallOutcome, processing_s: float = 0.0) -> SummaryRow:
        """The row of `job`, whose events came to `outcome`."""
        return cls(
            call=job.name,
            path=job.location,
            duration_s=outcome.duration,
            lang=outcome.language,
            # a call that failed before the session summed it up reached no level
            level_reached=outcome.level_reached if outcome.summary is not None else "",
            counts={
                **outcome.detections,
                "shouting": outcome.shouting["customer"],
                "agent_shouting": outcome.shouting["agent"],
            },
            prompts=len(outcome.prompts),
            alerts=len(outcome.alerts),
            first_prompt_s=outcome.first_prompt_t,
            error=outcome.error,
            processing_s=processing_s,
        )

    def row(self) -> dict[str, str]:
        return {
            "call": self.call,
            "path": self.path,
            "duration_s": _number(self.duration_s, 3),
            "lang": self.lang,
            "level_reached": self.level_reached,
            **{name: str(self.counts.get(name, 0)) for name in COUNT_FIELDS},
            "prompts": str(self.prompts),
            "alerts": str(self.alerts),
            "first_prompt_s": _number(self.first_prompt_s, 2),
            "error": self.error,
            "processing_s": _number(self.processing_s, 2),
        }

    @classmethod
    def from_row(cls, row: dict[str, str | None]) -> SummaryRow | None:
        """A row read back from summary.csv, or None for a torn or foreign row."""
        if any(row.get(name) is None for name in SUMMARY_FIELDS):
            return None
        values = {name: row[name] or "" for name in SUMMARY_FIELDS}
        try:
            return cls(
                call=values["call"],
                path=values["path"],
                duration_s=float(values["duration_s"]) if values["duration_s"] else None,
                lang=values["lang"],
                level_reached=values["level_reached"],
                counts={name: int(values[name]) for name in COUNT_FIELDS},
                prompts=int(values["prompts"]),
                alerts=int(values["alerts"]),
                first_prompt_s=float(values["first_prompt_s"]) if values["first_prompt_s"] else None,
                error=values["error"],
                processing_s=float(values["processing_s"] or 0.0),
            )
        except ValueError:
            return None


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[SummaryRow]  # every call of the batch, in job order (resumed ones included)
    replayed: int  # calls replayed by this run (the rest were kept from an earlier run)
    summary: Path
    elapsed_s: float

    @property
    def failed(self) -> list[SummaryRow]:
        return [o for o in self.outcomes if o.failed]


# ---------------------------------------------------------------------------------------------- inputs


def collect_calls(
    inputs: Sequence[str | Path],
    *,
    transcript: Path | None = None,
    call_info: Path | None = None,
    sidecars: bool = True,
) -> list[CallJob]:
    """The calls named by files, folders (searched recursively for audio), glob patterns and fsspec
    URLs (`s3://archive/2026-11/*.wav`, where fsspec and the protocol's package are installed).

    A name that is neither a file, a folder nor a matching pattern is kept as a call, so that
    its error ("file not found") lands in the summary like any other bad recording.
    """
    paths: list[Path | str] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if is_url(text):
            paths += _urls(text)
        elif path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif not path.exists() and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            paths += [Path(m) for m in matches if Path(m).is_file()] or [path]
        else:
            paths.append(path)
    unique: list[Path | str] = []
    seen: set[Path | str] = set()
    for entry in paths:
        # Absolute: a worker elsewhere has another working folder. Not resolve(): links to one file
        # are distinct calls.
        key = entry if isinstance(entry, str) else Path(os.path.abspath(entry))
        if key not in seen:
            seen.add(key)
            unique.append(key)
    if len(unique) > 1:
        for flag, value in (("--transcript", transcript), ("--call-info", call_info)):
            if value is not None:
                raise ConfigError(
                    flag,
                    "",
                    f"applies to one call, got {len(unique)}: put NAME{TRANSCRIPT_SUFFIX} / "
                    f"NAME{CALL_INFO_SUFFIX} beside each recording instead",
                )
    names: set[str] = set()
    return [
        _url_job(entry, names, sidecars)
        if isinstance(entry, str)
        else job_for(entry, names, transcript=transcript, call_info=call_info, sidecars=sidecars)
        for entry in unique
    ]


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(url, "", "URLs need fsspec (pip install 'callguard[cluster]')") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise ConfigError(url, "", f"cannot be opened: {exc}") from None


def _urls(url: str) -> list[str]:
    """The recordings a URL names: itself, the audio under a folder, or a pattern's matches."""
    fs, path = _filesystem(url)
    protocol = url.split("://", 1)[0]

    def full(found: str) -> str:
        return fs.unstrip_protocol(found) if protocol != "file" else f"file://{found}"

    try:
        if _GLOB_CHARS & set(path):
            found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if Path(p).suffix.lower() in AUDIO_SUFFIXES)
        else:
            return [url]
    except OSError as exc:
        raise ConfigError(url, "", f"cannot be listed: {exc}") from None
    return [full(p) for p in found] or [url]


def _url_job(url: str, taken: set[str], sidecars: bool) -> CallJob:
    stem = PurePosixPath(url.split("://", 1)[1]).stem
    job = job_for(Path(stem + PurePosixPath(url).suffix), taken, sidecars=False)
    found = {suffix: "" for suffix in (TRANSCRIPT_SUFFIX, CALL_INFO_SUFFIX)}
    if sidecars:
        fs, path = _filesystem(url)
        base = url[: len(url) - len(PurePosixPath(url).suffix)]
        for suffix in found:
            with suppress(OSError):
                if fs.isfile(path[: len(path) - len(PurePosixPath(path).suffix)] + suffix):
                    found[suffix] = base + suffix
    return replace(
        job, url=url, transcript_url=found[TRANSCRIPT_SUFFIX], call_info_url=found[CALL_INFO_SUFFIX]
    )


def job_for(
    audio: Path,
    taken: set[str],
    *,
    transcript: Path | None = None,
    call_info: Path | None = None,
    sidecars: bool = True,
) -> CallJob:
    """A recording's job: a name not in `taken` (which it joins) and its sidecars."""
    stem = audio.stem or "call"
    name, n = stem, 1
    while name in taken:  # two folders may hold calls with the same file name
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return CallJob(
        name=name,
        audio=audio,
        transcript=transcript or (_sidecar(audio, TRANSCRIPT_SUFFIX) if sidecars else None),
        call_info=call_info or (_sidecar(audio, CALL_INFO_SUFFIX) if sidecars else None),
    )


def _sidecar(audio: Path, suffix: str) -> Path | None:
    candidate = audio.with_name(audio.stem + suffix)
    return candidate if candidate.is_file() else None


# ---------------------------------------------------------------------------------------------- one call


def events_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}{EVENTS_SUFFIX}"


def report_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.html"


def read_events(path: Path) -> list[Event]:
    """A call's events file, typed (each line's `call` key dropped); a bad line raises ConfigError
    naming the file, the line and the field."""
    events = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if isinstance(data, dict):
                    data.pop("call", None)
                events.append(Event.from_dict(data))
            except (ValueError, EventFormatError) as exc:  # JSONDecodeError is a ValueError
                raise ConfigError(path, f"line {number}", str(exc)) from None
    return events


def events_complete(path: Path) -> bool:
    """True if the file is a finished call's events: renamed from .part, ending with call_end or error."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
        return json.loads(tail).get("type") in _LAST_EVENT_TYPES
    except (OSError, ValueError, AttributeError):
        return False


def write_call(job: CallJob, result: CallResult, options: ReplayOptions, out_dir: Path) -> SummaryRow:
    """Write what a worker sent back for `job`: its events file (NAME.part, renamed when whole) and,
    with reports on, its report; the call's summary row."""
    if result.internal_error:
        print(f"callguard: {result.internal_error}", file=sys.stderr)
    sink = JsonlSink(events_path(out_dir, job.name), part=True)
    call = CallInfo(call_id=job.name, source="file")
    try:
        for event in result.events:
            sink.on_event(call, event)
    finally:
        sink.close()
    events = list(result.events)
    row = SummaryRow.of(job, fold_call(events), result.processing_s)
    if options.report:
        write_report_safely(job, events, row, options, out_dir, result)
    return row


def run_call(job: CallJob, options: ReplayOptions, out_dir: Path, state: WorkerState) -> SummaryRow:
    """Replay one call in this process and write its outputs (a worker and its client in one)."""
    return write_call(job, replay_job(job, options, state), options, out_dir)


def write_report_safely(
    job: CallJob,
    events: list[Event],
    row: SummaryRow,
    options: ReplayOptions,
    out_dir: Path,
    result: CallResult | None = None,
) -> None:
    """Write the call's report; a report that fails is said on stderr, the call's results stand.

    The loudness curves and call facts come with the worker's `result`; without one (a call an
    earlier run finished) they are read here."""
    from callguard.qa.report import write_call_report

    try:
        write_call_report(
            report_path(out_dir, job.name),
            job=job,
            events=events,
            row=row,
            config=options.config,
            mask=options.mask,
            traces=None if result is None else result.traces,
            trace_error="" if result is None else result.trace_error,
            call_info=None if result is None else result.call_info,
        )
    except Exception as exc:  # the replay's results matter more than its picture
        print(f"callguard: report for {job.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def default_jobs() -> int:
    return os.cpu_count() or 1


def preload_model(jobs: Sequence[CallJob], options: ReplayOptions) -> Path | None:
    """The model most calls need (None if every call has a transcript, or none is installed).

    Resolved in the parent so that a bad --model fails once, before any worker starts.
    """
    if all(job.transcript is not None or job.transcript_url for job in jobs):
        return None
    return call_model_path(options)


# ---------------------------------------------------------------------------------------------- summary


class SummaryFile:
    """summary.csv, appended one flushed row per finished call, so an interrupted batch keeps its rows."""

    def __init__(self, path: Path, kept: Sequence[SummaryRow] = ()) -> None:
        self.path = path
        # Rewritten whole at the start (kept rows only), then appended: a torn row never survives.
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows(o.row() for o in kept)
        os.replace(temporary, path)
        self._file: TextIO = path.open("a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=SUMMARY_FIELDS)

    def append(self, outcome: SummaryRow) -> None:
        self._writer.writerow(outcome.row())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_summary(path: Path) -> list[SummaryRow]:
    """The rows of a summary.csv (torn or foreign rows skipped)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        rows = [SummaryRow.from_row(row) for row in csv.DictReader(f)]
    return [row for row in rows if row is not None]


def finished_calls(out_dir: Path, jobs: Sequence[CallJob]) -> dict[str, SummaryRow]:
    """Calls of `jobs` an earlier run finished: a summary row without error and a complete events file."""
    wanted = {job.name: job.location for job in jobs}
    done = {}
    for outcome in read_summary(out_dir / SUMMARY_NAME):
        if (
            wanted.get(outcome.call) == outcome.path
            and not outcome.failed
            and events_complete(events_path(out_dir, outcome.call))
        ):
            done[outcome.call] = outcome
    return done


# ---------------------------------------------------------------------------------------------- batch


def run_batch(
    jobs: Sequence[CallJob],
    options: ReplayOptions,
    out_dir: Path,
    *,
    workers: int | None = None,
    cluster: str = "",
    resume: bool = False,
    progress: bool = True,
    executor: CallExecutor | None = None,
    pool: CallExecutor | None = None,  # the older name of `executor`
) -> BatchResult:
    """Replay every call into `out_dir`; bad calls are recorded and the batch goes on.

    The calls run on `executor`, else on the Dask cluster at `cluster`, else on a local pool of
    `workers` processes. A cluster lost midway raises ClusterLost, naming what was kept."""
    from tqdm import tqdm

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = finished_calls(out_dir, jobs) if resume else {}
    pending = [job for job in jobs if job.name not in done]
    by_name = {job.name: job for job in pending}
    for job in pending:  # left by an interrupted run
        events_path(out_dir, job.name).with_name(f"{job.name}{EVENTS_SUFFIX}.part").unlink(missing_ok=True)
    summary = SummaryFile(out_dir / SUMMARY_NAME, [done[job.name] for job in jobs if job.name in done])
    outcomes = dict(done)
    call_infos: dict[str, dict[str, Any]] = {}  # the facts documents the workers read, for the index
    audio_s = 0.0
    bar = tqdm(
        total=len(jobs),
        initial=len(done),
        unit="call",
        desc="replay",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        with ExitStack() as stack:
            active = executor or pool
            if active is None:
                preload = preload_model(pending, options) if pending else None
                count = min(workers or default_jobs(), max(1, len(pending)))
                timeout = options.config.qa.connect_timeout_s
                active = stack.enter_context(open_executor(cluster, count, preload, timeout))
            bar.set_description(f"replay on {active.description}", refresh=False)
            # The bar moves as each call's result arrives, whichever worker ran it.
            for result in active.run(pending, options):
                outcome = write_call(by_name[result.name], result, options, out_dir)
                call_infos[result.name] = result.call_info
                summary.append(outcome)
                outcomes[outcome.call] = outcome
                audio_s += outcome.duration_s or 0.0
                wall = time.perf_counter() - started
                bar.set_postfix_str(
                    f"{audio_s / 3600:.2f} h audio, {audio_s / wall if wall else 0:.1f}x realtime, "
                    f"{sum(o.failed for o in outcomes.values())} failed",
                    refresh=False,
                )
                bar.update(1)
    except ClusterLost as exc:
        finished = len(outcomes) - len(done)
        raise ClusterLost(
            f"{exc}; {finished} of {len(pending)} calls were finished and are kept in {out_dir} "
            f"({len(jobs) - len(outcomes)} left): run again with --resume to finish them"
        ) from None
    finally:
        bar.close()
        summary.close()
    ordered = [outcomes[job.name] for job in jobs]
    # In the calls' order, whatever order they finished in: a rerun gives the same file.
    SummaryFile(out_dir / SUMMARY_NAME, ordered).close()
    if options.report:
        for job, outcome in zip(jobs, ordered, strict=True):
            if job.name in done and not report_path(out_dir, job.name).exists():
                events = read_events(events_path(out_dir, job.name))
                write_report_safely(job, events, outcome, options, out_dir)
        from callguard.qa.report import call_context, write_index

        links = {job.name: report_path(out_dir, job.name).name for job in jobs}
        contexts = {
            job.name: call_context(job, call_infos.get(job.name) or call_info_document(job.call_info))
            for job in jobs
        }
        write_index(out_dir / INDEX_NAME, ordered, links, contexts)
    return BatchResult(
        outcomes=ordered, replayed=len(pending), summary=summary.path, elapsed_s=time.perf_counter() - started
    )
