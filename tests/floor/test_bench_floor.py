"""The floor benchmark's quick run (scripts/bench_floor.py --quick): 20 real workstations (IncidentStore,
StoreSink, FloorLink) report to a real floor subprocess on a real PostgreSQL, the floor is killed -9,
PostgreSQL's postmaster is killed -9, the floor is stopped for a few seconds; every event queued in every
outbox is in PostgreSQL once, and every threat alert and help request reached the wallboard's stream and
the webhook. The latency figures are the benchmark's to report, not this test's to judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_benchmark_loses_nothing_through_kills_and_an_outage(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench_floor.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=180, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())

    delivery = report["delivery"]
    assert delivery["queued"] == report["generated"]["events"] > 100, delivery
    assert delivery["in_postgres"] == delivery["queued"], delivery
    for count in ("missing", "extra", "different", "twice", "unsent", "calls_incomplete", "calls_misordered"):
        assert delivery[count] == 0, (count, delivery)
    assert delivery["calls"] == report["generated"]["calls"] > 20, delivery

    faults = [fault["what"] for fault in report["faults"]]
    assert faults == ["floor started", "floor kill -9", "postgres kill -9", "floor stopped", "drained"], (
        faults
    )
    assert all(fault.get("restart_s", 0) > 0 for fault in report["faults"][1:4]), report["faults"]

    alerts = report["alerts"]
    made = sum(alerts["kinds"].values())
    assert made > 5 and alerts["lost"] == {"wallboard": 0, "webhook": 0}, alerts
    assert sum(delivery["alerts_in_postgres"].values()) == made, (delivery, alerts["kinds"])
    assert delivery["webhook_deliveries"] == {"sent": made}, delivery
    measured = sum(row["wallboard"]["n"] for row in alerts["phases"])
    assert measured == made and sum(row["webhook"]["n"] for row in alerts["phases"]) == made, alerts
    assert "nothing lost" in run.stdout and "steady" in run.stdout
