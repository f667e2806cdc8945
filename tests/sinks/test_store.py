"""The incident store: what it keeps, redaction, CSV export, and durability under kill -9."""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import (
    Abuse,
    AgentAction,
    CallSummary,
    LanguageDecided,
    LevelChange,
    Notice,
    Prompt,
    Shouting,
    Transcript,
)
from callguard.core.redact import redact_text
from callguard.sinks.base import CallInfo
from callguard.sinks.store import IncidentStore, StoreSink, cmd_incidents, write_csv

FACTS = {
    "call_id": "C-1",
    "customer_name": "Ms Martin",
    "company": "Acme",
    "agent_name": "Sam",
    "language": "en",
    "transfer_available": True,
    "transferred_in": False,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is four five three two one two three four five six seven eight nine zero one two ok",
         "my card is [card] ok"),
        ("card 4532 1234 5678 9012 please", "card [card] please"),
        ("4532-1234-5678-9012", "[card]"),
        ("call me at 06 12 34 56 78", "call me at [phone]"),
        ("call me on +1 (555) 123-4567 tonight", "call me on [phone] tonight"),
        ("my number is five five five one two three four", "my number is [phone]"),
        ("zéro six douze trente-quatre cinquante-six soixante-dix-huit merci", "[phone] merci"),
        ("it's john dot smith at example dot com thanks", "it's [email] thanks"),
        ("write to j.smith+x@mail.example.co.uk now", "write to [email] now"),
        ("jean point dupont arobase exemple point fr", "[email]"),
        # issue 17.8: pauses written as commas, spelt-out symbols, French digits
        ("four five three two, one two three four, five six seven eight, nine zero one two", "[card]"),
        ("five five five, one two three, four five six seven", "[phone]"),
        ("john (at) example (dot) com", "[email]"),
        ("quatre cinq trois deux un deux trois quatre cinq six sept huit neuf zéro un deux", "[card]"),
        ("écrivez à jean arobase exemple point com", "écrivez à [email]"),
        # not personal data: left alone
        ("I have two kids and one dog", "I have two kids and one dog"),
        ("I waited twenty minutes at the shop", "I waited twenty minutes at the shop"),
        ("order 12345 arrived", "order 12345 arrived"),
        ("it happened on 12 03 2024", "it happened on 12 03 2024"),  # a date, not a phone
        ("the letter of 2024-03-12 says", "the letter of 2024-03-12 says"),
        ("i paid 12.50 for it", "i paid 12.50 for it"),
        ("look at this", "look at this"),
    ],
)  # fmt: skip
def test_redaction(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def _fill(store: IncidentStore) -> int:
    call = store.start_call(FACTS, source="api")
    store.record(call, LanguageDecided(t=0.0, speaker="system", lang="en", source="call_info"))
    store.record(
        call, Transcript(t=1.0, speaker="customer", text="my card is 4532 1234 5678 9012", final=True)
    )
    store.record(call, Transcript(t=1.0, speaker="customer", text="partial words", final=False))
    store.record(call, Shouting(t=2.0, speaker="customer", level_db=-8.0, baseline_db=-26.0))
    store.record(call, Abuse(t=3.0, speaker="customer", category="insult", severity=2, words=("idiot",)))
    store.record(
        call, LevelChange(t=3.0, speaker="system", level="abusive", previous="calm", reason="insult")
    )
    store.record(
        call,
        Prompt(t=3.1, speaker="system", id="abusive.limits", level="abusive", title="State limits",
               text="I want to solve this", because=("abuse:insult@3.00(idiot)",)),
    )  # fmt: skip
    store.record(call, AgentAction(t=5.0, speaker="agent", action="limits_stated"))
    store.record(call, LevelChange(t=50.0, speaker="system", level="tense", previous="abusive"))
    store.record(call, CallSummary(t=60.0, speaker="system", level_reached="abusive"))
    store.end_call(call, duration=60.0, reason="api")
    return call


def test_store_keeps_call_facts_detections_prompts_actions(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "s.sqlite3", redact=True)
    call = _fill(store)
    [record] = store.calls()
    assert (record.call_id, record.customer_name, record.company, record.agent_name) == (
        "C-1", "Ms Martin", "Acme", "Sam",
    )  # fmt: skip
    # the peak is kept even though the call stepped back down to tense
    assert record.level_reached == "abusive"
    assert (record.detections, record.prompts, record.actions, record.duration) == (2, 1, 1, 60.0)
    details = store.details(call)
    assert [(d["category"], d["t"]) for d in details["detections"]] == [("shouting", 2.0), ("insult", 3.0)]
    assert details["prompts"][0]["prompt_id"] == "abusive.limits"
    assert details["actions"][0]["action"] == "limits_stated"
    # only final transcripts are stored, redacted
    assert [t["text"] for t in details["transcripts"]] == ["my card is [card]"]
    store.close()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redaction_can_be_turned_off(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "s.sqlite3", redact=False)
    call = _fill(store)
    assert store.details(call)["transcripts"][0]["text"] == "my card is 4532 1234 5678 9012"


def test_csv_export_and_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.sqlite3"
    store = IncidentStore(db)
    _fill(store)
    store.start_call({"call_id": "C-2"}, source="auto")
    out = io.StringIO()
    assert write_csv(store.calls(), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["call_id"] for r in rows] == ["C-2", "C-1"]
    assert rows[1]["level_reached"] == "abusive" and rows[1]["detections"] == "2"
    store.close()

    config = Config().with_overrides(store={"path": str(db)})
    assert cmd_incidents(config, csv_out=None, limit=10) == 0
    listing = capsys.readouterr().out
    assert "C-1 / Ms Martin / Acme" in listing and "abusive" in listing
    exported = tmp_path / "out.csv"
    assert cmd_incidents(config, csv_out=exported, limit=1) == 0
    assert len(list(csv.DictReader(exported.open()))) == 1


def test_incidents_without_a_store_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config().with_overrides(store={"path": str(tmp_path / "none.sqlite3")})
    assert cmd_incidents(config, csv_out=None, limit=5) == 1
    assert "none.sqlite3" in capsys.readouterr().err


WRITER = r"""
import sys, time
from pathlib import Path
from callguard.sinks.store import IncidentStore
from callguard.core.events import Abuse
store = IncidentStore(Path(sys.argv[1]))
call = store.start_call({"call_id": "crash"}, source="api")
i = 0
while True:
    store.record(call, Abuse(t=float(i), speaker="customer", category="profanity", words=(f"w{i}",)))
    print(i, flush=True)  # printed only after the commit returned
    i += 1
"""


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert writer.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 30
    while acknowledged < 200 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
    writer.send_signal(signal.SIGKILL)  # mid-stream: the writer is committing as fast as it can
    writer.wait()
    assert acknowledged >= 200, "the writer did not get going"
    store = IncidentStore(db)
    call = store.find_call("crash")
    assert call is not None
    rows = store.details(call)["detections"]
    # every acknowledged commit is there, in order, and nothing is half-written
    assert len(rows) >= acknowledged + 1
    assert [r["detail"] for r in rows] == [f"w{i}" for i in range(len(rows))]
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_store_is_readable_by_its_user_only(tmp_path: Path) -> None:
    """Issue 17.9: the store folder was 755, the database and its WAL 644."""
    path = tmp_path / "fresh" / "incidents.sqlite3"
    store = IncidentStore(path)
    store.start_call({"call_id": "perm-1"}, source="api", started_at=0.0)
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    for file in (path, path.with_name(path.name + "-wal")):
        assert file.exists() and (file.stat().st_mode & 0o777) == 0o600, file
    old = tmp_path / "old.sqlite3"
    old.touch(mode=0o644)
    old.chmod(0o644)
    IncidentStore(old)
    assert (old.stat().st_mode & 0o777) == 0o600


def test_events_are_redacted_with_their_timed_words() -> None:
    from callguard.core.events import Transcript, Word
    from callguard.core.redact import redact_event

    said = "call me on oh seven seven nine one two three four five six seven thanks".split()
    words = tuple(Word(w, float(i), i + 0.5) for i, w in enumerate(said))
    final = redact_event(Transcript(t=0.0, speaker="customer", text=" ".join(said), words=words, final=True))
    assert isinstance(final, Transcript)
    assert final.text == "call me on [phone] thanks"
    assert [w.word for w in final.words] == ["call", "me", "on", "[phone]", "thanks"]
    phone = final.words[3]
    assert (phone.start, phone.end) == (3.0, 13.5)  # the span of the words it stands for
    partial = redact_event(Transcript(t=0.0, speaker="customer", text="my card is four one one", final=False))
    assert isinstance(partial, Transcript) and partial.text == "my card is [number]"
    assert redact_text("my card is four one one") == "my card is four one one"  # a final: three digits stay


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("my email is john at example", "my email is [email]"),
        ("my email is john at example dot", "my email is [email]"),
        ("écrivez à jean arobase", "écrivez à [email]"),
        ("john (at) example (dot)", "[email]"),
        ("i am at", "i am at"),  # nothing after the "at" yet: no address
        ("call me at five five five", "call me at [number]"),
    ],
)
def test_an_address_still_being_said_is_redacted_in_a_partial(partial: str, expected: str) -> None:
    """Found by scripts/probe_daemon.py (issue 17.7): the partials before an e-mail's last word
    ("john at example", "... dot") went to events.jsonl whole."""
    assert redact_text(partial, open_end=True) == expected


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_deleted_or_replaced_while_running_loses_nothing_after(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17.5: every write after a delete went to the unlinked file, and health said ok."""
    from callguard.core.events import Notice

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    row = store.start_call({"call_id": "kept-1", "customer_name": "Ms Lee"}, source="api")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "replaced":  # by an empty file, as a cleanup script that truncates would leave it
        (tmp_path / "other.sqlite3").write_bytes(b"")
        (tmp_path / "other.sqlite3").rename(path)
    store.record(row, Notice(t=3.0, speaker="system", message="said after the file went"))
    store.end_call(row, duration=4.0, reason="api")
    assert store.recreated and str(path) in store.recreated
    assert any("incident store recreated" in r.getMessage() for r in caplog.records)
    reread = IncidentStore(path)
    [call] = reread.calls()
    assert (call.call_id, call.customer_name, call.end_reason) == ("kept-1", "Ms Lee", "api")
    assert [n["message"] for n in reread.details(row)["notices"]] == ["said after the file went"]


def test_a_foreign_database_is_refused_not_written_into(tmp_path: Path) -> None:
    """Issue 17.18: `callguard incidents` created its schema inside a database it was pointed at."""
    path = tmp_path / "crm.sqlite3"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE customers (name)")
    other.commit()
    other.close()
    with pytest.raises(ConfigError, match="is not a callguard incident store"):
        IncidentStore(path)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert tables == {"customers"}


def test_calls_left_open_by_a_killed_daemon_are_closed_as_interrupted(tmp_path: Path) -> None:
    """Issue 17.18: a call killed with -9 kept ended_at NULL for ever."""
    from callguard.core.events import Notice

    path = tmp_path / "incidents.sqlite3"
    killed = IncidentStore(path)
    row = killed.start_call({"call_id": "k-1"}, source="api", started_at=1000.0)
    killed.record(row, Notice(t=12.5, speaker="system", message="last thing stored"))
    done = killed.start_call({"call_id": "k-2"}, source="api", started_at=2000.0)
    killed.end_call(done, duration=5.0, reason="api", ended_at=2005.0)
    restarted = IncidentStore(path)
    assert restarted.close_interrupted() == 1
    calls = {c.call_id: c for c in restarted.calls()}
    assert (calls["k-1"].end_reason, calls["k-1"].duration) == ("interrupted", 12.5)
    assert (calls["k-2"].end_reason, calls["k-2"].duration) == ("api", 5.0)
    assert restarted.close_interrupted() == 0


def fill_the_disk(store: IncidentStore) -> None:
    """The store's file may grow no further: SQLite then fails as on a full disk, with
    OperationalError "database or disk is full" (max_page_count, per connection). Lifted by
    `free_the_disk`."""
    with store._lock:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")


def free_the_disk(store: IncidentStore) -> None:
    with store._lock:
        store._db.execute("PRAGMA max_page_count=1073741823")


def notices_until_refused(sink: StoreSink, call: CallInfo) -> list[str]:
    """Notices of `call` until the full disk's pages are used up and one is refused (held): what was said."""
    said: list[str] = []
    for i in range(2000):
        said.append(f"notice {i} " + "x" * 200)
        sink.on_event(call, Notice(t=float(i), speaker="system", message=said[-1]))
        if sink.held:
            break
    return said


def test_a_full_disk_holds_events_in_memory_and_writes_them_in_order_once_freed(tmp_path: Path) -> None:
    """Issue 17.18: after a full disk was freed, health stayed failing until the next write, and a
    call started while the disk was full was never stored."""
    from callguard.core.events import CallEnd, CallStart

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    sink = StoreSink(store)
    before = CallInfo("before", {"call_id": "before"}, "api", 1000.0)
    sink.on_event(before, CallStart(t=0.0, speaker="system"))
    fill_the_disk(store)
    said = notices_until_refused(sink, before)
    assert sink.held == 1 and "database or disk is full" in store.last_error
    assert not store.healthy()
    during = CallInfo("during", {"call_id": "during", "customer_name": "Ms Lee"}, "api", 2000.0)
    sink.on_event(during, CallStart(t=0.0, speaker="system"))
    sink.on_event(during, AgentAction(t=1.0, speaker="agent", action="limits_stated"))
    sink.on_event(during, CallEnd(t=2.0, speaker="system", duration=2.0, reason="api"))
    sink.on_event(before, Notice(t=5000.0, speaker="system", message="the last"))
    assert sink.held == 5
    assert sink.retry() is False and sink.held == 5, "still full: everything still held"
    reader = IncidentStore(path)
    assert [c.call_id for c in reader.calls()] == ["before"]

    free_the_disk(store)
    assert sink.retry() is True and sink.held == 0
    assert store.healthy(), "the retry's writes clear the failure"
    calls = {c.call_id: c for c in reader.calls()}
    assert calls["during"].customer_name == "Ms Lee" and calls["during"].end_reason == "api"
    assert calls["during"].ended_at == pytest.approx(time.time(), abs=5)
    assert [a["action"] for a in reader.details(calls["during"].id)["actions"]] == ["limits_stated"]
    notices = [n["message"] for n in reader.details(calls["before"].id)["notices"]]
    assert notices == [*said, "the last"], "every event, in order, none twice"


def test_events_beyond_what_memory_holds_are_counted_not_kept(tmp_path: Path) -> None:
    from callguard.core.events import CallStart, Notice

    store = IncidentStore(tmp_path / "incidents.sqlite3")
    sink = StoreSink(store, capacity=3)
    call = CallInfo("c", {"call_id": "c"}, "api", 1000.0)
    sink.on_event(call, CallStart(t=0.0, speaker="system"))
    fill_the_disk(store)
    for i in range(1, 500):
        sink.on_event(call, Notice(t=float(i), speaker="system", message="y" * 300))
    assert sink.held == 3 and sink.lost > 0
    row = store.find_call("c")
    assert row is not None
    written = len(store.details(row)["notices"])
    assert 1 + written + sink.held + sink.lost == 500, "each event written, held or counted as lost"


def test_a_reload_while_the_disk_is_full_hands_the_held_events_to_the_new_store(tmp_path: Path) -> None:
    """The probe's re-run found that a config reload during a full disk dropped the events held."""
    from callguard.core.events import CallEnd, CallStart

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    first = StoreSink(store)
    earlier = CallInfo("earlier", {"call_id": "earlier"}, "api", 900.0)
    first.on_event(earlier, CallStart(t=0.0, speaker="system"))
    fill_the_disk(store)
    notices_until_refused(first, earlier)
    call = CallInfo("held", {"call_id": "held", "customer_name": "Mr Roy"}, "api", 1000.0)
    first.on_event(call, CallStart(t=0.0, speaker="system"))
    first.on_event(call, AgentAction(t=1.0, speaker="agent", action="limits_stated"))
    first.on_event(call, CallEnd(t=2.0, speaker="system", duration=2.0, reason="api"))
    assert first.held == 4

    reloaded_store = IncidentStore(path)
    fill_the_disk(reloaded_store)
    reloaded = StoreSink(reloaded_store)
    first.successor = reloaded
    first.close()  # as the sinks' swap does: the old sink closes once the new one is in place
    assert first.held == 0 and reloaded.held == 4
    free_the_disk(reloaded_store)
    assert reloaded.retry() is True
    stored = {c.call_id: c for c in IncidentStore(path).calls()}
    assert stored["held"].customer_name == "Mr Roy" and stored["held"].end_reason == "api"
    actions = IncidentStore(path).details(stored["held"].id)["actions"]
    assert [a["action"] for a in actions] == ["limits_stated"]
