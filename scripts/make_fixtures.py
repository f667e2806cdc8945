"""Build the test calls: synthetic (espeak-ng) and real-voice (Asterisk prompts) recordings with ground truth.

Every fixture NAME is written to the output folder as
  NAME.wav               the call (one channel per party, roles listed in the truth's "channels")
  NAME.truth.json        ground truth: utterances (speaker, start, end, gain_db, text, labels, shouting)
                         and non-speech spans (music, tone, noise), measured from the audio actually built
  NAME.transcript.json   the words as vosk would write them, with call-time stamps spread over each utterance
  NAME.call.json         call facts for the policy (customer name, company, ...), for some calls only

Audio is made with espeak-ng and sox only (no hand-written DSP or codecs); noise is seeded (sox -R), so a
build is deterministic. A fixture is rebuilt only when its recipe (or this script) changes: the recipe hash
is stored in the truth file. Several test sessions may build at once: a file lock serialises them.

    python scripts/make_fixtures.py                 # the default set into tests/fixtures/generated/
    python scripts/make_fixtures.py --long          # also the long inputs (5 min noise/music, a 1-hour call)
    python scripts/make_fixtures.py abusive_en      # only the named fixtures (and what they derive from)
    python scripts/make_fixtures.py --list
    python scripts/make_fixtures.py --sample        # refresh the committed sample in tests/fixtures/sample/
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "generated"
SAMPLE_DIR = REPO_ROOT / "tests" / "fixtures" / "sample"
SAMPLE_NAME = "abusive_en_ulaw"
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_TEXTS = "/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
MOH_DIR = Path("/usr/share/asterisk/moh")
APT_PACKAGES = (
    "espeak-ng sox libsox-fmt-all asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav "
    "asterisk-core-sounds-en asterisk-core-sounds-fr asterisk-moh-opsound-wav"
)

# Levels in dBFS. Normal speech peaks at -18 so that a +15 dB shout still peaks below full scale.
ESPEAK_PEAK_DBFS = -18.0
NOISE_FLOOR_DBFS = -70.0
TRIM_BELOW_PEAK_DB = 40.0  # leading/trailing synthesis silence is cut at 40 dB under the clip's peak

NonSpeechKind = Literal["music", "tone", "noise"]


class FixtureError(Exception):
    """A fixture cannot be built: names the fixture or tool and what was expected."""


# ---------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Espeak:
    """An espeak-ng voice setting: speed in words per minute, pitch 0-99, amplitude 0-200."""

    voice: str
    speed: int = 160
    pitch: int = 50
    amplitude: int = 100


@dataclass(frozen=True)
class Line:
    """One utterance: espeak-ng text, or a real Asterisk prompt (its text comes from the package's list)."""

    speaker: str
    text: str = ""
    espeak: Espeak | None = None
    prompt: str = ""  # Asterisk prompt name under sounds/<lang>/, e.g. "tt-weasels"
    at: float | None = None  # start in call seconds; None: the previous line's end plus `gap`
    gap: float = 1.5
    peak_dbfs: float = ESPEAK_PEAK_DBFS
    gain_db: float = 0.0  # on top of the normal level: +15 for a shout
    labels: tuple[str, ...] = ()
    shouting: bool = False


@dataclass(frozen=True)
class Bed:
    """A non-speech layer on one speaker's channel.

    source: "pinknoise" | "brownnoise" | "whitenoise";
            "moh:FILE[+FILE...]@OFFSET" (hold music from /usr/share/asterisk/moh);
            "tone:F1[+F2]:ON/OFF" (a cadenced tone; every burst is one truth span);
            "dtmf:DIGITS:ON/OFF".
    """

    speaker: str
    kind: NonSpeechKind
    source: str
    start: float
    end: float | None  # None: the end of the call
    level_dbfs: float  # RMS level of the layer
    labelled: bool = True  # False for the faint noise floor that every call has


@dataclass(frozen=True)
class CallRecipe:
    name: str
    lang: str
    rate: int
    channels: tuple[str, ...]
    lines: tuple[Line, ...]
    description: str
    beds: tuple[Bed, ...] = ()
    duration: float | None = None  # None: the last line's end plus `tail`
    tail: float = 2.0
    call_info: tuple[tuple[str, Any], ...] = ()
    long: bool = False

    @property
    def depends(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class EncodedCopy:
    """Another rate/encoding of an existing fixture (8 kHz mu-law/A-law telephony)."""

    name: str
    source: str
    rate: int
    encoding: Literal["u-law", "a-law", "signed-integer"]
    description: str
    long: bool = False

    @property
    def depends(self) -> tuple[str, ...]:
        return (self.source,)


@dataclass(frozen=True)
class RepeatedCall:
    """An existing call repeated with silences between copies, cut to `duration`."""

    name: str
    source: str
    duration: float
    gap: float
    description: str
    long: bool = True

    @property
    def depends(self) -> tuple[str, ...]:
        return (self.source,)


Recipe = CallRecipe | EncodedCopy | RepeatedCall

EN_CUSTOMER = Espeak("en-us", speed=125, pitch=42)
EN_CUSTOMER_SHOUT = Espeak("en-us", speed=150, pitch=78, amplitude=200)
EN_AGENT = Espeak("en-us+f3", speed=110, pitch=55)
EN_AGENT_FAST = Espeak("en-us+f3", speed=260, pitch=72, amplitude=180)
FR_CUSTOMER = Espeak("fr-fr", speed=120, pitch=42)
FR_CUSTOMER_SHOUT = Espeak("fr-fr", speed=145, pitch=78, amplitude=200)
FR_AGENT = Espeak("fr-fr+f2", speed=110, pitch=55)
FR_AGENT_FAST = Espeak("fr-fr+f2", speed=250, pitch=72, amplitude=180)
SHOUT_DB = 15.0
# espeak's -s is nominal: measured over the trimmed audio these give about 150-175 words per minute for
# normal speech (agents stay under the policy's 190 wpm), and over 300 for the agent's one fast outburst.

C, A = "customer", "agent"


def _say(speaker: str, at: float | None, text: str, voice: Espeak, *labels: str, **kw: Any) -> Line:
    return Line(speaker=speaker, at=at, text=text, espeak=voice, labels=tuple(labels), **kw)


def _shout(speaker: str, at: float | None, text: str, voice: Espeak, *labels: str) -> Line:
    return _say(speaker, at, text, voice, *labels, gain_db=SHOUT_DB, shouting=True)


def _info(
    name: str, company: str, agent: str, lang: str, transfer: bool = True
) -> tuple[tuple[str, Any], ...]:
    return (
        ("customer_name", name),
        ("company", company),
        ("agent_name", agent),
        ("transfer_available", transfer),
        ("transferred_in", False),
        ("language", lang),
    )


# The English abusive timeline that the policy defaults are tuned on: keep these times.
ABUSIVE_EN = (
    _say(
        C, 1.0, "hello i am calling about my internet connection it has been down for three days", EN_CUSTOMER
    ),
    _shout(C, 8.0, "this damn router is useless this is bullshit", EN_CUSTOMER_SHOUT, "profanity"),
    _say(C, 16.0, "i want a refund now", EN_CUSTOMER),
    _say(C, 24.0, "you are an idiot you stupid moron", EN_CUSTOMER, "insult"),
    _say(C, 50.0, "shut up you idiot you are useless", EN_CUSTOMER, "insult"),
    _say(C, 75.0, "i don't care you are a fucking idiot", EN_CUSTOMER, "insult", "profanity"),
)
ABUSIVE_FR = (
    _say(
        C,
        1.0,
        "bonjour j'appelle au sujet de ma connexion internet elle est coupée depuis trois jours",
        FR_CUSTOMER,
    ),
    _shout(C, 8.0, "ce putain de routeur ne marche pas c'est de la merde", FR_CUSTOMER_SHOUT, "profanity"),
    _say(C, 16.0, "je veux un remboursement maintenant", FR_CUSTOMER),
    _say(C, 24.0, "vous êtes un incapable espèce de connard", FR_CUSTOMER, "insult"),
    _say(C, 50.0, "taisez-vous espèce d'idiot", FR_CUSTOMER, "insult"),
    _say(C, 75.0, "je m'en fous vous êtes un gros con", FR_CUSTOMER, "insult"),
)
AGENT_EN = (
    _say(A, 12.0, "i understand why you are upset", EN_AGENT),
    _say(A, 19.0, "just to make sure i understand you want a refund", EN_AGENT),
    _say(A, 28.0, "mister dunn my name is sam i want to solve this", EN_AGENT),
    _say(A, 32.5, "and i can do so when the language stays appropriate", EN_AGENT),
    _say(
        A,
        40.0,
        "sir please let me finish i am trying to help you",
        EN_AGENT_FAST,
        gain_db=12.0,
        shouting=True,
    ),
    _say(A, 55.0, "i have done all i can my supervisor will now take care of this", EN_AGENT),
    _say(A, 79.0, "i am here to help please call back later i am now releasing this call", EN_AGENT),
)
AGENT_FR = (
    _say(A, 12.5, "je comprends que vous soyez contrarié", FR_AGENT),
    _say(A, 19.0, "si je comprends bien vous voulez un remboursement", FR_AGENT),
    _say(A, 28.0, "monsieur dupont je m'appelle camille je veux régler votre problème", FR_AGENT),
    _say(A, 33.5, "et je peux le faire si le langage reste correct", FR_AGENT),
    _say(
        A,
        40.0,
        "monsieur laissez-moi finir j'essaie de vous aider",
        FR_AGENT_FAST,
        gain_db=12.0,
        shouting=True,
    ),
    _say(A, 55.0, "j'ai fait tout ce que je pouvais mon superviseur va s'occuper de vous", FR_AGENT),
    _say(A, 79.0, "je suis là pour vous aider rappelez plus tard je mets fin à cet appel", FR_AGENT),
)

# The same calls with an agent who answers but never takes the seeds' steps (no limits stated, no
# transfer, no release): the playbook must say so, and the ladder falls back on its assumptions.
AGENT_IGNORES_EN = (
    _say(A, 12.0, "okay let me have a look at your account", EN_AGENT),
    _say(A, 19.0, "can you give me your postcode please", EN_AGENT),
    _say(A, 28.0, "one moment the system is very slow today", EN_AGENT),
    _say(A, 55.0, "i am still looking at the line test results", EN_AGENT),
    _say(A, 79.0, "an engineer could come on thursday morning", EN_AGENT),
)
AGENT_IGNORES_FR = (
    _say(A, 12.5, "d'accord je regarde votre dossier", FR_AGENT),
    _say(A, 19.0, "vous pouvez me donner votre code postal", FR_AGENT),
    _say(A, 28.0, "un instant le système est très lent aujourd'hui", FR_AGENT),
    _say(A, 55.0, "je regarde encore les résultats du test de ligne", FR_AGENT),
    _say(A, 79.0, "un technicien pourrait passer jeudi matin", FR_AGENT),
)


def _prompts(
    speakers_and_names: list[tuple[str, str]], gaps: list[float], first_at: float | None = 1.0
) -> list[Line]:
    """Real-voice lines one after another; levels differ per party as on a real line."""
    lines = []
    for i, (speaker, prompt) in enumerate(speakers_and_names):
        peak = -10.0 if speaker == C else -13.0
        at = first_at if i == 0 else None
        lines.append(Line(speaker=speaker, prompt=prompt, at=at, gap=gaps[i % len(gaps)], peak_dbfs=peak))
    return lines


TYPICAL_GAPS = [1.2, 2.5, 1.8, 3.0, 1.5, 2.2, 2.8, 1.4]
TYPICAL_EN = [
    (C, "something-terribly-wrong"), (A, "sorry-youre-having-problems"),
    (C, "tt-weasels"), (A, "check-number-dial-again"),
    (C, "ss-noservice"), (A, "info-about-last-call"),
    (C, "feature-not-avail-line"), (A, "pm-invalid-option"),
    (C, "tt-monkeysintro"), (A, "pls-hold-while-try"),
    (C, "cannot-complete-as-dialed"), (A, "pbx-invalidpark"),
    (C, "speed-dial-empty"), (A, "transfer"),
    (C, "demo-nomatch"), (A, "please-try-call-later"),
    (C, "all-circuits-busy-now"), (A, "auth-incorrect"),
]  # fmt: skip
TYPICAL_FR = [
    (C, "something-terribly-wrong"), (A, "sorry-youre-having-problems"),
    (C, "tt-weasels"), (A, "check-number-dial-again"),
    (C, "ss-noservice"), (A, "info-about-last-call"),
    (C, "feature-not-avail-line"), (A, "pm-invalid-option"),
    (C, "tt-monkeysintro"), (A, "pls-hold-while-try"),
    (C, "cannot-complete-as-dialed"), (A, "pbx-invalidpark"),
    (C, "speed-dial-empty"), (A, "transfer"),
    (C, "demo-nomatch"), (A, "please-try-call-later"),
    (C, "all-circuits-busy-now"), (A, "demo-thanks"),
]  # fmt: skip
HOLD_MUSIC_START, HOLD_MUSIC_END = 14.0, 44.0


def _recipes() -> dict[str, Recipe]:
    """Every fixture this script knows, by name."""
    espeak_calls = [
        CallRecipe("abusive_en", "en", 16000, (C,), ABUSIVE_EN, duration=85.0,
                   description="customer venting, then insulting the agent after limits (policy timeline)",
                   call_info=_info("Mark Dunn", "Northwind Broadband", "Sam", "en")),
        CallRecipe("abusive_fr", "fr", 16000, (C,), ABUSIVE_FR, duration=85.0,
                   description="client qui s'emporte puis insulte l'agent (même chronologie)",
                   call_info=_info("Marc Dupont", "Réseau Boréal", "Camille", "fr")),
        CallRecipe("abusive_stereo_en", "en", 16000, (C, A), ABUSIVE_EN + AGENT_EN,
                   description="abusive customer left, agent right answering calmly, once loud and fast",
                   call_info=_info("Mark Dunn", "Northwind Broadband", "Sam", "en", transfer=False)),
        CallRecipe("abusive_stereo_fr", "fr", 16000, (C, A), ABUSIVE_FR + AGENT_FR,
                   description="client insultant à gauche, agent à droite, une fois fort et rapide",
                   call_info=_info("Marc Dupont", "Réseau Boréal", "Camille", "fr", transfer=False)),
        CallRecipe("ignored_stereo_en", "en", 16000, (C, A), ABUSIVE_EN + AGENT_IGNORES_EN,
                   description="abusive customer left, agent right who never states limits nor closes",
                   call_info=_info("Mark Dunn", "Northwind Broadband", "Sam", "en", transfer=False)),
        CallRecipe("ignored_stereo_fr", "fr", 16000, (C, A), ABUSIVE_FR + AGENT_IGNORES_FR,
                   description="client insultant, agent qui ne pose jamais de limites ni ne clôt l'appel",
                   call_info=_info("Marc Dupont", "Réseau Boréal", "Camille", "fr", transfer=False)),
        CallRecipe("calm_en", "en", 16000, (C,), (
            _say(C, 1.0, "hello i live in scunthorpe and i am calling about my computer class", EN_CUSTOMER),
            _say(C, 8.0, "could someone assess why my console will not connect", EN_CUSTOMER),
            _say(C, 15.0, "i checked the cables and i restarted everything", EN_CUSTOMER),
            _say(C, 22.0, "thank you very much for your help have a nice day", EN_CUSTOMER),
        ), description="polite complaint with Scunthorpe-type words (class, assess, computer, console)",
            call_info=_info("Alice Brown", "Northwind Broadband", "Sam", "en")),
        CallRecipe("calm_fr", "fr", 16000, (C,), (
            _say(C, 1.0, "bonjour j'ai besoin d'un conseil au sujet de mon contrat", FR_CUSTOMER),
            _say(C, 8.0, "ma console ne se connecte plus depuis hier", FR_CUSTOMER),
            _say(C, 15.0, "j'ai vérifié le connecteur et redémarré l'ordinateur", FR_CUSTOMER),
            _say(C, 22.0, "merci beaucoup pour votre aide bonne journée", FR_CUSTOMER),
        ), description="réclamation polie avec des mots piégeux (conseil, contrat, console, connecteur)",
            call_info=_info("Alice Martin", "Réseau Boréal", "Camille", "fr")),
        CallRecipe("angry_en", "en", 16000, (C,), (
            _say(C, 1.0, "my printer stopped working again this morning", EN_CUSTOMER),
            _shout(C, 7.0, "this damn printer is a piece of shit", EN_CUSTOMER_SHOUT, "profanity"),
            _say(C, 14.0, "i have been waiting two weeks for a technician", EN_CUSTOMER),
            _shout(C, 21.0, "this is bullshit i want it fixed today", EN_CUSTOMER_SHOUT, "profanity"),
        ), description="shouting and venting profanity at a thing, no insult"),
        CallRecipe("angry_fr", "fr", 16000, (C,), (
            _say(C, 1.0, "mon imprimante ne marche plus depuis ce matin", FR_CUSTOMER),
            _shout(C, 7.0, "cette imprimante de merde ne sert à rien", FR_CUSTOMER_SHOUT, "profanity"),
            _say(C, 14.0, "j'attends un technicien depuis deux semaines", FR_CUSTOMER),
            _shout(C, 21.0, "c'est n'importe quoi putain je veux une solution aujourd'hui",
                   FR_CUSTOMER_SHOUT, "profanity"),
        ), description="cris et jurons contre un objet, sans insulte"),
        CallRecipe("threat_en", "en", 16000, (C,), (
            _say(C, 1.0, "hello i have called five times about my bill", EN_CUSTOMER),
            _say(C, 8.0, "nobody ever fixes anything here", EN_CUSTOMER),
            _say(C, 15.0, "i know where you work i will come and hurt you", EN_CUSTOMER, "threat"),
        ), description="calm start, then a threat against the agent",
            call_info=_info("Tom Reed", "Northwind Broadband", "Sam", "en")),
        CallRecipe("threat_fr", "fr", 16000, (C,), (
            _say(C, 1.0, "bonjour j'ai appelé cinq fois pour ma facture", FR_CUSTOMER),
            _say(C, 8.0, "personne ne règle jamais rien chez vous", FR_CUSTOMER),
            _say(C, 15.0, "je sais où vous travaillez je vais vous retrouver", FR_CUSTOMER, "threat"),
        ), description="début calme puis menace contre l'agent",
            call_info=_info("Thomas Roy", "Réseau Boréal", "Camille", "fr")),
    ]  # fmt: skip
    encoded = [
        EncodedCopy("abusive_en_ulaw", "abusive_en", 8000, "u-law", "abusive_en as 8 kHz mu-law telephony"),
        EncodedCopy("abusive_en_alaw", "abusive_en", 8000, "a-law", "abusive_en as 8 kHz A-law telephony"),
        EncodedCopy("abusive_fr_ulaw", "abusive_fr", 8000, "u-law", "abusive_fr as 8 kHz mu-law telephony"),
        EncodedCopy("abusive_fr_alaw", "abusive_fr", 8000, "a-law", "abusive_fr as 8 kHz A-law telephony"),
        EncodedCopy(
            "abusive_stereo_en_ulaw", "abusive_stereo_en", 8000, "u-law", "stereo call, 8 kHz mu-law"
        ),
        EncodedCopy("calm_en_ulaw", "calm_en", 8000, "u-law", "calm_en as 8 kHz mu-law telephony"),
    ]
    hold_lines = [
        Line(C, prompt="something-terribly-wrong", at=1.0, peak_dbfs=-10.0),
        Line(A, prompt="sorry-youre-having-problems", gap=1.5, peak_dbfs=-13.0),
        Line(A, prompt="pls-hold-while-try", gap=0.8, peak_dbfs=-13.0),
        Line(A, prompt="check-number-dial-again", at=HOLD_MUSIC_END + 1.5, peak_dbfs=-13.0),
        *_prompts(TYPICAL_EN[2:10], [1.5, 2.5, 1.8], first_at=None),
    ]
    real_calls = [
        CallRecipe("real_typical_en", "en", 8000, (C, A), tuple(_prompts(TYPICAL_EN, TYPICAL_GAPS)),
                   description="real voice (Asterisk prompts), half speech, customer left, agent right"),
        CallRecipe("real_typical_fr", "fr", 8000, (C, A), tuple(_prompts(TYPICAL_FR[:16], TYPICAL_GAPS)),
                   description="voix réelle (invites Asterisk), moitié parole, client gauche, agent droite"),
        CallRecipe("real_hold_en", "en", 8000, (C, A), tuple(hold_lines),
                   beds=(Bed(C, "music", "moh:manolo_camp-morning_coffee.wav@5", HOLD_MUSIC_START,
                             HOLD_MUSIC_END, -24.0),),
                   description="real voices with 30 s of hold music on the customer's channel"),
        CallRecipe("real_noise_en", "en", 8000, (C, A), tuple(_prompts(TYPICAL_EN[:12], TYPICAL_GAPS)),
                   beds=(Bed(C, "noise", "pinknoise", 0.0, None, -38.0),
                         Bed(A, "noise", "brownnoise", 0.0, None, -44.0)),
                   description="real voices over steady line noise (pink -38 dBFS, brown -44 dBFS)"),
    ]  # fmt: skip
    clips = [
        _tone_clip("clip_ring_us", "tone:440+480:2.0/4.0", 18.0, "North American ring tone, 2 s on 4 s off"),
        _tone_clip("clip_ring_eu", "tone:425:1.5/3.5", 15.0, "European ring tone 425 Hz, 1.5 s on 3.5 s off"),
        _tone_clip("clip_busy_us", "tone:480+620:0.5/0.5", 10.0, "busy tone 480+620 Hz, 0.5 s on/off"),
        _tone_clip("clip_dtmf", "dtmf:0123456789*#0123456789*#:0.15/0.1", 7.0, "DTMF digits, 150 ms each"),
        CallRecipe("clip_music", "en", 8000, (C,), (),
                   beds=(Bed(C, "music", "moh:macroform-robot_dity.wav@20", 0.0, None, -22.0),),
                   duration=20.0, description="hold music excerpt"),
        _noise_clip("clip_noise_pink", "pinknoise", -40.0),
        _noise_clip("clip_noise_brown", "brownnoise", -40.0),
        _noise_clip("clip_noise_white", "whitenoise", -35.0),
        CallRecipe("clip_speech_real_en", "en", 8000, (C,),
                   tuple(Line(C, prompt=p, at=0.5 if i == 0 else None, gap=0.6, peak_dbfs=-10.0)
                         for i, (_, p) in enumerate(TYPICAL_EN[:8])),
                   tail=0.5, description="real English voice, prompts back to back"),
        CallRecipe("clip_speech_real_fr", "fr", 8000, (C,),
                   tuple(Line(C, prompt=p, at=0.5 if i == 0 else None, gap=0.6, peak_dbfs=-10.0)
                         for i, (_, p) in enumerate(TYPICAL_FR[:8])),
                   tail=0.5, description="voix réelle française, invites à la suite"),
        CallRecipe("clip_speech_espeak_en", "en", 8000, (C,), tuple(
            Line(C, text=line.text, espeak=line.espeak, at=0.5 if i == 0 else None, gap=0.6)
            for i, line in enumerate(ABUSIVE_EN[:3] + AGENT_EN[:2])),
                   tail=0.5, description="espeak-ng English speech, back to back"),
        CallRecipe("clip_speech_espeak_fr", "fr", 8000, (C,), tuple(
            Line(C, text=line.text, espeak=line.espeak, at=0.5 if i == 0 else None, gap=0.6)
            for i, line in enumerate(ABUSIVE_FR[:3] + AGENT_FR[:2])),
                   tail=0.5, description="parole espeak-ng en français, à la suite"),
    ]  # fmt: skip
    long_inputs = [
        CallRecipe("long_noise_5min", "en", 8000, (C, A), (), duration=300.0, long=True,
                   beds=(Bed(C, "noise", "pinknoise", 120.0, None, -42.0),
                         Bed(A, "noise", "brownnoise", 120.0, None, -45.0)),
                   description="5 min: 2 min of near silence, then steady line noise on both channels"),
        CallRecipe("long_music_5min", "en", 8000, (C, A), (), duration=300.0, long=True,
                   beds=(Bed(C, "music", "moh:macroform-cold_day.wav+macroform-robot_dity.wav@0", 0.0, None,
                             -24.0),),
                   description="5 min of hold music on the customer's channel, agent silent"),
        RepeatedCall("long_call_1h", "real_typical_en", 3600.0, 15.0,
                     "1 hour: real_typical_en repeated with 15 s silences between copies"),
    ]  # fmt: skip
    recipes: dict[str, Recipe] = {}
    for recipe in [*espeak_calls, *encoded, *real_calls, *clips, *long_inputs]:
        if recipe.name in recipes:
            raise FixtureError(f"fixture name {recipe.name!r} is defined twice")
        recipes[recipe.name] = recipe
    return recipes


def _tone_clip(name: str, source: str, duration: float, description: str) -> CallRecipe:
    return CallRecipe(name, "en", 8000, (C,), (), beds=(Bed(C, "tone", source, 0.5, duration - 0.5, -20.0),),
                      duration=duration, description=description)  # fmt: skip


def _noise_clip(name: str, source: str, level_dbfs: float) -> CallRecipe:
    return CallRecipe(name, "en", 8000, (C,), (), beds=(Bed(C, "noise", source, 0.0, None, level_dbfs),),
                      duration=10.0, description=f"steady {source} at {level_dbfs:g} dBFS")  # fmt: skip


RECIPES = _recipes()
DEFAULT_NAMES = tuple(name for name, recipe in RECIPES.items() if not recipe.long)
LONG_NAMES = tuple(name for name, recipe in RECIPES.items() if recipe.long)

# ---------------------------------------------------------------------------------------------- tools


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise FixtureError(
            f"{args[0]} not found while building {what}: apt-get install {APT_PACKAGES}"
        ) from exc
    if done.returncode != 0:
        raise FixtureError(f"{what}: `{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


def _sox(*args: str | Path, what: str) -> None:
    # -R: repeatable random numbers (noise, dither), so that a build is deterministic; -V1: errors only
    _run(["sox", "-R", "-V1", *map(str, args)], what)


def _synth_input(rate: int) -> list[str]:
    """sox arguments for generated audio (synth) at `rate`, written as one channel of 16-bit PCM.

    The rate goes on the null input: otherwise synth runs at 48 kHz, is resampled, and "Ns" lengths
    count 48 kHz samples.
    """
    return ["-r", str(rate), "-n", "-b", "16", "-c", "1"]


def _tool_versions() -> str:
    versions = []
    for cmd in (["sox", "--version"], ["espeak-ng", "--version"]):
        try:
            versions.append(subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip())
        except FileNotFoundError as exc:
            raise FixtureError(f"{cmd[0]} not found: apt-get install {APT_PACKAGES}") from exc
    return "\n".join(versions)


def _rms_dbfs(path: Path) -> float:
    audio, _ = sf.read(path, dtype="float64", always_2d=True)
    rms = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
    return 20 * math.log10(max(rms, 1e-10))


def _frames(path: Path) -> int:
    return sf.info(str(path)).frames


def _set_rms(src: Path, dst: Path, target_dbfs: float, what: str) -> None:
    _sox(src, dst, "vol", f"{target_dbfs - _rms_dbfs(src):.3f}dB", what=what)


# ---------------------------------------------------------------------------------------------- text


@dataclass(frozen=True)
class AsteriskPrompt:
    path: Path
    text: str


def _asterisk_prompt(lang: str, name: str) -> AsteriskPrompt:
    texts_path = Path(ASTERISK_TEXTS.format(lang=lang))
    path = ASTERISK_SOUNDS / lang / f"{name}.wav"
    if not texts_path.exists() or not path.exists():
        raise FixtureError(
            f"real-voice prompt {lang}/{name}: {path} or {texts_path} is missing: "
            f"apt-get install {APT_PACKAGES}"
        )
    with gzip.open(texts_path, "rt", encoding="utf-8") as texts:
        for raw in texts:
            key, sep, text = raw.partition(":")
            if sep and key.strip() == name:
                return AsteriskPrompt(path, text.strip())
    raise FixtureError(f"prompt {name!r} has no text in {texts_path}")


def vosk_words(text: str) -> list[str]:
    """Text as vosk writes it: lower case, no punctuation; apostrophes and hyphens inside words are kept."""
    text = text.lower().replace("’", "'").replace("…", " ")
    if re.search(r"\d", text):
        raise FixtureError(f"spell out the numbers in {text!r}: vosk writes them as words")
    words = []
    for token in re.sub(r"[^\w'\-]+", " ", text).split():
        token = token.strip("'-")
        if token:
            words.append(token)
    return words


def _spread_words(words: list[str], start: float, end: float, speaker: str) -> list[dict[str, Any]]:
    """Stamp words over [start, end] in proportion to their length, each a little short of its slot."""
    total = sum(len(w) for w in words) or 1
    lo, hi = math.ceil(start * 100) / 100, math.floor(end * 100) / 100
    out, t = [], start
    for word in words:
        slot = (end - start) * len(word) / total
        w_start = min(max(math.ceil(t * 100) / 100, lo), hi)
        w_end = min(max(math.floor((t + 0.85 * slot) * 100) / 100, w_start), hi)
        out.append({"word": word, "start": w_start, "end": w_end, "speaker": speaker})
        t += slot
    return out


# ---------------------------------------------------------------------------------------------- building


@dataclass
class Built:
    """What one recipe produced, before it is written out."""

    truth: dict[str, Any]
    words: list[dict[str, Any]] = field(default_factory=list)
    call_info: dict[str, Any] | None = None


def _render_line(
    line: Line, lang: str, rate: int, work: Path, index: int, what: str
) -> tuple[Path, str, str]:
    """One utterance at `rate`, trimmed of leading/trailing silence. Returns (clip, text, voice label)."""
    clip = work / f"line{index:03d}.wav"
    if line.espeak is not None:
        raw = work / f"line{index:03d}.espeak.wav"
        voice = line.espeak
        _run(["espeak-ng", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch),
              "-a", str(voice.amplitude), "-w", str(raw), line.text], what)  # fmt: skip
        source, text, label = raw, line.text, f"espeak-ng {voice.voice} -s {voice.speed} -p {voice.pitch}"
    elif line.prompt:
        prompt = _asterisk_prompt(lang, line.prompt)
        source, text, label = prompt.path, prompt.text, f"asterisk {lang}/{line.prompt}"
    else:
        raise FixtureError(f"{what}: line {index} has neither espeak text nor an Asterisk prompt")
    threshold = f"{line.peak_dbfs - TRIM_BELOW_PEAK_DB:.1f}d"
    _sox(source, "-b", "16", "-c", "1", clip,
         "gain", "-n", f"{line.peak_dbfs}",
         "silence", "1", "0.01", threshold, "reverse", "silence", "1", "0.01", threshold, "reverse",
         "vol", f"{line.gain_db}dB", "rate", "-v", str(rate), what=what)  # fmt: skip
    return clip, text, label


def _render_bed(bed: Bed, rate: int, start: float, end: float, work: Path, index: int, what: str,
                ) -> tuple[Path, list[tuple[float, float]]]:  # fmt: skip
    """A layer file covering [start, end] (padded from 0), and the truth spans it holds."""
    dur = end - start
    raw, layer = work / f"bed{index:02d}.raw.wav", work / f"bed{index:02d}.wav"
    kind, _, spec = bed.source.partition(":")
    spans = [(start, end)]
    if bed.source in ("pinknoise", "brownnoise", "whitenoise"):
        _sox(*_synth_input(rate), raw, "synth", f"{dur}", bed.source, what=what)
    elif kind == "moh":
        files, _, offset = spec.partition("@")
        paths = [MOH_DIR / f for f in files.split("+")]
        for p in paths:
            if not p.exists():
                raise FixtureError(
                    f"{what}: hold music {p} is missing: apt-get install asterisk-moh-opsound-wav"
                )
        _sox(*paths, "-b", "16", "-c", "1", raw, "trim", offset or "0", f"{dur}", "rate", "-v", str(rate),
             what=what)  # fmt: skip
        if _frames(raw) < round(dur * rate) - 1:
            raise FixtureError(f"{what}: hold music {files} is shorter than {dur} s after {offset} s")
    elif kind in ("tone", "dtmf"):
        spans = _render_bursts(
            kind, spec, rate, start, dur, bed.level_dbfs, raw, work / f"bed{index:02d}", what
        )
    else:
        raise FixtureError(f"{what}: unknown bed source {bed.source!r}")
    if kind in ("tone", "dtmf"):
        leveled = raw  # each burst has its level already: silences between bursts must not count
    else:
        leveled = work / f"bed{index:02d}.level.wav"
        _set_rms(raw, leveled, bed.level_dbfs, what)
    _sox(leveled, layer, "pad", f"{start}", what=what)
    return layer, spans


DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
    "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
    "0": (941, 1336), "#": (941, 1477),
}  # fmt: skip


def _render_bursts(kind: str, spec: str, rate: int, start: float, dur: float, level_dbfs: float, out: Path,
                   stem: Path, what: str) -> list[tuple[float, float]]:  # fmt: skip
    """Tone bursts (a cadence, or DTMF digits) concatenated with silences; one span per burst."""
    symbols, _, cadence = spec.partition(":")
    on, off = (float(x) for x in cadence.split("/"))
    if kind == "tone":
        count = int((dur + off) // (on + off))
        freqs = [tuple(int(f) for f in symbols.split("+"))] * count
    else:
        freqs = [DTMF_FREQS[d] for d in symbols]
        if len(freqs) * (on + off) - off > dur:
            raise FixtureError(f"{what}: {len(freqs)} DTMF digits do not fit in {dur} s")
    pieces, spans = [], []
    for i, pair in enumerate(freqs):
        tone, piece = Path(f"{stem}.tone{i:03d}.wav"), Path(f"{stem}.burst{i:03d}.wav")
        sines = [arg for f in pair for arg in ("sine", str(f))]
        _sox(*_synth_input(rate), tone, "synth", f"{on}", *sines, what=what)
        pad = ["pad", "0", f"{off}"] if i < len(freqs) - 1 else []
        _sox(tone, piece, "vol", f"{level_dbfs - _rms_dbfs(tone):.3f}dB", *pad, what=what)
        pieces.append(piece)
        t0 = start + i * (on + off)
        spans.append((t0, t0 + on))
    _sox(*pieces, out, what=what)
    return spans


def _build_call(recipe: CallRecipe, work: Path) -> Built:
    what = f"fixture {recipe.name}"
    rate = recipe.rate
    placed: list[tuple[Line, float, float, str, str, Path]] = []
    previous_end = 0.0
    for i, line in enumerate(recipe.lines):
        if line.speaker not in recipe.channels:
            raise FixtureError(f"{what}: line {i} speaker {line.speaker!r} is not one of {recipe.channels}")
        clip, text, voice = _render_line(line, recipe.lang, rate, work, i, what)
        start = line.at if line.at is not None else previous_end + line.gap
        # starts land on a sample so that truth times and the audio agree exactly
        start = round(start * rate) / rate
        end = start + _frames(clip) / rate
        placed.append((line, start, end, text, voice, clip))
        previous_end = end
    last_end = max((end for _, _, end, *_ in placed), default=0.0)
    duration = recipe.duration if recipe.duration is not None else last_end + recipe.tail
    n_samples = round(duration * rate)
    duration = n_samples / rate
    if last_end > duration:
        raise FixtureError(
            f"{what}: speech runs to {last_end:.2f} s, past the call's end at {duration:.2f} s"
        )

    layers: dict[str, list[Path]] = {role: [] for role in recipe.channels}
    utterances, words = [], []
    for i, (line, start, end, text, voice, clip) in enumerate(sorted(placed, key=lambda p: p[1])):
        padded = work / f"placed{i:03d}.wav"
        _sox(clip, padded, "pad", f"{start}", what=what)
        layers[line.speaker].append(padded)
        spoken = vosk_words(text)
        utterances.append({
            "speaker": line.speaker, "start": round(start, 3), "end": round(end, 3), "gain_db": line.gain_db,
            "text": " ".join(spoken), "labels": list(line.labels), "shouting": line.shouting,
            "wpm": round(len(spoken) / (end - start) * 60, 1), "voice": voice,
        })  # fmt: skip
        words.extend(_spread_words(spoken, start, end, line.speaker))
    _check_overlaps(utterances, what)

    nonspeech = []
    for i, bed in enumerate(recipe.beds):
        end = duration if bed.end is None else bed.end
        layer, spans = _render_bed(bed, rate, bed.start, end, work, i, what)
        layers[bed.speaker].append(layer)
        if bed.labelled:
            for s, e in spans:
                nonspeech.append({"speaker": bed.speaker, "kind": bed.kind, "start": round(s, 3),
                                  "end": round(e, 3), "level_dbfs": bed.level_dbfs})  # fmt: skip
    _check_beds_clear_of_speech(utterances, nonspeech, what)

    channel_files = []
    for c, role in enumerate(recipe.channels):
        floor_raw, floor = work / f"floor{c}.raw.wav", work / f"floor{c}.wav"
        # a faint line-noise floor instead of digital zeros; a different colour per channel keeps them apart
        colour = "pinknoise" if c % 2 == 0 else "brownnoise"
        _sox(*_synth_input(rate), floor_raw, "synth", f"{n_samples}s", colour, what=what)
        _set_rms(floor_raw, floor, NOISE_FLOOR_DBFS, what)
        channel = work / f"channel{c}.wav"
        if layers[role]:
            inputs = [arg for p in [floor, *layers[role]] for arg in ("-v", "1", str(p))]
            _sox("-m", *inputs, channel, "trim", "0", f"{n_samples}s", what=what)
        else:  # a silent party: the noise floor alone (sox -m wants two inputs)
            shutil.move(floor, channel)
        channel_files.append(channel)
    out = work / "call.wav"
    if len(channel_files) == 1:
        shutil.move(channel_files[0], out)
    else:
        _sox("-M", *channel_files, out, what=what)
    if _frames(out) != n_samples:
        raise FixtureError(f"{what}: built {_frames(out)} samples, expected {n_samples}")

    truth = {
        "call": recipe.name, "lang": recipe.lang, "rate": rate, "channels": list(recipe.channels),
        "duration": duration, "encoding": "PCM_16", "description": recipe.description,
        "utterances": utterances, "nonspeech": sorted(nonspeech, key=lambda s: (s["start"], s["speaker"])),
    }  # fmt: skip
    return Built(truth, words, dict(recipe.call_info) if recipe.call_info else None)


def _check_overlaps(utterances: list[dict[str, Any]], what: str) -> None:
    """No party talks over itself, and the parties take turns (the scripts are written that way)."""
    for a, b in itertools.pairwise(utterances):
        if b["start"] < a["end"]:
            raise FixtureError(
                f"{what}: {b['speaker']} at {b['start']} s ({b['text'][:30]!r}) starts before "
                f"{a['speaker']}'s utterance ends at {a['end']} s: move it later"
            )


def _check_beds_clear_of_speech(
    utterances: list[dict[str, Any]], spans: list[dict[str, Any]], what: str
) -> None:
    for span in spans:
        if span["kind"] == "noise":
            continue  # line noise sits under speech on purpose
        for u in utterances:
            if u["start"] < span["end"] and span["start"] < u["end"]:
                raise FixtureError(
                    f"{what}: utterance at {u['start']} s overlaps {span['kind']} at {span['start']} s"
                )


def _build_encoded(recipe: EncodedCopy, source_dir: Path, work: Path) -> Built:
    what = f"fixture {recipe.name}"
    src = source_dir / f"{recipe.source}.wav"
    bits = "8" if recipe.encoding in ("u-law", "a-law") else "16"
    _sox(src, "-e", recipe.encoding, "-b", bits, work / "call.wav", "rate", "-v", str(recipe.rate), what=what)
    truth = load_truth(recipe.source, source_dir)
    truth.update(call=recipe.name, rate=recipe.rate, duration=_frames(work / "call.wav") / recipe.rate,
                 encoding={"u-law": "ULAW", "a-law": "ALAW"}.get(recipe.encoding, "PCM_16"),
                 description=recipe.description, source=recipe.source)  # fmt: skip
    truth.pop("recipe_hash", None)
    words = _read_json(source_dir / f"{recipe.source}.transcript.json")["words"]
    info_path = source_dir / f"{recipe.source}.call.json"
    return Built(truth, words, _read_json(info_path) if info_path.exists() else None)


def _build_repeated(recipe: RepeatedCall, source_dir: Path, work: Path) -> Built:
    what = f"fixture {recipe.name}"
    src = source_dir / f"{recipe.source}.wav"
    truth = load_truth(recipe.source, source_dir)
    rate = truth["rate"]
    period = truth["duration"] + recipe.gap
    copies = math.ceil(recipe.duration / period)
    n_samples = round(recipe.duration * rate)
    _sox(src, work / "call.wav", "pad", "0", f"{recipe.gap}", "repeat", str(copies - 1),
         "trim", "0", f"{n_samples}s", what=what)  # fmt: skip
    source_words = _read_json(source_dir / f"{recipe.source}.transcript.json")["words"]
    utterances, nonspeech, words = [], [], []
    for k in range(copies):
        shift = k * period

        def moved(item: dict[str, Any], shift: float = shift) -> dict[str, Any]:
            return {**item, "start": round(item["start"] + shift, 3), "end": round(item["end"] + shift, 3)}

        utterances += [moved(u) for u in truth["utterances"] if u["end"] + shift <= recipe.duration]
        nonspeech += [moved(s) for s in truth["nonspeech"] if s["end"] + shift <= recipe.duration]
        words += [
            {**w, "start": round(w["start"] + shift, 2), "end": round(w["end"] + shift, 2)}
            for w in source_words
            if w["end"] + shift <= recipe.duration
        ]
    truth.pop("recipe_hash", None)
    truth.update(call=recipe.name, duration=n_samples / rate, description=recipe.description,
                 source=recipe.source, utterances=utterances, nonspeech=nonspeech)  # fmt: skip
    return Built(truth, words)


# ---------------------------------------------------------------------------------------------- caching


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_truth(name_or_path: str | Path, out_dir: Path = DEFAULT_OUT_DIR) -> dict[str, Any]:
    """The ground truth of a built fixture, by name (in out_dir) or by the path of its .wav or .truth.json."""
    path = Path(name_or_path)
    if path.suffix == ".wav":
        path = path.with_name(path.stem + ".truth.json")
    elif path.suffix != ".json":
        path = out_dir / f"{name_or_path}.truth.json"
    if not path.exists():
        raise FixtureError(f"no ground truth at {path}: build it with python scripts/make_fixtures.py")
    return _read_json(path)


def load_transcript(wav: Path) -> list[dict[str, Any]]:
    """The transcript sidecar's words for a fixture's .wav."""
    return _read_json(wav.with_name(wav.stem + ".transcript.json"))["words"]


def _recipe_hash(name: str, tools: str, cache: dict[str, str]) -> str:
    """Hash of the recipe, the recipes it derives from, this script and the tools' versions."""
    if name not in cache:
        recipe = RECIPES[name]
        digest = hashlib.sha256()
        digest.update(type(recipe).__name__.encode())
        digest.update(json.dumps(asdict(recipe), sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(Path(__file__).read_bytes())
        digest.update(tools.encode())
        for dep in recipe.depends:
            digest.update(_recipe_hash(dep, tools, cache).encode())
        cache[name] = digest.hexdigest()[:16]
    return cache[name]


def _outputs(name: str, out_dir: Path) -> list[Path]:
    return [out_dir / f"{name}.wav", out_dir / f"{name}.truth.json", out_dir / f"{name}.transcript.json"]


def _is_current(name: str, out_dir: Path, recipe_hash: str) -> bool:
    if not all(p.exists() for p in _outputs(name, out_dir)):
        return False
    try:
        return load_truth(name, out_dir).get("recipe_hash") == recipe_hash
    except (OSError, ValueError):
        return False


def _build_one(name: str, out_dir: Path, recipe_hash: str) -> Path:
    recipe = RECIPES[name]
    with tempfile.TemporaryDirectory(prefix=f".build-{name}-", dir=out_dir) as tmp:
        work = Path(tmp)
        if isinstance(recipe, CallRecipe):
            built = _build_call(recipe, work)
        elif isinstance(recipe, EncodedCopy):
            built = _build_encoded(recipe, out_dir, work)
        else:
            built = _build_repeated(recipe, out_dir, work)
        built.truth["recipe_hash"] = recipe_hash
        built.truth["generator"] = "scripts/make_fixtures.py"
        info_path = out_dir / f"{name}.call.json"
        if built.call_info is not None:
            _write_json(info_path, built.call_info)
        elif info_path.exists():
            info_path.unlink()
        os.replace(work / "call.wav", out_dir / f"{name}.wav")
        _write_json(out_dir / f"{name}.transcript.json", {"words": built.words})
        # the truth file goes last: its hash marks the fixture complete
        _write_json(out_dir / f"{name}.truth.json", built.truth)
    return out_dir / f"{name}.wav"


@contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """Serialise builds into one folder across processes (parallel test sessions share it)."""
    with (out_dir / ".build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _with_dependencies(names: list[str]) -> list[str]:
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name not in RECIPES:
            raise FixtureError(f"unknown fixture {name!r}; known: {', '.join(RECIPES)}")
        for dep in RECIPES[name].depends:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def build(
    names: list[str] | None = None, out_dir: Path = DEFAULT_OUT_DIR, long: bool = False
) -> dict[str, Path]:
    """Build the named fixtures (default: every fixture that is not long; `long` adds the long ones).

    Fixtures whose outputs exist with the same recipe hash are kept. Returns {name: path of NAME.wav}
    for the names asked for.
    """
    wanted = list(names) if names else [*DEFAULT_NAMES, *(LONG_NAMES if long else ())]
    order = _with_dependencies(wanted)
    out_dir.mkdir(parents=True, exist_ok=True)
    tools = _tool_versions()
    hashes: dict[str, str] = {}
    with _build_lock(out_dir):
        stale = [n for n in order if not _is_current(n, out_dir, _recipe_hash(n, tools, hashes))]
        # a derived fixture waits for its source; the rest build in parallel (the tools are subprocesses)
        waves: list[list[str]] = []
        done: set[str] = set(order) - set(stale)
        while stale:
            wave = [n for n in stale if all(d in done for d in RECIPES[n].depends)]
            waves.append(wave)
            done.update(wave)
            stale = [n for n in stale if n not in wave]
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            for wave in waves:
                list(pool.map(lambda n: _build_one(n, out_dir, hashes[n]), wave))
    return {name: out_dir / f"{name}.wav" for name in wanted}


def write_sample(out_dir: Path = DEFAULT_OUT_DIR, sample_dir: Path = SAMPLE_DIR) -> list[Path]:
    """Refresh the committed sample call (8 kHz mu-law English abusive call and its sidecars)."""
    build([SAMPLE_NAME], out_dir)
    sample_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for suffix in (".wav", ".truth.json", ".transcript.json", ".call.json"):
        src = out_dir / f"{SAMPLE_NAME}{suffix}"
        shutil.copyfile(src, sample_dir / src.name)
        copied.append(sample_dir / src.name)
    return copied


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build callguard's test calls with ground truth.")
    parser.add_argument("names", nargs="*", help="fixtures to build (default: all that are not long)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder")
    parser.add_argument("--long", action="store_true", help="also build the long inputs (5 min, 1 hour)")
    parser.add_argument("--list", action="store_true", help="list the fixtures and exit")
    parser.add_argument("--sample", action="store_true", help=f"refresh {SAMPLE_DIR.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    if args.list:
        for name, recipe in RECIPES.items():
            print(f"{name:24} {'long ' if recipe.long else '     '}{recipe.description}")
        return 0
    try:
        if args.sample:
            for path in write_sample(args.out):
                print(path)
            return 0
        for name, path in build(args.names or None, args.out, long=args.long).items():
            print(f"{name:24} {path}")
    except FixtureError as exc:
        print(f"make_fixtures: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
