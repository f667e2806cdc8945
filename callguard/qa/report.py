"""QA reports: one self-contained HTML page per replayed call, and an index of a batch.

A call's page holds one matplotlib figure as inline SVG (no external file, font or
script: it opens offline): each speaker's loudness over time with shouting shaded and
speech segments marked, and under it, on the same time axis, the escalation ladder with
the prompts and detections. Then the transcript with flagged words highlighted
(`<mark class="flag">`, masked on request), the prompts, and the call's facts.
The page speaks the call's language (English or French).

Everything is drawn from the call's typed events (as read back from its JSONL file), their
outcome (`core.outcome.fold_call`) and the recording itself, read again for the loudness curves,
so a report can be remade later.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from callguard.audio.files import probe, read_blocks
from callguard.core.config import Config
from callguard.core.errors import CallguardError
from callguard.core.events import (
    CATEGORIES,
    LEVELS,
    Abuse,
    Event,
    LevelChange,
    NonSpeech,
    Notice,
    Prompt,
    Shouting,
    SpeechEnd,
    SpeechStart,
    Transcript,
    Word,
    level_rank,
)
from callguard.core.outcome import fold_call
from callguard.qa.batch import CallJob, SummaryRow
from callguard.qa.jobs import call_info_document

MAX_PLOT_POINTS = 3000  # per speaker: an hour-long call still makes a light page
MIN_STEP_S = 0.1
SHOUT_GAP_S = 0.3  # dips shorter than this (between words) do not end a shaded shout
_FULL_SCALE_POWER = 32768.0**2
_SPEAKER_COLOURS = {"customer": "#1f5fa8", "agent": "#2e8540"}
_CATEGORY_COLOURS = {"profanity": "#b8860b", "insult": "#c0392b", "threat": "#6c1a7a"}
# What the non-speech gate kept from the recogniser, each drawn as itself on the speech bars' row.
_NONSPEECH_COLOURS = {"music": "#e08a1e", "tone": "#17a2a2", "noise": "#b9b9b9"}
_SPEECH_COLOUR = "#666666"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Call report",
        "plot": "Loudness of each speaker (shouting shaded; under it, speech segments as grey bars, hold "
        "music, tones and noise in their colours) and the escalation ladder with prompts, on one time axis",
        "loudness": "dBFS",
        "speech": "speech",
        "shouting": "shouting",
        "ladder": "ladder",
        "time": "call time (s)",
        "prompt": "prompt",
        "alert": "alert",
        "facts": "Call facts",
        "transcript": "Transcript",
        "no_transcript": "No words were recognised.",
        "prompts": "Prompts shown to the agent",
        "no_prompts": "No prompt was shown.",
        "detections": "Detections",
        "no_detections": "Nothing was detected.",
        "customer": "customer",
        "agent": "agent",
        "system": "system",
        "call": "call",
        "recording": "recording",
        "duration": "duration",
        "language": "language",
        "level_reached": "level reached",
        "counts": "detections",
        "error": "error",
        "processing": "processing time",
        "transcript_source": "words from",
        "sidecar": "transcript sidecar",
        "recogniser": "speech recogniser",
        "no_words_failed": "none: the recording was not decoded",
        "no_words": "none: no speech recognised",
        "music": "hold music",
        "tone": "tone / DTMF",
        "noise": "noise",
        "yes": "yes",
        "no": "no",
        "call_info": "call information",
        "masked": "Flagged words are masked.",
        "level": "level",
        "time_col": "time",
        "what": "what to do",
        "say": "say",
        "because": "because",
        "category": "category",
        "severity": "severity",
        "words": "words",
        "notices": "Notices",
        "calm": "calm",
        "tense": "tense",
        "abusive": "abusive",
        "transfer": "transfer",
        "release": "release",
        "profanity": "profanity",
        "insult": "insult",
        "threat": "threat",
        "agent_shouting": "agent shouting",
        "speaker": "speaker",
        "prompt_count": "prompts",
        "alerts": "alerts",
    },
    "fr": {
        "title": "Rapport d'appel",
        "plot": "Volume de chaque interlocuteur (cris en grisé ; dessous, la parole en barres grises, la "
        "musique d'attente, les tonalités et le bruit en couleur) et niveau d'escalade avec les consignes, "
        "sur le même axe du temps",
        "loudness": "dBFS",
        "speech": "parole",
        "shouting": "cris",
        "ladder": "niveau",
        "time": "temps d'appel (s)",
        "prompt": "consigne",
        "alert": "alerte",
        "facts": "Données de l'appel",
        "transcript": "Transcription",
        "no_transcript": "Aucun mot reconnu.",
        "prompts": "Consignes affichées à l'agent",
        "no_prompts": "Aucune consigne affichée.",
        "detections": "Détections",
        "no_detections": "Rien n'a été détecté.",
        "customer": "client",
        "agent": "agent",
        "system": "système",
        "call": "appel",
        "recording": "enregistrement",
        "duration": "durée",
        "language": "langue",
        "level_reached": "niveau atteint",
        "counts": "détections",
        "error": "erreur",
        "processing": "temps de traitement",
        "transcript_source": "mots issus de",
        "sidecar": "transcription fournie",
        "recogniser": "reconnaissance vocale",
        "no_words_failed": "aucun : l'enregistrement n'a pas été décodé",
        "no_words": "aucun : aucune parole reconnue",
        "music": "musique d'attente",
        "tone": "tonalité / DTMF",
        "noise": "bruit",
        "yes": "oui",
        "no": "non",
        "call_info": "informations d'appel",
        "masked": "Les mots signalés sont masqués.",
        "level": "niveau",
        "time_col": "temps",
        "what": "que faire",
        "say": "dire",
        "because": "parce que",
        "category": "catégorie",
        "severity": "gravité",
        "words": "mots",
        "notices": "Avis",
        "calm": "calme",
        "tense": "tendu",
        "abusive": "abusif",
        "transfer": "transfert",
        "release": "fin d'appel",
        "profanity": "grossièreté",
        "insult": "insulte",
        "threat": "menace",
        "agent_shouting": "agent qui crie",
        "speaker": "interlocuteur",
        "prompt_count": "consignes",
        "alerts": "alertes",
    },
}

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #e3e3e3;text-align:left;
vertical-align:top}th{background:#f4f4f4}
figure.plot{margin:0}figure.plot svg{width:100%;height:auto}
mark.flag{background:#ffd6d6;color:#7a0000;padding:0 .15em;border-radius:3px}
mark.flag.threat{background:#e8d4f0;color:#4b0f57}mark.flag.profanity{background:#fff0c2;color:#5c4400}
.utt{margin:.2em 0}.time{color:#777;font-variant-numeric:tabular-nums}.who{font-weight:600;margin:0 .4em}
.agent .who{color:#2e8540}.customer .who{color:#1f5fa8}.alert{color:#b00020;font-weight:600}
.error{color:#b00020}.note{color:#555;font-style:italic}
"""

_SORT_SCRIPT = """
for (const th of document.querySelectorAll("table.sortable th")) {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    const ascending = th.dataset.order !== "asc";
    for (const other of th.parentElement.children) delete other.dataset.order;
    th.dataset.order = ascending ? "asc" : "desc";
    const key = (row) => row.cells[col].dataset.value ?? row.cells[col].textContent.trim();
    const numeric = th.dataset.type === "number";
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const c = numeric ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
      return ascending ? c : -c;
    });
    for (const row of rows) body.appendChild(row);
  });
}
"""


@dataclass(frozen=True)
class LoudnessTrace:
    """One speaker's level over the call: RMS dBFS per `step_s` bin starting at `times`."""

    speaker: str
    times: np.ndarray
    dbfs: np.ndarray
    step_s: float


def loudness_traces(audio: Path, config: Config, max_points: int = MAX_PLOT_POINTS) -> list[LoudnessTrace]:
    """Each channel's level over time, measured as the pipeline does (RMS dBFS at the pipeline rate)."""
    info = probe(audio, config.audio)
    rate = config.audio.rate
    step = max(MIN_STEP_S, info.duration / max_points)
    bin_samples = max(1, round(step * rate))
    powers: list[np.ndarray] = []
    pending = np.zeros((0, info.channels), dtype=np.float64)
    for block in read_blocks(info, rate):
        data = np.concatenate((pending, block.astype(np.float64)))
        n = len(data) // bin_samples
        if n:
            powers.append(np.mean(np.square(data[: n * bin_samples].reshape(n, bin_samples, -1)), axis=1))
        pending = data[n * bin_samples :]
    if len(pending):
        powers.append(np.mean(np.square(pending), axis=0, keepdims=True))
    power = np.concatenate(powers) if powers else np.zeros((0, info.channels))
    dbfs = 10.0 * np.log10(np.maximum(power, 1e-12) / _FULL_SCALE_POWER)
    times = np.arange(len(power)) * (bin_samples / rate)
    return [
        LoudnessTrace(speaker=role, times=times, dbfs=dbfs[:, i], step_s=bin_samples / rate)
        for i, role in enumerate(info.roles)
    ]


def speech_segments(events: Iterable[Event], end_t: float) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of each speaker's speech segments, from speech_start / speech_end events."""
    open_at: dict[str, float] = {}
    segments: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if isinstance(event, SpeechStart):
            open_at[event.speaker] = event.t
        elif isinstance(event, SpeechEnd) and event.speaker in open_at:
            start = open_at.pop(event.speaker)
            segments.setdefault(event.speaker, []).append((start, event.t))
    for speaker, start in open_at.items():
        segments.setdefault(speaker, []).append((start, end_t))
    return segments


def nonspeech_spans(events: Iterable[Event]) -> dict[str, list[tuple[float, float, str]]]:
    """(start, end, kind) of the hold music, tones and noise the gate found, per speaker."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for event in events:
        if isinstance(event, NonSpeech):
            spans.setdefault(event.speaker, []).append((event.t, event.t + event.duration, event.kind))
    return spans


def without(
    spans: Iterable[tuple[float, float]], holes: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """`spans` with the parts inside `holes` cut out (the VAD's "speech" that was music or a tone)."""
    result = []
    for start, end in spans:
        pieces = [(start, end)]
        for hole_start, hole_end in holes:
            pieces = [
                piece
                for s, e in pieces
                for piece in ((s, min(e, hole_start)), (max(s, hole_end), e))
                if piece[1] - piece[0] > 0.05
            ]
        result += pieces
    return result


def shouting_spans(
    events: Iterable[Event], traces: Sequence[LoudnessTrace], config: Config
) -> dict[str, list[tuple[float, float]]]:
    """Each shout from its event's start for as long as the level stays over the shouting threshold.

    The event only says when shouting was confirmed (after `min_shout_s`); the curve says how long
    it lasted.
    """
    by_speaker = {trace.speaker: trace for trace in traces}
    spans: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if not isinstance(event, Shouting):
            continue
        start, end = event.t, event.t + event.duration
        trace = by_speaker.get(event.speaker)
        if trace is not None and len(trace.times):
            baseline = event.baseline_db
            threshold = (
                baseline + config.loudness.margin_db if baseline is not None else config.loudness.ceiling_dbfs
            )
            i = int(np.searchsorted(trace.times, end))
            quiet = 0.0
            while i < len(trace.times) and quiet < SHOUT_GAP_S:
                if trace.dbfs[i] >= threshold:
                    end, quiet = trace.times[i] + trace.step_s, 0.0
                else:
                    quiet += trace.step_s
                i += 1
        spans.setdefault(event.speaker, []).append((start, float(end)))
    return spans


def ladder_steps(events: Iterable[Event], end_t: float) -> tuple[list[float], list[int]]:
    """The ladder level over time as a step function: times and level ranks."""
    times, ranks = [0.0], [0]
    for event in events:
        if isinstance(event, LevelChange):
            times.append(event.t)
            ranks.append(level_rank(event.level))
    times.append(max(end_t, times[-1]))
    ranks.append(ranks[-1])
    return times, ranks


# ---------------------------------------------------------------------------------------------- the plot


def timeline_svg(
    events: Sequence[Event],
    traces: Sequence[LoudnessTrace],
    config: Config,
    texts: Mapping[str, str],
    end_t: float,
    salt: str = "",
) -> str:
    """The call's figure as an inline <svg> element (fonts drawn as paths: nothing to fetch)."""
    import matplotlib
    from matplotlib.figure import Figure

    segments = speech_segments(events, end_t)
    nonspeech = nonspeech_spans(events)
    shouts = shouting_spans(events, traces, config)
    prompts = [e for e in events if isinstance(e, Prompt)]
    abuses = [e for e in events if isinstance(e, Abuse)]
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": salt or "callguard"}):
        # Figure without pyplot: no global figure registry, safe in worker processes.
        fig = Figure(figsize=(11, 1.9 * len(traces) + 2.3), layout="constrained")
        axes = fig.subplots(len(traces) + 1, 1, sharex=True, height_ratios=[*([1.0] * len(traces)), 1.15])
        for ax, trace in zip(axes, traces, strict=False):
            colour = _SPEAKER_COLOURS.get(trace.speaker, "#444")
            ax.plot(trace.times, trace.dbfs, color=colour, linewidth=0.7, label=texts["loudness"])
            for start, end in shouts.get(trace.speaker, []):
                ax.axvspan(start, end, color="#d62728", alpha=0.25, linewidth=0)
            others = nonspeech.get(trace.speaker, [])
            speech = without(segments.get(trace.speaker, []), [(s, e) for s, e, _ in others])
            ax.broken_barh([(s, e - s) for s, e in speech], (-88, 5), facecolors=_SPEECH_COLOUR)
            for kind, colour in _NONSPEECH_COLOURS.items():
                spans = [(s, max(e - s, 0.01)) for s, e, k in others if k == kind]
                if spans:
                    ax.broken_barh(spans, (-88, 5), facecolors=colour, hatch="///", edgecolor="white")
            ax.set_ylim(-90, 0)
            ax.set_ylabel(f"{texts[trace.speaker]}\n{texts['loudness']}")
            ax.grid(axis="y", alpha=0.3)
            for abuse in (a for a in abuses if a.speaker == trace.speaker):
                ax.plot(
                    abuse.t,
                    -5,
                    marker="v",
                    markersize=8,
                    color=_CATEGORY_COLOURS.get(abuse.category, "k"),
                )
        kinds = {kind for spans in nonspeech.values() for _, _, kind in spans}
        _legend(axes[0], texts, bool(shouts), bool(abuses), kinds)
        ladder = axes[-1]
        times, ranks = ladder_steps(events, end_t)
        ladder.step(times, ranks, where="post", color="#333", linewidth=1.5)
        ladder.set_yticks(range(len(LEVELS)), [texts[level] for level in LEVELS])
        ladder.set_ylim(-0.5, len(LEVELS) + 0.2)
        ladder.set_ylabel(texts["ladder"])
        ladder.grid(axis="y", alpha=0.3)
        for number, prompt in enumerate(prompts, 1):
            alert = prompt.alert
            y = len(LEVELS) - 0.3 if alert else level_rank(prompt.level)
            ladder.plot(
                prompt.t,
                y,
                marker="*" if alert else "o",
                markersize=11 if alert else 6,
                color="#b00020" if alert else "#1f5fa8",
            )
            ladder.annotate(
                str(number),
                (prompt.t, y),
                xytext=(3, 4),
                textcoords="offset points",
                fontsize=8,
                annotation_clip=False,  # a prompt at the call's very end keeps its number
            )
        # a margin on the right: the last prompt's marker and number sit inside the frame
        ladder.set_xlim(0, max(end_t, 1.0) * 1.025)
        ladder.set_xlabel(texts["time"])
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # the same call, the same page
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def _legend(ax: Any, texts: Mapping[str, str], shouting: bool, abuse: bool, kinds: set[str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=_SPEECH_COLOUR, label=texts["speech"])]
    handles += [
        Patch(facecolor=colour, hatch="///", edgecolor="white", label=texts[kind])
        for kind, colour in _NONSPEECH_COLOURS.items()
        if kind in kinds
    ]
    if shouting:
        handles.append(Patch(color="#d62728", alpha=0.25, label=texts["shouting"]))
    if abuse:
        handles += [
            Line2D([], [], marker="v", linestyle="", color=colour, label=texts[category])
            for category, colour in _CATEGORY_COLOURS.items()
        ]
    figure = ax.figure
    figure.legend(handles=handles, loc="outside upper right", fontsize=8, ncols=len(handles), frameon=False)


# ---------------------------------------------------------------------------------------------- the page


class WordMask:
    """Masks flagged words wherever customer speech is quoted (transcript, detections, reasons)."""

    def __init__(self, words: Iterable[str], enabled: bool) -> None:
        forms = sorted({w.lower() for w in words if w}, key=len, reverse=True)
        self.enabled = enabled and bool(forms)
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(map(re.escape, forms)) + r")(?!\w)", re.IGNORECASE)
            if self.enabled
            else None
        )

    @staticmethod
    def hide(word: str) -> str:
        return word[:1] + "*" * max(len(word) - 1, 1)

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.hide(m.group(0)), text)


def _clock(t: float) -> str:
    minutes, seconds = divmod(max(t, 0.0), 60)
    return f"{int(minutes):02d}:{seconds:04.1f}"


def _normal(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word.lower())


def _flagged_words(abuses: Sequence[Abuse]) -> set[str]:
    words: set[str] = set()
    for abuse in abuses:
        for phrase in abuse.words:
            words.update(_normal(w) for w in phrase.split())
    return words - {""}


def transcript_html(events: Sequence[Event], texts: Mapping[str, str], mask: WordMask) -> str:
    """Final utterances in time order, flagged words in <mark class="flag CATEGORY">."""
    abuses = [e for e in events if isinstance(e, Abuse)]
    lines = []
    finals = sorted((e for e in events if isinstance(e, Transcript) and e.final), key=lambda e: e.t)
    for utterance in finals:
        words = utterance.words or tuple(Word(w, utterance.t, utterance.t) for w in utterance.text.split())
        if not words:
            continue
        start, end = words[0].start, words[-1].end
        # An abuse belongs to this utterance if it was found in its words (same speaker, same span).
        categories: dict[str, str] = {}
        for abuse in abuses:
            if abuse.speaker == utterance.speaker and start - 0.5 <= abuse.t <= end + 0.5:
                for phrase in abuse.words:
                    for w in phrase.split():
                        categories.setdefault(_normal(w), abuse.category)
        rendered = []
        for word in words:
            surface = word.word
            category = categories.get(_normal(surface))
            if category is None:
                rendered.append(html.escape(surface))
            else:
                shown = mask.hide(surface) if mask.enabled else surface
                rendered.append(
                    f'<mark class="flag {category}" title="{html.escape(texts[category])}">'
                    f"{html.escape(shown)}</mark>"
                )
        speaker = utterance.speaker
        lines.append(
            f'<p class="utt {speaker}"><span class="time">{_clock(utterance.t)}</span>'
            f'<span class="who">{html.escape(texts.get(speaker, speaker))}</span>{" ".join(rendered)}</p>'
        )
    return "\n".join(lines) if lines else f'<p class="note">{texts["no_transcript"]}</p>'


def _prompts_html(prompts: Sequence[Prompt], texts: Mapping[str, str], mask: WordMask) -> str:
    if not prompts:
        return f'<p class="note">{texts["no_prompts"]}</p>'
    head = "".join(f"<th>{texts[k]}</th>" for k in ("time_col", "level", "prompt", "what", "say", "because"))
    rows = []
    for number, p in enumerate(prompts, 1):
        title = html.escape(p.title)
        if p.alert:
            title = f'<span class="alert">{texts["alert"]}: {title}</span>'
        because = "<br>".join(html.escape(mask.text(b)) for b in p.because)
        level = texts.get(p.level, p.level)
        rows.append(
            f"<tr><td>{number}. {_clock(p.t)}</td><td>{level}</td>"
            f"<td>{title}</td><td>{html.escape(p.instruction)}</td>"
            f"<td>{html.escape(p.text)}</td><td>{because}</td></tr>"
        )
    return f'<table class="prompts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _detections_html(events: Sequence[Event], texts: Mapping[str, str], mask: WordMask) -> str:
    found = [e for e in events if isinstance(e, Abuse | Shouting)]
    if not found:
        return f'<p class="note">{texts["no_detections"]}</p>'
    rows = []
    for e in found:
        if isinstance(e, Abuse):
            what = texts.get(e.category, e.category)
            detail = html.escape(mask.text(" ".join(e.words)))
            severity = str(e.severity)
        else:
            what = texts["shouting"]
            baseline = e.baseline_db
            detail = f"{e.level_db:.1f} dBFS" + (
                f" (baseline {baseline:.1f})" if baseline is not None else ""
            )
            severity = ""
        speaker = texts.get(e.speaker, e.speaker)
        rows.append(
            f"<tr><td>{_clock(e.t)}</td><td>{html.escape(speaker)}</td><td>{what}</td>"
            f"<td>{severity}</td><td>{detail}</td></tr>"
        )
    head = "".join(f"<th>{texts[k]}</th>" for k in ("time_col", "speaker", "category", "severity", "words"))
    return f'<table class="detections"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _words_from(job: CallJob, row: SummaryRow, events: Sequence[Event], texts: Mapping[str, str]) -> str:
    """Where the transcript's words came from; never the recogniser for a call it never heard."""
    heard = any(isinstance(e, Transcript) for e in events)
    if row.failed and not heard:
        return texts["no_words_failed"]
    if job.transcript is not None or job.transcript_url:
        name = job.transcript.name if job.transcript else job.transcript_url.rsplit("/", 1)[-1]
        return f"{texts['sidecar']} ({name})"
    return texts["recogniser"] if heard else texts["no_words"]


def _fact(value: Any, texts: Mapping[str, str]) -> str:
    if isinstance(value, bool):
        return texts["yes"] if value else texts["no"]
    return "" if value is None else str(value)


def _facts_html(
    job: CallJob,
    row: SummaryRow,
    events: Sequence[Event],
    texts: Mapping[str, str],
    call_info: Mapping[str, Any],
) -> str:
    counts = ", ".join(f"{texts.get(k, k)} {v}" for k, v in row.counts.items() if v) or "0"
    lines: list[tuple[str, str]] = [
        (texts["call"], row.call),
        (texts["recording"], job.location),
        (texts["duration"], "" if row.duration_s is None else f"{row.duration_s:.1f} s"),
        (texts["language"], row.lang),
        (texts["level_reached"], texts.get(row.level_reached, row.level_reached)),
        (texts["counts"], counts),
        (texts["prompt_count"], f"{row.prompts} ({texts['alerts']}: {row.alerts})"),
        (texts["transcript_source"], _words_from(job, row, events, texts)),
        (texts["processing"], f"{row.processing_s:.2f} s"),
    ]
    lines += [(f"{texts['call_info']}: {key}", _fact(value, texts)) for key, value in call_info.items()]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in lines)
    if row.error:
        body += f'<tr><th>{texts["error"]}</th><td class="error">{html.escape(row.error)}</td></tr>'
    return f'<table class="facts">{body}</table>'


def render_call_report(
    *,
    job: CallJob,
    events: Sequence[Event],
    row: SummaryRow,
    config: Config,
    mask: bool = False,
    traces: Sequence[LoudnessTrace] | None = None,
    trace_error: str = "",
    call_info: Mapping[str, Any] | None = None,
) -> str:
    """The call's report page as one HTML string.

    `traces` and `call_info` are what the worker that replayed the call measured and read; when
    they are not given (a report remade later) the recording and its facts are read here."""
    outcome = fold_call(events)
    lang = outcome.language if outcome.language in TEXTS else "en"
    texts = TEXTS[lang]
    masker = WordMask(_flagged_words([e for e in events if isinstance(e, Abuse)]), mask)
    end_t = outcome.duration or max((e.t for e in events), default=0.0)
    plot = ""
    if not outcome.failed:
        if traces is None and not trace_error:
            try:
                traces = loudness_traces(job.audio, config)
            except CallguardError as exc:  # the recording moved or changed since the replay
                trace_error = str(exc)
        if traces is None:
            plot = f'<p class="error">{html.escape(trace_error)}</p>'
        else:
            svg = timeline_svg(events, traces, config, texts, end_t, salt=job.name)
            plot = (
                f'<figure class="plot" id="timeline"><figcaption>{texts["plot"]}</figcaption>{svg}</figure>'
            )
    notices = [e for e in events if isinstance(e, Notice)]
    notes = "".join(f'<p class="note">{html.escape(n.message)}</p>' for n in notices)
    title = f"{texts['title']}: {row.call}"
    masked_note = f'<p class="note">{texts["masked"]}</p>' if masker.enabled else ""
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{notes}
{plot}
<h2>{texts["prompts"]}</h2>
{_prompts_html(outcome.prompts, texts, masker)}
<h2>{texts["transcript"]}</h2>
{masked_note}
<section id="transcript">{transcript_html(events, texts, masker)}</section>
<h2>{texts["detections"]}</h2>
{_detections_html(events, texts, masker)}
<h2>{texts["facts"]}</h2>
{_facts_html(job, row, events, texts, call_info_document(job.call_info) if call_info is None else call_info)}
</body>
</html>
"""


def write_call_report(
    path: Path,
    *,
    job: CallJob,
    events: Sequence[Event],
    row: SummaryRow,
    config: Config,
    mask: bool = False,
    traces: Sequence[LoudnessTrace] | None = None,
    trace_error: str = "",
    call_info: Mapping[str, Any] | None = None,
) -> Path:
    page = render_call_report(
        job=job,
        events=events,
        row=row,
        config=config,
        mask=mask,
        traces=traces,
        trace_error=trace_error,
        call_info=call_info,
    )
    temporary = path.with_name(path.name + ".part")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(path)
    return path


# ---------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class CallContext:
    """What the index's overview groups a call by; empty when the call does not say."""

    day: str = ""  # YYYY-MM-DD
    agent: str = ""
    queue: str = ""


_DAY_IN_PATH = re.compile(r"(?<!\d)(20\d\d)[-_/]?(0[1-9]|1[0-2])[-_/]?(0[1-9]|[12]\d|3[01])(?!\d)")


def call_context(job: CallJob, call_info: Mapping[str, Any]) -> CallContext:
    """The call's day (a date in its path, as archives are filed, else the recording's modification
    date, UTC), and its agent and queue from its call facts."""
    found = _DAY_IN_PATH.findall(job.location)
    day = "-".join(found[-1]) if found else ""
    if not day and not job.url:
        with suppress(OSError):
            day = datetime.fromtimestamp(job.audio.stat().st_mtime, tz=UTC).date().isoformat()
    agent, queue = call_info.get("agent_name"), call_info.get("queue")
    return CallContext(
        day=day,
        agent=agent.strip() if isinstance(agent, str) else "",
        queue=queue.strip() if isinstance(queue, str) else "",
    )


_LEVEL_COLOURS = {
    "calm": "#9ccc9c",
    "tense": "#f2c14e",
    "abusive": "#e4572e",
    "transfer": "#a23b72",
    "release": "#3b1f2b",
}
_FAILED_COLOUR = "#bbbbbb"
MAX_GROUPS = 15  # agents or queues drawn (the busiest); the table below holds them all


def _count_by(
    outcomes: Sequence[SummaryRow], contexts: Mapping[str, CallContext], key: str
) -> dict[str, list[SummaryRow]]:
    groups: dict[str, list[SummaryRow]] = {}
    for outcome in outcomes:
        value = getattr(contexts.get(outcome.call, CallContext()), key)
        if value:
            groups.setdefault(value, []).append(outcome)
    return groups


def _levels_bars(ax: Any, groups: Mapping[str, Sequence[SummaryRow]], horizontal: bool) -> None:
    """Calls per group, stacked by the level each reached (failed calls grey)."""
    names = list(groups)
    positions = np.arange(len(names))
    base = np.zeros(len(names))

    def reached(outcome: SummaryRow) -> str:
        return "failed" if outcome.failed else outcome.level_reached

    for label, colour in (*_LEVEL_COLOURS.items(), ("failed", _FAILED_COLOUR)):
        heights = np.array([sum(reached(o) == label for o in groups[name]) for name in names], dtype=float)
        if not heights.any():
            continue
        if horizontal:
            ax.barh(positions, heights, left=base, color=colour, label=label)
        else:
            ax.bar(positions, heights, bottom=base, color=colour, label=label)
        base += heights
    _category_axis(ax, names, horizontal)


def _category_axis(ax: Any, names: Sequence[str], horizontal: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    # every label when they fit, else every n-th: never written over each other
    step = max(1, int(np.ceil(len(names) / (20 if horizontal else 12))))
    ticks = list(range(0, len(names), step))
    if horizontal:
        ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("calls")
    else:
        ax.set_xticks(ticks, [names[i] for i in ticks], fontsize=8, rotation=30 if len(names) > 4 else 0,
                      ha="right" if len(names) > 4 else "center")  # fmt: skip
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("calls")
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)


def _detections_bars(ax: Any, days: Mapping[str, Sequence[SummaryRow]]) -> None:
    """Per day, the calls in which each category was detected, and those that raised a threat alert."""
    names = list(days)
    series = [TEXTS["en"][c] for c in CATEGORIES] + ["threat alert"]
    width = 0.8 / len(series)
    colours = [*(_CATEGORY_COLOURS[c] for c in CATEGORIES), "#111111"]
    for i, (label, colour) in enumerate(zip(series, colours, strict=True)):
        if i < len(CATEGORIES):
            heights = [sum(1 for o in days[d] if o.counts.get(CATEGORIES[i], 0)) for d in names]
        else:
            heights = [sum(1 for o in days[d] if o.alerts) for d in names]
        ax.bar(np.arange(len(names)) + (i - (len(series) - 1) / 2) * width, heights, width, color=colour,
               label=label)  # fmt: skip
    _category_axis(ax, names, horizontal=False)


def overview_svg(outcomes: Sequence[SummaryRow], contexts: Mapping[str, CallContext]) -> str:
    """The batch at a glance: levels reached and detections per day, levels per agent and per queue
    (the panels whose facts the calls carry), as one inline <svg>."""
    import matplotlib
    from matplotlib.figure import Figure

    days = dict(sorted(_count_by(outcomes, contexts, "day").items()))
    if not days:  # nothing dated: the whole batch as one group
        days = {"all calls": list(outcomes)}
    people = []
    for title, key in (("per agent", "agent"), ("per queue", "queue")):
        groups = _count_by(outcomes, contexts, key)
        if groups:  # the busiest first
            busiest = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))[:MAX_GROUPS]
            people.append((title, dict(busiest)))
    rows = 1 + (len(people) + 1) // 2
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "callguard-index"}):
        fig = Figure(figsize=(11, 3.6 * rows), layout="constrained")
        grid = fig.add_gridspec(rows, 2)
        levels = fig.add_subplot(grid[0, 0])
        _levels_bars(levels, days, horizontal=False)
        levels.set_title("levels reached per day", fontsize=10)
        levels.legend(fontsize=8, ncols=2)
        detections = fig.add_subplot(grid[0, 1])
        _detections_bars(detections, days)
        detections.set_title("calls with each detection per day", fontsize=10)
        detections.legend(fontsize=8)
        for n, (title, groups) in enumerate(people):
            ax = fig.add_subplot(grid[1 + n // 2, n % 2])
            _levels_bars(ax, groups, horizontal=True)
            ax.set_title(f"levels reached {title}", fontsize=10)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def render_index(
    outcomes: Sequence[SummaryRow],
    links: Mapping[str, str],
    title: str = "callguard batch",
    contexts: Mapping[str, CallContext] | None = None,
) -> str:
    """The batch's overview (plots) above all its calls in one sortable table (click a header to sort)."""
    texts = TEXTS["en"]
    contexts = contexts or {}
    extra = [key for key in ("day", "agent", "queue") if any(getattr(c, key) for c in contexts.values())]
    columns = [
        ("call", "text"),
        *((key, "text") for key in extra),
        ("duration", "number"),
        ("language", "text"),
        ("level_reached", "number"),
        *((category, "number") for category in CATEGORIES),
        ("shouting", "number"),
        ("agent_shouting", "number"),
        ("prompt_count", "number"),
        ("alerts", "number"),
        ("error", "text"),
    ]
    head = "".join(
        f'<th data-type="{kind}">{html.escape(texts.get(name, name))}</th>' for name, kind in columns
    )
    rows = []
    for o in outcomes:
        link = links.get(o.call)
        name = html.escape(o.call)
        cell = f'<a href="{html.escape(link)}">{name}</a>' if link else name
        rank = level_rank(o.level_reached)
        context = contexts.get(o.call, CallContext())
        cells = [
            f"<td>{cell}</td>",
            *(f"<td>{html.escape(getattr(context, key))}</td>" for key in extra),
            f'<td data-value="{o.duration_s or 0:.3f}">'
            + ("" if o.duration_s is None else f"{o.duration_s:.1f} s")
            + "</td>",
            f"<td>{html.escape(o.lang)}</td>",
            f'<td data-value="{rank}">{html.escape(o.level_reached)}</td>',
            *(f"<td>{o.counts.get(k, 0)}</td>" for k in (*CATEGORIES, "shouting", "agent_shouting")),
            f"<td>{o.prompts}</td>",
            f"<td>{o.alerts}</td>",
            f'<td class="error">{html.escape(o.error)}</td>',
        ]
        rows.append(f'<tr class="{"failed" if o.failed else "ok"}">{"".join(cells)}</tr>')
    failed = sum(o.failed for o in outcomes)
    hours = sum(o.duration_s or 0.0 for o in outcomes) / 3600
    overview = (
        '<figure class="plot" id="overview"><figcaption>Levels reached and detections per day, and levels '
        "reached per agent and per queue where the calls' facts name them</figcaption>"
        f"{overview_svg(outcomes, contexts)}</figure>"
        if outcomes
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}
table.sortable th{{cursor:pointer;user-select:none}}th[data-order=asc]::after{{content:" ▲"}}
th[data-order=desc]::after{{content:" ▼"}}#calls td:not(.error){{white-space:nowrap}}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(outcomes)} calls, {hours:.2f} h of audio, {failed} failed.</p>
{overview}
<h2>Calls</h2>
<p class="note">Click a column to sort.</p>
<table class="sortable" id="calls"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{_SORT_SCRIPT}</script>
</body>
</html>
"""


def write_index(
    path: Path,
    outcomes: Sequence[SummaryRow],
    links: Mapping[str, str],
    contexts: Mapping[str, CallContext] | None = None,
) -> Path:
    """The batch's index page; only links to reports that exist."""
    present = {name: link for name, link in links.items() if (path.parent / link).exists()}
    path.write_text(render_index(outcomes, present, contexts=contexts), encoding="utf-8")
    return path
