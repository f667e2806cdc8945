"""Measure how the gate's music features tell hold music from real voices: the harness for the idle line.

Usage: python scripts/music_vs_speech.py [--prompts 150] [--out music_vs_speech.json]

On the Asterisk hold music (every piece whole, and the drum passage of macroform-cold_day,
52-70 s, that the bench's idle call leaks) and on real voices (Asterisk prompts, English and
French, 50-600 ms apart, over faint and over loud line noise; digits read at a steady pace;
one word repeated every second), it prints the percentiles of two window features:

- shape flux: the mean over 1 s of the gate's shape flux (band-level change less the overall
  level change, on loud hops not following a quiet one), the feature behind music_shape_flux;
- rhythm: the best normalised autocorrelation of the onset envelope over 6 s, at lags of
  0.18-1.2 s, measured only (the gate does not use it: digits read at a steady pace reach it).

and, per hold-music piece, the share of its VAD-speech frames the gate blocks. Every figure
README quotes on the music passage comes from here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from callguard.audio.framing import Framer
from callguard.core.config import Config, GateConfig
from callguard.stages.gate import NonSpeechGate, SpectralAnalyser
from callguard.stages.vad import VoiceActivityDetector

SOUNDS = Path("/usr/share/asterisk/sounds")
MOH = Path("/usr/share/asterisk/moh")
RATE, FRAME_MS = 8000, 30
HOP = RATE * FRAME_MS // 1000
SHAPE_HOPS = 33  # 1 s
RHYTHM_HOPS = 200  # 6 s
RHYTHM_LAGS = range(6, 41)  # 0.18-1.2 s
RHYTHM_STEP = 10  # hops between two rhythm measurements
PASSAGE_S = (52.0, 70.0)  # macroform-cold_day: drum hits and short chords with silences between them


def load(path: Path, dbfs: float) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    rms = float(np.sqrt(np.mean(mono**2))) + 1e-12
    return mono * (10 ** (dbfs / 20) / rms) * 32768


def noise(samples: int, dbfs: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 32768 * 10 ** (dbfs / 20), samples)


def pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(audio, -32768, 32767).astype(np.int16)


def features(audio: np.ndarray) -> dict[str, np.ndarray]:
    """Window means of shape flux and rhythm scores over one speaker's audio."""
    gate = GateConfig()
    analyser = SpectralAnalyser(gate, RATE, FRAME_MS)
    pcm = pcm16(audio)
    bands, shape, counted = [], [], []
    for i in range(len(pcm) // HOP):
        f = analyser.analyse(pcm[i * HOP : (i + 1) * HOP].tobytes())
        bands.append(f.band_db.copy())  # a view the analyser overwrites
        shape.append(f.shape_flux_db)
        counted.append(f.level_db >= gate.quiet_dbfs and not f.after_quiet)
    values = np.array(shape)[np.array(counted)]
    sums = np.cumsum(np.concatenate(([0.0], values)))
    shape_means = (sums[SHAPE_HOPS:] - sums[:-SHAPE_HOPS]) / SHAPE_HOPS
    levels = np.maximum(np.array(bands), -70.0)  # quiet hops at -120 dB would make every onset huge
    onsets = np.minimum(np.maximum(np.diff(levels, axis=0, prepend=levels[:1]), 0.0).mean(axis=1), 20.0)
    rhythm = []
    for end in range(RHYTHM_HOPS, len(onsets), RHYTHM_STEP):
        w = onsets[end - RHYTHM_HOPS : end] - onsets[end - RHYTHM_HOPS : end].mean()
        energy = float(np.dot(w, w)) + 1e-9
        rhythm.append(
            max(
                float(np.dot(w[lag:], w[:-lag])) / energy * RHYTHM_HOPS / (RHYTHM_HOPS - lag)
                for lag in RHYTHM_LAGS
            )
        )
    return {"shape_flux": shape_means, "rhythm": np.array(rhythm)}


def blocked_share(audio: np.ndarray) -> float:
    """Share of the VAD's speech frames the gate blocks."""
    config = Config()
    framer = Framer("customer", RATE, FRAME_MS)
    vad = VoiceActivityDetector(config.vad, RATE, FRAME_MS, "customer")
    gate = NonSpeechGate(config.gate, RATE, FRAME_MS)
    voiced = passed = 0
    for frame in framer.push(pcm16(audio)):
        for decided in vad.process(frame)[0]:
            voiced += decided.speech
            passed += sum(out.speech for out in gate.process(decided)[0])
    return 1.0 - passed / max(voiced, 1)


def voices(lang: str, count: int, seed: int) -> np.ndarray:
    rnd = random.Random(seed)
    files = sorted(SOUNDS.joinpath(lang).glob("*.wav"))
    rnd.shuffle(files)
    parts = []
    for path in files[:count]:
        parts += [load(path, rnd.uniform(-26, -16)), np.zeros(int(rnd.uniform(0.05, 0.6) * RATE))]
    return np.concatenate(parts)


def paced(words: list[Path], period_s: float, seconds: float, seed: int) -> np.ndarray:
    rnd = random.Random(seed)
    out = np.zeros(int(seconds * RATE))
    t = 0.2
    while t + 1.0 < seconds:
        word = load(rnd.choice(words), -20.0)[: int(period_s * RATE * 0.95)]
        start = int(t * RATE)
        out[start : start + len(word)] += word
        t += period_s
    return out + noise(len(out), -55.0, seed)


def speech_cases(prompts: int) -> Iterator[tuple[str, np.ndarray]]:
    for seed, lang in enumerate(("en", "fr")):
        talk = voices(lang, prompts, seed)
        for noise_dbfs in (-60.0, -40.0):
            yield f"speech {lang}, noise {noise_dbfs:g} dBFS", talk + noise(len(talk), noise_dbfs, seed)
        digits = sorted(SOUNDS.joinpath(lang, "digits").glob("[0-9].wav"))
        for period in (0.45, 0.6, 0.8):
            yield f"digits {lang} every {period} s", paced(digits, period, 30.0, seed)
        word = sorted(SOUNDS.joinpath(lang).glob("*.wav"))[40]
        yield f"one word {lang} every 1 s", paced([word], 1.0, 30.0, seed)


def music_cases() -> Iterator[tuple[str, np.ndarray]]:
    for path in sorted(MOH.glob("*.wav")):
        yield path.stem, load(path, -22.0)
    cold_day = load(MOH / "macroform-cold_day.wav", -22.0)
    # 6 s before the passage, so that its first rhythm window is already inside it
    start, end = PASSAGE_S
    yield "cold_day drum passage 52-70 s", cold_day[int((start - 6) * RATE) : int(end * RATE)]


def percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    points = np.percentile(values, [1, 10, 50, 90, 99])
    return {f"p{q}": round(float(v), 2) for q, v in zip((1, 10, 50, 90, 99), points, strict=True)} | {
        "max": round(float(values.max()), 2)
    }


def measure(prompts: int) -> dict[str, Any]:
    results: dict[str, Any] = {"speech": {}, "music": {}}
    for kind, cases in (("music", music_cases()), ("speech", speech_cases(prompts))):
        for name, audio in cases:
            found = features(audio)
            entry = {feature: percentiles(values) for feature, values in found.items()}
            if kind == "music" and "passage" not in name:
                entry["gate_blocked_share"] = round(blocked_share(audio), 3)
            results[kind][name] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=150, help="Asterisk prompts per language")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not MOH.is_dir() or not SOUNDS.joinpath("en").is_dir():
        print("needs asterisk-moh-opsound-wav and asterisk-core-sounds-{en,fr}-wav", file=sys.stderr)
        return 2
    results = measure(args.prompts)
    for kind in ("music", "speech"):
        print(kind)
        for name, entry in results[kind].items():
            shape, rhythm = entry["shape_flux"], entry["rhythm"]
            blocked = (
                f"  gate blocks {entry['gate_blocked_share']:.2f}" if "gate_blocked_share" in entry else ""
            )
            print(
                f"  {name:34s} shape flux p1/p50/p99 {shape.get('p1')}/{shape.get('p50')}/{shape.get('p99')}"
                f"  rhythm p10/p50/p90/max {rhythm.get('p10')}/{rhythm.get('p50')}/{rhythm.get('p90')}/"
                f"{rhythm.get('max')}{blocked}"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
