"""Reports as a QA analyst opens them: in a real (headless) chromium, offline, from a real batch."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callguard.core.config import Config
from callguard.core.events import Abuse, Event, Shouting, Transcript, Word
from callguard.qa.batch import read_events
from callguard.qa.evaluate import _point_labels, _value_axis
from callguard.qa.jobs import CallJob
from callguard.qa.report import (
    WordMask,
    call_context,
    loudness_traces,
    nonspeech_spans,
    shouting_spans,
    speech_segments,
    transcript_html,
    without,
)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def batch_with_reports(fixtures_dir: Path, folder: Path, *extra: str) -> Path:
    calls = folder / "calls"
    calls.mkdir(parents=True)
    for name in ("abusive_stereo_en", "calm_fr", "threat_en", "real_hold_en", "clip_dtmf"):
        for suffix in (".wav", ".transcript.json", ".call.json"):
            if (fixtures_dir / f"{name}{suffix}").exists():
                (calls / f"{name}{suffix}").symlink_to(fixtures_dir / f"{name}{suffix}")
    (calls / "empty.wav").write_bytes(b"")
    out = folder / "out"
    command = [sys.executable, "-m", "callguard.cli", "replay", str(calls), "--out", str(out), "--report"]
    result = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # the empty recording fails; the rest are reported
    assert "Traceback" not in result.stderr
    return out


@pytest.fixture(scope="module")
def reports(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return batch_with_reports(fixtures_dir, tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_offline(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """The page, and every request it made that was not for the file itself (must be none)."""
    context = browser.new_context(offline=True)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    return page, [url for url in requests if url != path.as_uri()]


def test_call_report_shows_plots_and_highlighted_words_offline(reports: Path, browser: Any) -> None:
    page, fetched = open_offline(browser, reports / "abusive_stereo_en.html")
    assert fetched == []  # self-contained: no script, style, font or image fetched
    plot = page.locator("figure.plot svg")
    assert plot.count() == 1
    assert plot.bounding_box()["height"] > 300  # drawn, not an empty element
    assert page.locator("figure.plot svg path").count() > 50  # curves, bars, markers
    flagged = page.locator("#transcript mark.flag")
    words = set(flagged.all_inner_texts())
    assert {"idiot", "stupid", "moron"} <= words
    assert page.locator("#transcript mark.flag.insult").count() >= 3
    assert page.locator("#transcript mark.flag.profanity").count() >= 1
    # the agent's words are shown, and never flagged
    agent_lines = page.locator("#transcript .utt.agent")
    assert agent_lines.count() >= 5 and agent_lines.locator("mark").count() == 0
    prompts = page.locator("table.prompts tbody tr")
    assert prompts.count() >= 4
    assert "Mark Dunn" in page.locator("table.prompts").inner_text()
    facts = page.locator("table.facts").inner_text()
    assert "release" in facts and "Northwind Broadband" in facts
    page.context.close()


def test_report_speaks_the_calls_language(reports: Path, browser: Any) -> None:
    page, _ = open_offline(browser, reports / "calm_fr.html")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert "Transcription" in page.locator("h2").all_inner_texts()
    assert page.locator("#transcript mark").count() == 0  # "conseil", "contrat", "console" are not flagged
    page.context.close()


def test_index_lists_every_call_and_sorts_by_column(reports: Path, browser: Any) -> None:
    page, fetched = open_offline(browser, reports / "index.html")
    assert fetched == []
    rows = page.locator("#calls tbody tr")
    assert rows.count() == 6
    links = page.locator("#calls tbody a")
    assert sorted(links.all_inner_texts()) == [
        "abusive_stereo_en", "calm_fr", "clip_dtmf", "empty", "real_hold_en", "threat_en"
    ]  # fmt: skip
    for href in (links.nth(i).get_attribute("href") for i in range(links.count())):
        assert href and (reports / href).is_file()
    assert "empty file" in page.locator("#calls tr.failed").inner_text()
    # a failed call's report says why, and draws nothing
    failed, _ = open_offline(browser, reports / "empty.html")
    assert "empty file" in failed.locator("table.facts .error").inner_text()
    assert failed.locator("svg").count() == 0
    failed.context.close()
    insult_header = page.locator("#calls th", has_text=re.compile(r"^insult$"))
    column = insult_header.evaluate("th => th.cellIndex")

    def insult_column() -> list[int]:
        return [int(t) for t in page.locator(f"#calls tbody td:nth-child({column + 1})").all_inner_texts()]

    insult_header.click()
    ascending = insult_column()
    insult_header.click()
    descending = insult_column()
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    assert descending[0] >= 3  # the abusive call comes first
    assert page.locator("#calls tbody tr").first.locator("a").inner_text() == "abusive_stereo_en"
    page.context.close()


def test_masked_report_hides_flagged_words(fixtures_dir: Path, tmp_path: Path, browser: Any) -> None:
    out = batch_with_reports(fixtures_dir, tmp_path, "--mask")
    page, _ = open_offline(browser, out / "abusive_stereo_en.html")
    flagged = page.locator("#transcript mark.flag").all_inner_texts()
    assert "i****" in flagged and "m****" in flagged
    body = page.locator("body").inner_text().lower()
    for word in ("idiot", "moron", "bullshit"):
        assert word not in body
    page.context.close()


def test_transcript_marks_only_the_words_of_the_abuse_in_its_utterance() -> None:
    words = tuple(Word(w, 10 + i * 0.3, 10.25 + i * 0.3) for i, w in enumerate("you stupid idiot".split()))
    events: list[Event] = [
        Transcript(t=10.0, speaker="customer", text="you stupid idiot", words=words, final=True),
        Transcript(t=20.0, speaker="customer", text="a stupid printer", final=True),
        Abuse(t=10.3, speaker="customer", category="insult", words=("idiot",)),
    ]
    texts = {"customer": "customer", "insult": "insult", "no_transcript": "none"}
    plain = transcript_html(events, texts, WordMask(["idiot"], enabled=False))
    assert plain.count("<mark") == 1 and '<mark class="flag insult" title="insult">idiot</mark>' in plain
    masked = transcript_html(events, texts, WordMask(["idiot"], enabled=True))
    assert ">i****</mark>" in masked and "idiot" not in masked
    assert WordMask(["idiot"], enabled=True).text("Idiot! idiots") == "I****! idiots"


def test_loudness_traces_measure_each_channel_and_extend_shouts(tmp_path: Path) -> None:
    rate = 8000
    t = np.arange(rate * 4) / rate
    quiet = 0.01 * np.sin(2 * np.pi * 300 * t)  # RMS -43 dBFS
    loud = np.where((t >= 1.0) & (t < 2.5), 0.3, 0.01) * np.sin(2 * np.pi * 300 * t)  # -13.5 dBFS burst
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([loud, quiet], axis=1), rate, subtype="PCM_16")
    customer, agent = loudness_traces(path, Config())
    assert (customer.speaker, agent.speaker) == ("customer", "agent")
    assert customer.times[-1] == pytest.approx(3.9, abs=0.11)
    assert np.median(agent.dbfs) == pytest.approx(-43.0, abs=0.5)
    assert customer.dbfs[(customer.times > 1.2) & (customer.times < 2.3)].mean() == pytest.approx(
        -13.5, abs=0.5
    )
    shout = Shouting(t=1.0, speaker="customer", duration=0.6, baseline_db=-43.0)
    spans = shouting_spans([shout], [customer, agent], Config())
    ((start, end),) = spans["customer"]
    assert start == 1.0 and end == pytest.approx(2.5, abs=0.15)  # the shout lasted 1.5 s, not 0.6


def test_index_opens_with_an_overview_per_day_and_agent_above_the_table(reports: Path, browser: Any) -> None:
    page, fetched = open_offline(browser, reports / "index.html")
    assert fetched == []
    overview = page.locator("figure#overview svg")
    assert overview.count() == 1 and overview.bounding_box()["height"] > 500  # days, then agents: two rows
    assert page.locator("figure#overview svg path").count() > 20  # bars, not an empty figure
    box, table = overview.bounding_box(), page.locator("#calls").bounding_box()
    assert box["y"] + box["height"] <= table["y"]  # the plots first, the table below
    headers = page.locator("#calls thead th").all_inner_texts()
    assert headers[:3] == ["call", "day", "agent"]  # the facts name agents; no call names a queue
    cells = page.locator("#calls tbody tr")
    agents = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(2).inner_text() for row in cells.all()
    }
    assert agents["calm_fr"] == "Camille" and agents["threat_en"] == "Sam" and agents["empty"] == ""
    page.context.close()


def test_hold_music_and_tones_are_drawn_as_themselves_not_as_speech(reports: Path) -> None:
    for name, kind in (("real_hold_en", "music"), ("clip_dtmf", "tone")):
        events = read_events(reports / f"{name}.events.jsonl")
        spans = nonspeech_spans(events)["customer"]
        assert [k for _, _, k in spans] == [kind], spans
        holes = [(start, end) for start, end, _ in spans]
        vad = speech_segments(events, 100.0)["customer"]
        # the VAD took the music (or the tone) for speech; the bars drawn as speech leave it out
        assert any(s < holes[0][1] and e > holes[0][0] for s, e in vad)
        drawn = without(vad, holes)
        assert not any(s < he and e > hs for s, e in drawn for hs, he in holes)
        page = (reports / f"{name}.html").read_text()
        assert "<pattern" in page  # the hatched bars of music and tones
    assert "<pattern" not in (reports / "calm_fr.html").read_text()
    assert without([(0.0, 10.0)], [(2.0, 3.0), (5.0, 6.0)]) == [(0.0, 2.0), (3.0, 5.0), (6.0, 10.0)]


def test_a_prompt_at_the_calls_end_keeps_its_number_inside_the_ladders_frame(
    reports: Path, browser: Any
) -> None:
    page, _ = open_offline(browser, reports / "abusive_stereo_en.html")
    # matplotlib's SVG: one <g id="axes_N"> per panel, its frame the first patch, the prompts' numbers
    # its own text groups (tick labels sit deeper, under the axis groups)
    frame, numbers = page.evaluate(
        """() => {
        const ladder = [...document.querySelectorAll('figure.plot svg g[id^="axes_"]')].pop();
        const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.right]; };
        return [box(ladder.querySelector('g[id^="patch_"]')),
                [...ladder.querySelectorAll(':scope > g[id^="text_"]')].map(box)];
        }"""
    )
    assert len(numbers) >= 7  # prompts 1 to 7, the 7th at the call's last second
    assert all(frame[0] <= left and right <= frame[1] + 0.5 for left, right in numbers), (frame, numbers)
    page.context.close()


def test_call_facts_read_yes_no_and_a_call_never_decoded_names_no_recogniser(
    reports: Path, browser: Any
) -> None:
    page, _ = open_offline(browser, reports / "threat_en.html")
    facts = page.locator("table.facts").inner_text()
    assert "call information: transfer_available\tyes" in facts and "transferred_in\tno" in facts
    assert "True" not in facts and "False" not in facts
    assert "words from\ttranscript sidecar (threat_en.transcript.json)" in facts
    page.context.close()
    failed, _ = open_offline(browser, reports / "empty.html")
    facts = failed.locator("table.facts").inner_text()
    assert "words from\tnone: the recording was not decoded" in facts and "recogniser" not in facts
    failed.context.close()


def test_call_context_reads_the_day_from_the_archive_path_and_the_agent_from_the_facts(
    tmp_path: Path,
) -> None:
    job = CallJob(name="c", audio=tmp_path / "archive" / "2026" / "11" / "03" / "c.wav")
    context = call_context(job, {"agent_name": " Sam ", "queue": "billing", "transfer_available": True})
    assert (context.day, context.agent, context.queue) == ("2026-11-03", "Sam", "billing")
    url = CallJob(name="d", audio=Path("d.wav"), url="s3://calls/20261104-0915-d.wav")
    assert call_context(url, {}).day == "2026-11-04" and call_context(url, {}).agent == ""


def test_sweep_axis_takes_the_settings_type_and_labels_never_overlap() -> None:
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    _value_axis(ax, [1, 2, 3, 4])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    many = list(range(1, 41))
    ax = Figure().subplots()
    ax.plot(many, many)
    _value_axis(ax, many)
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 40]
    assert 2 <= len(ticks) <= 11 and all(float(t).is_integer() for t in ticks)
    # values that land on one point share one label; past ten points only some are named
    labels = _point_labels([1, 2, 3], [1.0, 1.0, 0.5], [0.5, 0.5, 1.0])
    assert labels == [((1.0, 0.5), "1, 2"), ((0.5, 1.0), "3")]
    spread = _point_labels(many, [i / 40 for i in many], [1 - i / 40 for i in many])
    assert 5 <= len(spread) <= 10 and len({point for point, _ in spread}) == len(spread)
