"""Unit tests of the text detector, its lexicon loader and the streaming stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from callguard.core.config import DEFAULT_CONFIG_DIR, Config
from callguard.core.errors import ConfigError
from callguard.core.events import LanguageDecided, SpeechEnd, Transcript, Word
from callguard.detector import (
    AbuseStage,
    TextDetector,
    detect_lines,
    evaluate_corpus,
    load_detector,
    load_lexicon,
    normalise_word,
    tokenise,
)
from callguard.testing import run_events


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector(
        {lang: load_lexicon(DEFAULT_CONFIG_DIR / f"lexicon_{lang}.toml", lang) for lang in ("en", "fr")}
    )


def categories(detector: TextDetector, text: str, lang: str | None) -> tuple[str, ...]:
    return detector.analyse(text, lang).categories


# ---------------------------------------------------------------- normalisation


def test_tokenise_splits_elisions_and_strips_accents() -> None:
    surfaces, tokens = tokenise("T'es un Enculé, hein ?")
    assert surfaces == ["t", "es", "un", "enculé", "hein"]
    assert tokens == ["t", "es", "un", "encule", "hein"]


def test_normalise_word_handles_ligatures() -> None:
    assert normalise_word("Œuvre") == "oeuvre"
    assert normalise_word("DÉPUTÉS") == "deputes"


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize("word", ["fuck", "fucking", "fucked", "fucker", "fuckin", "FUCKING"])
def test_english_inflections(detector: TextDetector, word: str) -> None:
    assert "profanity" in categories(detector, f"the {word} printer", "en")


@pytest.mark.parametrize(
    "word",
    ["connard", "connarde", "connards", "connasse", "enculé", "enculée", "enculés", "ENCULÉ", "encule"],
)
def test_french_inflections_and_accents(detector: TextDetector, word: str) -> None:
    assert categories(detector, f"espèce de {word}", "fr") == ("insult",)


@pytest.mark.parametrize(
    "word",
    [
        "assess",
        "class",
        "cocktail",
        "Scunthorpe",
        "Sussex",
        "analyst",
        "shitake",
        "dispute",
        "computer",
        "cockburn",
        "hancock",
        "shell",
        "hello",
        "damage",
        "crapaud",
    ],
)
def test_no_scunthorpe_english(detector: TextDetector, word: str) -> None:
    assert categories(detector, f"it is about the {word} on my account", "en") == ()
    assert categories(detector, f"it is about the {word} on my account", None) == ()


@pytest.mark.parametrize(
    "word",
    [
        "députés",
        "conseil",
        "contrat",
        "concombre",
        "console",
        "connecteur",
        "salopette",
        "fichier",
        "technique",
        "calculer",
        "dispute",
        "connaissance",
    ],
)
def test_no_scunthorpe_french(detector: TextDetector, word: str) -> None:
    assert categories(detector, f"c'est au sujet du {word} de mon compte", "fr") == ()
    assert categories(detector, f"c'est au sujet du {word} de mon compte", None) == ()


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("my name is dick johnson", "en"),
        ("could i speak to dick from billing", "en"),
        ("the moby dick ebook is missing chapters", "en"),
        ("la bite d'amarrage du ponton est cassée", "fr"),
        ("j'habite dans un cul-de-sac", "fr"),
    ],
)
def test_names_and_fixed_phrases_are_clean(detector: TextDetector, text: str, lang: str) -> None:
    assert categories(detector, text, lang) == ()


def test_a_name_does_not_hide_the_same_word_used_as_insult(detector: TextDetector) -> None:
    assert categories(detector, "you're a dick", "en") == ("insult",)


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("you idiot", "en", ("insult",)),
        ("are you stupid", "en", ("insult",)),
        ("you're a complete and utter moron", "en", ("insult",)),
        ("what kind of idiot are you", "en", ("insult",)),
        ("your colleague is an idiot", "en", ("insult",)),
        ("the idiot driver reversed into my gate", "en", ()),
        ("this stupid form", "en", ()),
        ("you must think i'm stupid", "en", ()),
        ("vous êtes un incapable", "fr", ("insult",)),
        ("t'es vraiment con", "fr", ("insult",)),
        ("espèce de connard", "fr", ("insult",)),
        ("bande d'incapables", "fr", ("insult",)),
        ("ce crétin de chauffeur a reculé", "fr", ()),
        ("vous pensez que je suis stupide", "fr", ()),
    ],
)
def test_directed_insults(detector: TextDetector, text: str, lang: str, expected: tuple[str, ...]) -> None:
    assert categories(detector, text, lang) == expected


def test_vulgar_word_not_aimed_at_anyone_is_profanity(detector: TextDetector) -> None:
    detection = detector.analyse("ce con de livreur a laissé le colis dehors", "fr")
    assert detection.categories == ("profanity",)
    assert detection.matches[0].directed is False


def test_fixed_abusive_phrase_counts_once(detector: TextDetector) -> None:
    detection = detector.analyse("fuck you", "en")
    assert detection.categories == ("insult",)
    assert len(detection.matches) == 1
    assert detection.matches[0].directed is True


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("I could kill for a coffee", "en"),
        ("je tuerais pour un café", "fr"),
        ("that was a killer deal", "en"),
        ("the game was a massacre", "en"),
        ("le match était un massacre", "fr"),
        ("would it kill you to send an email", "en"),
        ("i'll shoot you an email", "en"),
        ("cette attente me tue", "fr"),
        ("je vais vous retrouver la référence", "fr"),
        ("the last agent called me an idiot", "en"),
        ("il a dit que le technicien était un incapable", "fr"),
        ("i'm going to take you to court", "en"),
        ("je vais porter plainte", "fr"),
        ("this heat is killing me can you hurry up", "en"),  # a gap never skips "me"
        ("sorry i called you an idiot earlier", "en"),  # an apology takes the words back
        ("my neighbour told me he'd set fire to my fence", "en"),
        ("shut up that's brilliant you've fixed it", "en"),  # amazement
        ("the nurse said it's just a finger prick test", "en"),
        ("is a breeding bitch covered on this policy", "en"),
        ("the address is twatt on orkney", "en"),
    ],
)
def test_idioms_reported_speech_and_angry_complaints_are_clean(
    detector: TextDetector, text: str, lang: str
) -> None:
    assert categories(detector, text, lang) == ()


def test_reported_profanity_is_milder(detector: TextDetector) -> None:
    direct = detector.analyse("fucking hell", "en")
    reported = detector.analyse("he said fucking hell", "en")
    assert reported.categories == ("profanity",)
    assert reported.severity == direct.severity - 1


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("I know where you work.", "en"),
        ("i'm going to find you", "en"),
        ("there's a bomb in your building", "en"),
        ("watch your back", "en"),
        ("i'll burn the place down", "en"),
        ("je vais vous retrouver", "fr"),
        ("je sais où tu habites", "fr"),
        ("il y a une bombe dans le bâtiment", "fr"),
        ("je vais foutre le feu à vos bureaux", "fr"),
        ("je vais tous vous buter", "fr"),
    ],
)
def test_threats(detector: TextDetector, text: str, lang: str) -> None:
    detection = detector.analyse(text, lang)
    assert "threat" in detection.categories
    assert detection.severity == 3


def test_several_categories_in_one_utterance(detector: TextDetector) -> None:
    detection = detector.analyse("you fucking moron i'll burn your office down", "en")
    assert detection.categories == ("profanity", "insult", "threat")
    assert detection.severity == 3
    by_category = {m.category: m for m in detection.matches}
    assert by_category["insult"].words == ("moron",)
    assert by_category["profanity"].words == ("fucking",)


@pytest.mark.parametrize(
    ("text", "lang"), [("bull shit", "en"), ("the mother fucker", "en"), ("pu tain", "fr")]
)
def test_words_split_by_the_recogniser(detector: TextDetector, text: str, lang: str) -> None:
    assert categories(detector, text, lang) == ("profanity",)


@pytest.mark.parametrize(
    "text",
    [
        "i'll kill the lot of you",
        "shut up that's not what i asked",
        "you stupid bitch",
        "i'll burn your house down",
    ],
)
def test_the_safe_phrases_leave_the_abuse_next_to_them(detector: TextDetector, text: str) -> None:
    assert categories(detector, text, "en") != ()


def test_two_words_are_not_read_as_one_listed_word_they_only_start(detector: TextDetector) -> None:
    # "who" + "reversed" starts with "whore": a split word is rebuilt only up to a short ending
    assert categories(detector, "the other driver was a moron who reversed into me", "en") == ()


def test_undecided_language_merges_lexicons(detector: TextDetector) -> None:
    assert categories(detector, "espèce de connard", None) == ("insult",)
    assert categories(detector, "you idiot", None) == ("insult",)
    assert categories(detector, "je voudrais changer mon contrat", None) == ()


def test_unknown_language_is_refused(detector: TextDetector) -> None:
    with pytest.raises(ValueError, match="de"):
        detector.analyse("hallo", "de")


# ---------------------------------------------------------------- output shapes


def test_to_dict_is_the_detect_command_line(detector: TextDetector) -> None:
    out = detector.analyse("you idiot", "en").to_dict()
    assert out == {
        "text": "you idiot",
        "categories": ["insult"],
        "severity": 2,
        "matches": [
            {
                "category": "insult",
                "severity": 2,
                "words": ["idiot"],
                "term": "idiot*",
                "directed": True,
                "source": "lexicon",
                "score": 1.0,
                "because": "lexicon: idiot*",
            }
        ],
    }
    json.dumps(out)


def test_detect_lines_one_object_per_line(detector: TextDetector) -> None:
    out = list(detect_lines(["i want a refund\n", "you idiot\n", "\n"], detector, "en"))
    assert [o["categories"] for o in out] == [[], ["insult"], []]
    assert out[1]["text"] == "you idiot"


def test_load_detector_reads_the_configured_lexicons() -> None:
    detector = load_detector(Config())
    assert set(detector.lexicons) == {"en", "fr"}
    assert detector.lexicons["fr"].source.endswith("lexicon_fr.toml")


# ---------------------------------------------------------------- lexicon validation


GOOD_TERM = '[[terms]]\npattern = "darn"\ncategory = "profanity"\nseverity = 1\n'


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        (
            '[[terms]]\npattern = "darn"\ncategory = "rudeness"\nseverity = 1\n',
            "terms[0].category",
            "rudeness",
        ),
        ('[[terms]]\npattern = "darn"\ncategory = "profanity"\nseverity = 4\n', "terms[0].severity", "4"),
        (
            '[[terms]]\npattern = "  "\ncategory = "profanity"\nseverity = 1\n',
            "terms[0].pattern",
            "non-empty",
        ),
        (
            '[[terms]]\npattern = "darn"\ncategory = "profanity"\nseverity = 1\ncolour = "red"\n',
            "terms[0].colour",
            "unknown key",
        ),
        (
            GOOD_TERM + '[[terms]]\npatterns = ["heck", "fu*"]\ncategory = "profanity"\nseverity = 1\n',
            "terms[1].patterns[1]",
            "too short",
        ),
        (
            GOOD_TERM + '[[terms]]\npattern = "{nope} darn"\ncategory = "profanity"\nseverity = 1\n',
            "terms[1].pattern",
            "undefined macro",
        ),
        (
            GOOD_TERM + '[[directed]]\npattern = "you"\nposition = "beside"\n',
            "directed[0].position",
            "beside",
        ),
        (GOOD_TERM + '[[safe]]\npattern = ".. darn"\n', "safe[0].pattern", "between two words"),
        ("directed_window = 99\n" + GOOD_TERM, "directed_window", "between 0 and 8"),
        ('lang = "fr"\n' + GOOD_TERM, "lang", "'en'"),
        ("colour = 1\n" + GOOD_TERM, "colour", "unknown key"),
        (
            '[[terms]]\npattern = "darn"\ncategory = "threat"\nseverity = 1\nundirected = "profanity"\n',
            "terms[0].undirected",
            "insult",
        ),
        ("", "terms", "no [[terms]]"),
    ],
)
def test_lexicon_errors_name_the_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    path = tmp_path / "lexicon_en.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_lexicon(path, "en")
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_lexicon_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_lexicon(tmp_path / "missing.toml", "en")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[terms]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_lexicon(broken, "en")


def test_it_can_add_a_term_without_code(tmp_path: Path) -> None:
    path = tmp_path / "lexicon_en.toml"
    path.write_text(
        GOOD_TERM + '[[terms]]\npattern = "nincompoop*"\ncategory = "insult"\nseverity = 2\n'
        '[[directed]]\npattern = "you"\n',
        encoding="utf-8",
    )
    detector = TextDetector({"en": load_lexicon(path, "en")})
    assert categories(detector, "you nincompoops", "en") == ("insult",)
    assert categories(detector, "darn it", "en") == ("profanity",)


# ---------------------------------------------------------------- streaming stage


def english() -> str:
    """The call's language, as the session's language stage gives it to the abuse stage."""
    return "en"


def partial(text: str, t: float = 1.0, start: float = 1.0, speaker: str = "customer") -> Transcript:
    words = tuple(Word(w, start + i * 0.3, start + i * 0.3 + 0.25) for i, w in enumerate(text.split()))
    return Transcript(t=t, speaker=speaker, text=text, words=words, final=False)  # type: ignore[arg-type]


def final(text: str, t: float = 2.0, start: float = 1.0) -> Transcript:
    words = tuple(Word(w, start + i * 0.3, start + i * 0.3 + 0.25) for i, w in enumerate(text.split()))
    return Transcript(t=t, speaker="customer", text=text, words=words, final=True)


def test_partial_fires_once_stable_and_final_does_not_repeat(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=2, language=english)
    assert stage.on_event(partial("listen")) == []
    assert stage.on_event(partial("listen you idiot")) == []  # seen once: may still change
    fired = stage.on_event(partial("listen you idiot i"))
    assert [(a.category, a.words, a.partial) for a in fired] == [("insult", ("idiot",), True)]
    assert fired[0].t == pytest.approx(1.6)  # start of "idiot", the third word
    assert fired[0].speaker == "customer"
    assert stage.on_event(partial("listen you idiot i said")) == []
    assert stage.on_event(final("listen you idiot i said cancel")) == []


def test_unstable_partial_word_never_fires(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=2, language=english)
    assert stage.on_event(partial("you idiot")) == []
    assert stage.on_event(partial("you idiom")) == []
    assert stage.on_event(partial("you idiot")) == []  # a new streak starts
    assert stage.on_event(final("you idiom is wrong")) == []


def test_final_fires_what_partials_did_not(detector: TextDetector) -> None:
    stage = AbuseStage(detector, language=english)
    assert stage.on_event(partial("i know where")) == []
    fired = stage.on_event(final("i know where you work you idiot"))
    assert sorted(a.category for a in fired) == ["insult", "threat"]
    assert all(not a.partial for a in fired)
    threat = next(a for a in fired if a.category == "threat")
    assert threat.t == pytest.approx(1.3)  # "know"
    assert threat.matches[0].category == "threat"


def test_each_utterance_starts_afresh(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=1, language=english)
    assert len(stage.on_event(partial("you idiot"))) == 1
    assert stage.on_event(final("you idiot")) == []
    assert len(stage.on_event(partial("you idiot"))) == 1  # a new utterance


def test_same_words_twice_fire_twice(detector: TextDetector) -> None:
    stage = AbuseStage(detector, language=english)
    assert len(stage.on_event(final("you idiot you idiot"))) == 2


def test_agent_is_not_analysed(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=1, language=english)
    assert stage.on_event(partial("you idiot", speaker="agent")) == []


def test_partial_without_words_uses_event_time(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=1, language=lambda: "fr")
    fired = stage.on_event(Transcript(t=7.5, speaker="customer", text="espèce de connard"))
    assert [(a.category, a.t) for a in fired] == [("insult", 7.5)]


def test_the_language_is_asked_as_each_transcript_arrives(detector: TextDetector) -> None:
    """The session's language stage may decide from the very transcript the abuse stage reads next."""
    decided: list[str | None] = [None]
    stage = AbuseStage(detector, stable_partials=1, language=lambda: decided[0])
    insult = Transcript(t=1.0, speaker="customer", text="espèce de connard", final=True)
    assert [a.category for a in stage.on_event(insult)] == ["insult"]  # undecided: every lexicon
    decided[0] = "en"
    assert stage.on_event(replace(insult, t=5.0)) == []  # English: the French lexicon is not read
    decided[0] = "fr"
    assert [a.category for a in stage.on_event(replace(insult, t=9.0))] == ["insult"]


def test_stages_pass_over_other_events_and_time(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=1, language=english)
    others = [
        SpeechEnd(t=1.0, speaker="customer", duration=1.0),
        LanguageDecided(t=1.0, speaker="system", lang="en"),
    ]
    assert run_events(stage, others, tick_at=[0.0, 5.0, 60.0]) == []
    fired = run_events(stage, [*others, final("you idiot")], tick_at=[0.5, 1.5])
    assert [a.category for a in fired] == ["insult"]


# ---------------------------------------------------------------- evaluation


def test_evaluate_corpus_counts(tmp_path: Path, detector: TextDetector) -> None:
    corpus = tmp_path / "mini.tsv"
    corpus.write_text(
        "# lang, labels, hard, text\n"
        "en\tinsult\t0\tyou idiot\n"
        "en\tthreat\t0\ti know where you live\n"
        "en\tprofanity\t0\tthe printer is broken\n"  # a miss
        "en\tclean\t1\ti could kill for a coffee\n"
        "en\tclean\t0\tthe bullshit fees\n",  # a false alarm
        encoding="utf-8",
    )
    report = evaluate_corpus(corpus, detector)
    assert (report.utterances, report.clean, report.hard_negatives, report.false_alarms) == (5, 2, 1, 1)
    assert report.false_alarms_per_100 == 50.0
    assert report.recall("profanity") == 0.0
    assert report.precision("profanity") == 0.0
    assert report.recall("insult") == 1.0
    assert len(report.mistakes) == 2
    assert "precision" in report.format()


def test_evaluate_corpus_names_a_bad_line(tmp_path: Path, detector: TextDetector) -> None:
    corpus = tmp_path / "bad.tsv"
    corpus.write_text("en\tinsult\t0\tyou idiot\nen\trude\t0\tyou idiot\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        evaluate_corpus(corpus, detector)
    assert caught.value.key == "line 2"
