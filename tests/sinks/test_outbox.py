"""What leaves the workstation for the supervisors' floor: the messages, what `share` lets them say,
and the outbox they wait in (written with their event, in one transaction, in order, priority first)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from callguard.core.events import (
    Abuse,
    CallEnd,
    CallStart,
    HelpRequest,
    LevelChange,
    Match,
    Prompt,
    Transcript,
)
from callguard.sinks.base import CallInfo
from callguard.sinks.outbox import FloorMessages, utc_stamp
from callguard.sinks.store import IncidentStore, StoreSink

CALL = CallInfo(
    "C-7",
    {
        "call_id": "C-7",
        "agent_name": "Sam",
        "queue": "billing",
        "language": "en",
        "customer_name": "Ms Martin",
    },
    "api",
    1_764_608_584.25,
)


def threat(partial: bool = False) -> Abuse:
    said = "i know where you live write to me at jo@example.com"
    return Abuse(
        t=12.5,
        speaker="customer",
        category="threat",
        severity=3,
        words=tuple(said.split()),
        matches=(
            Match("threat", 3, ("know", "where", "you", "live"), "know where you live"),
            Match("threat", 2, ("jo@example.com",), "email"),
            Match("threat", 2, tuple(said.split()), "0.91", source="semantic", score=0.91),
        ),
        text=said,
        partial=partial,
    )


def test_share_decides_what_words_leave() -> None:
    nothing, flagged, everything = (
        FloorMessages(CALL, share).message(threat()) for share in ("none", "flagged", "all")
    )
    assert nothing is not None and flagged is not None and everything is not None
    assert nothing.data == {"category": "threat", "severity": 3, "words": []}
    # lexicon words only (a semantic match read the whole utterance), redacted like the panel's
    assert flagged.data["words"] == ["know", "where", "you", "live", "[email]"]
    assert "text" not in flagged.data
    assert everything.data["text"] == "i know where you live write to me at [email]"
    assert "jo@example.com" not in json.dumps([m.data for m in (nothing, flagged, everything)])


def test_messages_carry_the_call_and_the_wall_clock() -> None:
    messages = FloorMessages(CALL, "flagged")
    start = messages.message(CallStart(t=0.0, speaker="system"))
    assert start is not None and start.kind == "call_started"
    assert start.data == {"agent": "Sam", "queue": "billing", "language": "en", "source": "api"}
    assert "Ms Martin" not in json.dumps(start.data), "the customer's name never leaves"
    assert start.at == "2025-12-01T17:03:04.250Z" == utc_stamp(CALL.started_at)
    level = messages.message(
        LevelChange(t=3.0, speaker="system", level="abusive", previous="calm", reason="x")
    )
    assert level is not None and level.at == "2025-12-01T17:03:07.250Z"


def test_a_threat_alert_names_the_threat_and_the_end_names_the_peak() -> None:
    messages = FloorMessages(CALL, "flagged")
    early = messages.message(threat(partial=True))  # found on stable partial words: once per utterance
    assert early is not None and early.kind == "abuse"
    alert = messages.message(Prompt(t=12.6, speaker="system", id="threat_alert", title="Threat", alert=True))
    assert alert is not None and alert.kind == "threat_alert" and alert.priority
    assert alert.data["words"] == ["know", "where", "you", "live", "[email]"]
    messages.message(LevelChange(t=13.0, speaker="system", level="release", previous="calm"))
    messages.message(LevelChange(t=60.0, speaker="system", level="tense", previous="release"))
    end = messages.message(CallEnd(t=90.0, speaker="system", duration=90.0, reason="api"))
    assert end is not None and end.data == {"duration": 90.0, "level_reached": "release", "reason": "api"}
    help_ = messages.message(HelpRequest(t=20.0, speaker="agent", message="call me at 06 12 34 56 78"))
    assert help_ is not None and help_.priority and help_.data == {"message": "call me at [phone]"}
    words = Transcript(t=5.0, speaker="customer", text="i know where you live", final=True)
    assert messages.message(words) is None, "transcripts never leave"


def outbox(path: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, call_id, kind, priority FROM outbox ORDER BY seq").fetchall()


def test_the_store_sink_writes_each_message_with_its_event(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    sink = StoreSink(store, share="flagged")
    woken: list[bool] = []
    sink.on_priority = lambda: woken.append(True)
    for event in (
        CallStart(t=0.0, speaker="system"),
        Transcript(t=5.0, speaker="customer", text="hello", final=True),
        threat(),
        Prompt(t=12.6, speaker="system", id="threat_alert", title="Threat", alert=True),
        CallEnd(t=30.0, speaker="system", duration=30.0, reason="api"),
    ):
        sink.on_event(CALL, event)
    rows = outbox(path)
    assert [kind for _, _, kind, _ in rows] == ["call_started", "abuse", "threat_alert", "call_ended"]
    assert woken == [True], "the alert woke the floor link"
    seqs = [seq for seq, *_ in rows]
    assert seqs == sorted(seqs) and seqs[0] > (time.time() - 60) * 1000, "seq starts at the unix time in ms"
    [record] = store.calls()
    assert record.end_reason == "api" and record.duration == 30.0
    pending = store.outbox_pending(10)
    assert [entry.kind for entry in pending] == ["threat_alert", "call_started", "abuse", "call_ended"]
    assert pending[0].wire() == {
        "seq": seqs[2],
        "call_id": "C-7",
        "kind": "threat_alert",
        "at": utc_stamp(CALL.started_at + 12.6),
        "t": 12.6,
        "data": {
            "prompt_id": "threat_alert",
            "title": "Threat",
            "words": ["know", "where", "you", "live", "[email]"],
        },
    }
    store.mark_sent([seqs[2], seqs[0]], time.time())
    assert [entry.kind for entry in store.outbox_pending(10)] == ["abuse", "call_ended"]
    assert store.outbox_pending_count() == 2


def test_without_a_floor_nothing_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    sink = StoreSink(IncidentStore(path), share=None)
    sink.on_event(CALL, CallStart(t=0.0, speaker="system"))
    sink.on_event(CALL, threat())
    assert outbox(path) == []


def test_an_event_and_its_message_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    sink = StoreSink(store, share="flagged")
    sink.on_event(CALL, CallStart(t=0.0, speaker="system"))
    with sqlite3.connect(path) as db:  # the outbox refuses the next message: a disk error, say
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk'); END")
    with pytest.raises(sqlite3.IntegrityError):
        store.record(store.find_call("C-7"), threat(), FloorMessages(CALL, "flagged").message(threat()))
    row = store.find_call("C-7")
    assert row is not None and store.details(row)["detections"] == [], "the detection went with its message"


def test_a_recreated_store_never_reuses_a_sequence_number(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    sink = StoreSink(store, share="flagged")
    sink.on_event(CALL, CallStart(t=0.0, speaker="system"))
    [(first, *_)] = outbox(path)
    path.unlink()  # a cleanup script deletes the store while the daemon runs
    time.sleep(0.01)
    sink.on_event(CALL, threat())
    [(second, *_)] = outbox(path)
    assert second > first, "the floor would drop a reused number as a duplicate"
