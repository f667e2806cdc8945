"""Evaluation of whole calls against QA labels, and threshold sweeps.

LABELS.csv has one row per call, with a header:

    call,abusive,onset,category
    calls/0412.wav,1,24.0,insult
    calls/0413.wav,0,,

- `call`: the recording, relative to the labels file's folder (or absolute); a name without
  suffix finds NAME.wav / NAME.flac / ... there.
- `abusive`: 1/0, yes/no, true/false: the call held insults or threats aimed at the agent.
- `onset` (optional): call seconds where the abuse started.
- `category` (optional): profanity, insult and/or threat, several joined by `;`, `|` or `+`.
  A non-abusive call with no category counts as holding none; an abusive one with no
  category is left out of the per-category figures.

callguard predicts a call abusive when its ladder reached `abusive` or worse, or it raised a
threat alert; a category when it detected that category at least once. The delay is from
the labelled onset to the first prompt at the abusive level or worse (or a threat alert);
negative when that prompt came before the onset.

A sweep replays the calls once per value of one setting (`policy.abusive_insults=1:3:1`) and
writes sweep.csv and the trade-off curve sweep.svg, so thresholds are chosen from evidence.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import CATEGORIES, Event
from callguard.core.outcome import fold_call
from callguard.qa.batch import (
    AUDIO_SUFFIXES,
    CallJob,
    ReplayOptions,
    default_jobs,
    events_complete,
    events_path,
    job_for,
    preload_model,
    read_events,
    run_batch,
)
from callguard.qa.executors import CallExecutor, open_executor

_TRUE = {"1", "yes", "true", "y", "oui"}
_FALSE = {"0", "no", "false", "n", "non"}
_SWEEP = re.compile(
    r"^(?P<section>\w+)\.(?P<key>\w+)=(?P<a>[-+0-9.eE]+):(?P<b>[-+0-9.eE]+):(?P<step>[-+0-9.eE]+)$"
)
MAX_SWEEP_POINTS = 200


@dataclass(frozen=True)
class CallLabel:
    name: str  # the call's name in the batch (its recording's stem, made unique)
    audio: Path
    abusive: bool
    onset: float | None = None
    categories: frozenset[str] | None = None  # None: not labelled


@dataclass(frozen=True)
class Prediction:
    """What callguard did on one call, as far as evaluation cares."""

    name: str
    abusive: bool = False
    categories: frozenset[str] = frozenset()
    first_prompt_s: float | None = None  # first prompt at abusive level or worse, or threat alert
    error: str = ""


@dataclass(frozen=True)
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    @classmethod
    def count(cls, pairs: Iterable[tuple[bool, bool]]) -> Scores:
        """From (labelled, predicted) pairs."""
        tp = fp = fn = tn = 0
        for truth, guess in pairs:
            tp += truth and guess
            fp += guess and not truth
            fn += truth and not guess
            tn += not truth and not guess
        return cls(tp, fp, fn, tn)


@dataclass(frozen=True)
class Evaluation:
    labels: list[CallLabel]
    predictions: dict[str, Prediction]
    calls: Scores
    per_category: dict[str, Scores]
    delays: dict[str, float]  # per true-positive call with an onset

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions.values() if p.error]

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays.values()) if self.delays else None

    @property
    def max_delay(self) -> float | None:
        return max(self.delays.values()) if self.delays else None

    def misses(self) -> tuple[list[str], list[str]]:
        """Names of the false positives and false negatives at call level."""
        fps, fns = [], []
        for label in self.labels:
            p = self.predictions[label.name]
            if p.error:
                continue
            if p.abusive and not label.abusive:
                fps.append(label.name)
            elif label.abusive and not p.abusive:
                fns.append(label.name)
        return fps, fns

    def format(self) -> str:
        out = io.StringIO()
        scored = len(self.labels) - len(self.failed)
        out.write(f"{len(self.labels)} labelled calls, {scored} replayed, {len(self.failed)} failed\n")
        for p in self.failed:
            out.write(f"  failed: {p.name}: {p.error}\n")
        header = f"{'':<16}{'labelled':>9}{'predicted':>10}{'TP':>5}{'FP':>5}{'FN':>5}"
        out.write(f"{header}{'precision':>11}{'recall':>8}{'F1':>7}\n")
        rows = [("call (abusive)", self.calls), *self.per_category.items()]
        for name, s in rows:
            out.write(
                f"{name:<16}{s.tp + s.fn:>9}{s.tp + s.fp:>10}{s.tp:>5}{s.fp:>5}{s.fn:>5}"
                f"{_fmt(s.precision):>11}{_fmt(s.recall):>8}{_fmt(s.f1):>7}\n"
            )
        if self.delays:
            out.write(
                f"delay from labelled onset to first abusive-level prompt: median {self.median_delay:.1f} s, "
                f"max {self.max_delay:.1f} s ({len(self.delays)} calls)\n"
            )
        else:
            out.write("delay from labelled onset to first abusive-level prompt: no call to measure\n")
        fps, fns = self.misses()
        if fps:
            out.write(f"false positives: {', '.join(fps)}\n")
        if fns:
            out.write(f"false negatives: {', '.join(fns)}\n")
        return out.getvalue()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------------------------------------- labels


def load_labels(path: Path) -> list[CallLabel]:
    """Read LABELS.csv, naming the row and column of anything wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(path, "", "labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot be read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("call", "abusive") if c not in columns]
    if missing:
        raise ConfigError(
            path, "header", f"needs columns call,abusive[,onset,category]; missing {', '.join(missing)}"
        )
    base = Path(path).resolve().parent
    labels: list[CallLabel] = []
    names: set[str] = set()
    for number, raw in enumerate(reader, start=2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        where = f"line {number}"
        if not row["call"]:
            raise ConfigError(path, f"{where}.call", "is empty: expected a recording")
        abusive = row["abusive"].lower()
        if abusive not in _TRUE | _FALSE:
            raise ConfigError(path, f"{where}.abusive", f"must be 1/0, yes/no or true/false, got {abusive!r}")
        onset = None
        if row.get("onset"):
            try:
                onset = float(row["onset"])
            except ValueError:
                onset = -1.0
            if onset < 0:
                raise ConfigError(path, f"{where}.onset", f"must be seconds >= 0, got {row['onset']!r}")
        categories = None
        if row.get("category"):
            categories = frozenset(c.strip().lower() for c in re.split(r"[;|+,\s]+", row["category"]) if c)
            unknown = categories - set(CATEGORIES)
            if unknown:
                raise ConfigError(
                    path,
                    f"{where}.category",
                    f"unknown {', '.join(sorted(unknown))} (expected {', '.join(CATEGORIES)})",
                )
        elif abusive in _FALSE:
            categories = frozenset()
        audio = _recording(base, row["call"])
        job = job_for(audio, names, sidecars=False)
        labels.append(
            CallLabel(
                name=job.name, audio=audio, abusive=abusive in _TRUE, onset=onset, categories=categories
            )
        )
    if not labels:
        raise ConfigError(path, "", "holds no labelled call")
    return labels


def _recording(base: Path, call: str) -> Path:
    path = Path(call).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists() and not path.suffix:
        for suffix in sorted(AUDIO_SUFFIXES):
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return path


def jobs_for(labels: Sequence[CallLabel], sidecars: bool = True) -> list[CallJob]:
    taken: set[str] = set()
    jobs = [job_for(label.audio, taken, sidecars=sidecars) for label in labels]
    assert [j.name for j in jobs] == [label.name for label in labels]
    return jobs


# ---------------------------------------------------------------------------------------------- scoring


def predict(name: str, events: Iterable[Event]) -> Prediction:
    """The call-level verdict from a call's events."""
    outcome = fold_call(events)
    if outcome.failed:
        return Prediction(name=name, error=outcome.error)
    return Prediction(
        name=name,
        abusive=outcome.abusive,
        categories=outcome.categories,
        first_prompt_s=outcome.first_abusive_prompt_t,
    )


def score(labels: Sequence[CallLabel], predictions: Mapping[str, Prediction]) -> Evaluation:
    """Precision, recall and F1 per call and per category, and the prompt delays; failed calls left out."""
    scored = [(label, predictions[label.name]) for label in labels if not predictions[label.name].error]
    calls = Scores.count((label.abusive, p.abusive) for label, p in scored)
    per_category: dict[str, Scores] = {
        category: Scores.count(
            (category in label.categories, category in p.categories)
            for label, p in scored
            if label.categories is not None
        )
        for category in CATEGORIES
    }
    delays = {
        label.name: round(p.first_prompt_s - label.onset, 3)
        for label, p in scored
        if label.abusive and p.abusive and label.onset is not None and p.first_prompt_s is not None
    }
    return Evaluation(
        labels=list(labels),
        predictions=dict(predictions),
        calls=calls,
        per_category=per_category,
        delays=delays,
    )


def read_predictions(labels: Sequence[CallLabel], out_dir: Path) -> dict[str, Prediction]:
    predictions = {}
    for label in labels:
        path = events_path(out_dir, label.name)
        if events_complete(path):
            predictions[label.name] = predict(label.name, read_events(path))
        else:
            predictions[label.name] = Prediction(name=label.name, error=f"no complete events file at {path}")
    return predictions


def evaluate_replays(
    labels: Sequence[CallLabel],
    options: ReplayOptions,
    out_dir: Path,
    *,
    executor: CallExecutor,
    reuse: bool = False,
    progress: bool = True,
) -> Evaluation:
    """Replay the labelled calls into `out_dir` (or, with `reuse`, read those already there) and score."""
    run_batch(jobs_for(labels), options, out_dir, executor=executor, resume=reuse, progress=progress)
    return score(labels, read_predictions(labels, out_dir))


# ---------------------------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepSpec:
    section: str
    key: str
    values: tuple[int | float, ...]

    @property
    def setting(self) -> str:
        return f"{self.section}.{self.key}"

    def config_at(self, config: Config, value: int | float) -> Config:
        return config.with_overrides(**{self.section: {self.key: value}})


def parse_sweep(text: str, config: Config) -> SweepSpec:
    """`SECTION.KEY=A:B:STEP`, checked against the config: the key exists, and every value is valid."""
    match = _SWEEP.match(text.replace(" ", ""))
    if match is None:
        raise ConfigError(
            "--sweep", "", f"expected SECTION.KEY=A:B:STEP (e.g. policy.abusive_insults=1:3:1), got {text!r}"
        )
    section, key = match["section"], match["key"]
    sections = [f.name for f in fields(config) if f.name != "base_dir"]
    if section not in sections:
        raise ConfigError("--sweep", section, f"unknown section (expected one of {', '.join(sections)})")
    current = getattr(getattr(config, section), key, None)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ConfigError("--sweep", f"{section}.{key}", "is not a numeric setting")
    a, b, step = (float(match[name]) for name in ("a", "b", "step"))
    if step <= 0 or b < a:
        raise ConfigError(
            "--sweep", f"{section}.{key}", f"needs A <= B and STEP > 0, got {a:g}:{b:g}:{step:g}"
        )
    count = int((b - a) / step + 1e-9) + 1
    if count > MAX_SWEEP_POINTS:
        raise ConfigError("--sweep", f"{section}.{key}", f"{count} points: at most {MAX_SWEEP_POINTS}")
    raw = [round(a + i * step, 10) for i in range(count)]
    if isinstance(current, int):
        if any(v != int(v) for v in raw):
            raise ConfigError("--sweep", f"{section}.{key}", f"is a whole number: got the values {raw}")
        values: tuple[int | float, ...] = tuple(int(v) for v in raw)
    else:
        values = tuple(raw)
    spec = SweepSpec(section, key, values)
    for value in values:  # every point validated now, not halfway through the sweep
        spec.config_at(config, value)
    return spec


@dataclass(frozen=True)
class SweepPoint:
    value: int | float
    evaluation: Evaluation


SWEEP_FIELDS = (
    "setting", "value", "tp", "fp", "fn", "tn", "precision", "recall", "f1",
    "median_delay_s", "max_delay_s", "failed",
)  # fmt: skip


def run_sweep(
    labels: Sequence[CallLabel],
    spec: SweepSpec,
    options: ReplayOptions,
    out_dir: Path,
    *,
    executor: CallExecutor,
    reuse: bool = False,
    progress: bool = True,
) -> list[SweepPoint]:
    """Replay every labelled call once per value; each value's events go to sweep/SETTING=VALUE/."""
    points = []
    for value in spec.values:
        config = spec.config_at(options.config, value)
        folder = out_dir / "sweep" / f"{spec.setting}={value}"
        evaluation = evaluate_replays(
            labels,
            replace(options, config=config, report=False),
            folder,
            executor=executor,
            reuse=reuse,
            progress=progress,
        )
        points.append(SweepPoint(value, evaluation))
    write_sweep_csv(out_dir / "sweep.csv", spec, points)
    write_sweep_svg(out_dir / "sweep.svg", spec, points)
    return points


def sweep_rows(spec: SweepSpec, points: Sequence[SweepPoint]) -> list[dict[str, str]]:
    rows = []
    for point in points:
        e, s = point.evaluation, point.evaluation.calls
        rows.append(
            {
                "setting": spec.setting,
                "value": str(point.value),
                "tp": str(s.tp),
                "fp": str(s.fp),
                "fn": str(s.fn),
                "tn": str(s.tn),
                "precision": _csv(s.precision),
                "recall": _csv(s.recall),
                "f1": _csv(s.f1),
                "median_delay_s": _csv(e.median_delay),
                "max_delay_s": _csv(e.max_delay),
                "failed": str(len(e.failed)),
            }
        )
    return rows


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_sweep_csv(path: Path, spec: SweepSpec, points: Sequence[SweepPoint]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SWEEP_FIELDS)
        writer.writeheader()
        writer.writerows(sweep_rows(spec, points))
    return path


def format_sweep(spec: SweepSpec, points: Sequence[SweepPoint]) -> str:
    lines = [
        f"{spec.setting:>28}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>11}{'recall':>8}{'F1':>7}{'delay':>9}"
    ]
    for row in sweep_rows(spec, points):
        delay = f"{float(row['median_delay_s']):.1f} s" if row["median_delay_s"] else "-"
        lines.append(
            f"{row['value']:>28}{row['tp']:>5}{row['fp']:>5}{row['fn']:>5}"
            f"{_fmt(_num(row['precision'])):>11}{_fmt(_num(row['recall'])):>8}{_fmt(_num(row['f1'])):>7}{delay:>9}"
        )
    return "\n".join(lines) + "\n"


def _num(text: str) -> float | None:
    return float(text) if text else None


def _value_axis(ax: Any, values: Sequence[int | float]) -> None:
    """The swept setting's axis in its own type: whole steps for a whole-number setting, the swept
    values themselves when they are few, and never more labels than fit."""
    from matplotlib.ticker import MaxNLocator

    whole = all(isinstance(v, int) for v in values)
    if len(values) <= 10:
        ax.set_xticks(list(values), [f"{v:g}" for v in values])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=whole))
    if whole:
        ax.xaxis.set_minor_locator(MaxNLocator(integer=True))


def _point_labels(
    values: Sequence[int | float], recall: Sequence[float], precision: Sequence[float]
) -> list[tuple[tuple[float, float], str]]:
    """One label per point of the trade-off curve: the values that land on the same point share it
    ("1-3"), and past 10 points only every n-th is named, so that no two labels are drawn over each other."""
    groups: dict[tuple[float, float], list[int | float]] = {}
    for value, r, p in zip(values, recall, precision, strict=True):
        if r == r and p == p:  # NaN: no precision or recall at this value, no point drawn
            groups.setdefault((round(r, 4), round(p, 4)), []).append(value)
    labelled = []
    step = max(1, -(-len(groups) // 10))
    for n, (point, group) in enumerate(groups.items()):
        if n % step == 0:
            text = ", ".join(f"{v:g}" for v in group) if len(group) <= 3 else f"{group[0]:g}…{group[-1]:g}"
            labelled.append((point, text))
    return labelled


def write_sweep_svg(path: Path, spec: SweepSpec, points: Sequence[SweepPoint]) -> Path:
    """Precision, recall, F1 and median delay against the value; and the precision-recall trade-off."""
    import matplotlib
    from matplotlib.figure import Figure

    values = [p.value for p in points]

    def series(get: Any) -> list[float]:
        return [float("nan") if (v := get(p.evaluation)) is None else v for p in points]

    precision = series(lambda e: e.calls.precision)
    recall = series(lambda e: e.calls.recall)
    f1 = series(lambda e: e.calls.f1)
    delay = series(lambda e: e.median_delay)
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": spec.setting}):
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[1.4, 1.0])
        left.plot(values, precision, marker="o", label="precision")
        left.plot(values, recall, marker="s", label="recall")
        left.plot(values, f1, marker="^", label="F1", linewidth=2)
        left.set_ylim(-0.05, 1.05)
        _value_axis(left, values)
        left.set_xlabel(spec.setting)
        left.set_ylabel("call level")
        left.grid(alpha=0.3)
        twin = left.twinx()
        twin.plot(values, delay, color="#777", linestyle="--", marker=".", label="median delay (s)")
        twin.set_ylabel("median delay onset → prompt (s)")
        twin.set_ylim(bottom=0)  # a delay axis that starts at zero reads true
        handles = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        left.legend(handles=handles, fontsize=8, loc="lower left")
        right.plot(recall, precision, marker="o", color="#1f5fa8")
        for (r, p), label in _point_labels(values, recall, precision):
            right.annotate(label, (r, p), xytext=(4, 4), textcoords="offset points", fontsize=8)
        right.set_xlim(-0.05, 1.05)
        right.set_ylim(-0.05, 1.05)
        right.set_xlabel("recall")
        right.set_ylabel("precision")
        right.set_title(f"trade-off as {spec.setting} varies", fontsize=10)
        right.grid(alpha=0.3)
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


# ---------------------------------------------------------------------------------------------- command


def run_evaluation(
    labels_path: Path,
    options: ReplayOptions,
    *,
    out_dir: Path | None = None,
    workers: int | None = None,
    cluster: str = "",
    reuse: bool = False,
    sweep: str = "",
    progress: bool = True,
) -> tuple[Evaluation, list[SweepPoint], SweepSpec | None]:
    """The `callguard evaluate` command: score the replays, then run the sweep if one is asked.

    The replays run on the Dask cluster at `cluster` if one is given (each sweep point a set of
    tasks on it), else on a local pool of `workers` processes."""
    labels = load_labels(labels_path)
    spec = parse_sweep(sweep, options.config) if sweep else None
    if spec is not None and out_dir is None:
        raise ConfigError("--sweep", "", "needs --out DIR, where sweep.svg and sweep.csv are written")
    jobs = jobs_for(labels)
    workers = min(workers or default_jobs(), len(jobs))
    with tempfile.TemporaryDirectory(prefix="callguard-evaluate-") as scratch:
        target = out_dir or Path(scratch)
        preload, timeout = preload_model(jobs, options), options.config.qa.connect_timeout_s
        with open_executor(cluster, workers, preload, timeout) as executor:
            evaluation = evaluate_replays(
                labels, options, target, executor=executor, reuse=reuse, progress=progress
            )
            points = (
                run_sweep(labels, spec, options, target, executor=executor, reuse=reuse, progress=progress)
                if spec is not None
                else []
            )
    return evaluation, points, spec
