"""The semantic stage: features, the head's fit and file, the cascade, the streaming stages,
and the shipped heads against the corpus they came from."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from callguard.core.config import Config
from callguard.core.errors import ConfigError
from callguard.core.events import Transcript, Word
from callguard.detector.corpus import (
    LabelledLine,
    corpus_digest,
    fold_of,
    read_agent_corpus,
    read_corpus,
    with_recognition_errors,
)
from callguard.detector.encoder import EncoderError, EncoderIdentity, shared_encoder
from callguard.detector.features import ngram_buckets, ngram_rows
from callguard.detector.head import ExampleBank, Head, TrainingSettings, fit
from callguard.detector.semantic import HeadStep, encoder_text
from callguard.detector.stage import AbuseStage, AgentActStage, AgentNames
from callguard.detector.text_detector import TextDetector, load_agent_acts, load_detector, load_head
from callguard.detector.train import (
    RECIPES,
    Corpus,
    VectorCache,
    agent_rows,
    check_heads,
    customer_rows,
    train_heads,
)
from callguard.testing import run_events

PACKAGED = Config().heads_dir()


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return load_detector(Config())


def transcript(
    t: float, text: str, final: bool = True, speaker: str = "customer", step: float = 0.3
) -> Transcript:
    words = tuple(Word(w, t + i * step, t + i * step + 0.25) for i, w in enumerate(text.split()))
    return Transcript(t=t, speaker=speaker, text=text, words=words, final=final)  # type: ignore[arg-type]


# ---------------------------------------------------------------- corpus and features


def test_recognition_errors_are_seeded_and_at_the_rate() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    once = with_recognition_errors(text, 0.2, "en", seed=7)
    assert once == with_recognition_errors(text, 0.2, "en", seed=7)
    assert once != with_recognition_errors(text, 0.2, "en", seed=8)
    changed = len(set(text.split()) - set(once.split()))
    assert 20 <= changed <= 60  # about 20 % of 200 words dropped or replaced
    assert with_recognition_errors(text, 0.0, "en", seed=7) == text


def test_families_fall_in_one_fold_whatever_the_order() -> None:
    folds = {fold_of(f"family-{i}", 5) for i in range(200)}
    assert folds == set(range(5))
    assert fold_of("en-thr-0042", 5) == fold_of("en-thr-0042", 5)


def test_a_bad_corpus_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "site.tsv"
    bad.write_text("f1\ten\tthreat\t0\ti know where you live\nf2\ten\tthreat\t2\toops\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        list(read_corpus(bad))
    assert caught.value.key == "line 2" and "hard must be 0 or 1" in str(caught.value)
    agent = tmp_path / "agent.tsv"
    agent.write_text("f1\ten\tshouting\tcalm down\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="act must be one of"):
        list(read_agent_corpus(agent))


def test_ngrams_are_stable_and_normalised() -> None:
    one = ngram_buckets("you know where i live")
    assert one == ngram_buckets("you know where i live")
    assert abs(sum(v * v for v in one.values()) - 1.0) < 1e-9
    rows = ngram_rows(["a b", "a b c"])
    assert rows.n == 2 and set(rows.rows.tolist()) == {0, 1}


def test_selected_sparse_rows_are_those_rows_in_that_order() -> None:
    rows = ngram_rows(["a b c", "", "d e", "f", "a a b"])
    weights = np.random.default_rng(1).random((rows.width, 2))
    order = np.array([4, 1, 0, 3, 0])
    picked = rows.select(order)
    assert picked.n == 5 and np.allclose(picked.dot(weights), rows.dot(weights)[order])


# ---------------------------------------------------------------- the head


def _toy_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8))
    y = np.stack([(x[:, 0] > 0.3), (x[:, 1] + x[:, 2] > 0.5), (x[:, 3] < -0.8)], axis=1).astype(float)
    return x, y, np.ones(len(x))


def test_fit_is_deterministic_and_learns() -> None:
    x, y, w = _toy_problem()
    settings = TrainingSettings(epochs=300, learning_rate=0.05, l2=1e-6, ngrams=False)
    first = fit(x, None, y, w, "multilabel", settings)
    second = fit(x, None, y, w, "multilabel", settings)
    assert np.array_equal(first.dense, second.dense) and np.array_equal(first.bias, second.bias)
    head = Head(
        "multilabel", ("a", "b", "c"), (), first.dense, first.bias, first.ngram_buckets, first.ngram_weights
    )
    accuracy = ((head.scores(x, [""] * len(x)) >= 0.5) == (y == 1)).mean()
    assert accuracy >= 0.95


def test_mini_batch_fit_is_deterministic_and_learns_what_the_full_batch_does() -> None:
    x, y, w = _toy_problem()
    texts = [f"line {i % 7}" for i in range(len(x))]
    settings = TrainingSettings(epochs=60, learning_rate=0.01, l2=1e-6, batch=32)
    first = fit(x, ngram_rows(texts), y, w, "multilabel", settings)
    second = fit(x, ngram_rows(texts), y, w, "multilabel", settings)
    assert np.array_equal(first.dense, second.dense)
    assert np.array_equal(first.ngram_weights, second.ngram_weights)
    full = fit(x, ngram_rows(texts), y, w, "multilabel", TrainingSettings(epochs=300, l2=1e-6))
    predictions = []
    for weights in (first, full):
        head = Head(
            "multilabel",
            ("a", "b", "c"),
            (),
            weights.dense,
            weights.bias,
            weights.ngram_buckets,
            weights.ngram_weights,
        )
        predictions.append(head.scores(x, texts) >= 0.5)
        assert (predictions[-1] == (y == 1)).mean() >= 0.95
    assert (predictions[0] == predictions[1]).mean() >= 0.97


def test_an_ordinary_line_added_moves_few_lead_copies() -> None:
    """The long copies' leads sit on a ring: one more ordinary line takes over one arc of it, so a
    retraining encodes a few copies again, not all of them."""
    lines = [*Corpus.read(None).customer]
    before = {row.text for row in customer_rows(lines)}
    extra = LabelledLine(
        "site:a.tsv", 1, "site-1", "en", (), False, "could you read me the reference again please"
    )
    after = {row.text for row in customer_rows([*lines, extra])}
    moved = len(after - before) - 2  # the new line's own two rows
    long_copies = sum(bool(x.labels or x.hard) for x in lines)
    assert 0 <= moved < long_copies / 200


def test_the_nearest_lines_vote_beside_the_linear_head(tmp_path: Path) -> None:
    """Two tight clusters the linear part cannot tell apart (its weights are zero): the vote of the
    nearest bank lines decides, and survives the file's float16 projection and int8 vectors."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2, 16))
    x = np.vstack([c + 0.05 * rng.standard_normal((20, 16)) for c in centres]).astype(np.float32)
    targets = np.array([[1, 0]] * 20 + [[0, 1]] * 20, np.uint8)
    labels = ["threat"] * 20 + ["clean"] * 20
    bank = ExampleBank.build([f"l{i}" for i in range(40)], labels, x, targets, rank=8)
    settings = TrainingSettings(neighbours=5, neighbour_weight=0.5)
    zeros = (np.zeros((16, 2), np.float32), np.zeros(2, np.float32), np.zeros(0, np.int64), np.zeros((0, 2)))
    head = Head("multilabel", ("threat", "other"), (), *zeros, settings=settings, bank=bank)
    probe = np.vstack([centres[0], centres[1]]).astype(np.float32)
    scores = head.scores(probe, ["", ""])
    # the linear half says 0.5 for everything, the vote 1 or 0 where all five neighbours agree
    assert np.allclose(scores, [[0.75, 0.25], [0.25, 0.75]], atol=0.02)
    head.save(tmp_path / "voting.npz")
    assert np.allclose(Head.load(tmp_path / "voting.npz").scores(probe, ["", ""]), scores, atol=0.02)
    assert np.allclose(Head(**{**head.__dict__, "settings": TrainingSettings()}).scores(probe, ["", ""]), 0.5)


def test_head_file_round_trip_and_encoder_pinning(tmp_path: Path) -> None:
    x, y, w = _toy_problem()
    texts = [f"line {i}" for i in range(len(x))]
    weights = fit(x, ngram_rows(texts), y, w, "multilabel", TrainingSettings(epochs=50))
    identity = EncoderIdentity("use", "0.2.1", "0123456789abcdef")
    head = Head(
        "multilabel",
        ("a", "b", "c"),
        (identity,),
        weights.dense,
        weights.bias,
        weights.ngram_buckets,
        weights.ngram_weights,
        corpus_digest="d" * 64,
        corpus_lines=300,
        bank=ExampleBank.build(texts[:5], ["a"] * 5, x[:5]),
    )
    head.save(tmp_path / "h.npz")
    loaded = Head.load(tmp_path / "h.npz")
    assert loaded.encoders == (identity,) and loaded.corpus_digest == "d" * 64
    assert np.allclose(loaded.scores(x, texts), head.scores(x, texts), atol=2e-3)
    assert loaded.bank.nearest(x[2], "a", k=1)[0][0] == "line 2"
    loaded.check_encoders([identity], "h.npz")
    with pytest.raises(EncoderError, match=r"trained on the sentence encoders use 0\.2\.1"):
        loaded.check_encoders([replace(identity, version="0.3.0")], "h.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a head")
    with pytest.raises(ConfigError, match="is not a callguard semantic head"):
        Head.load(tmp_path / "junk.npz")


def test_shipped_heads_match_the_installed_encoders_and_the_corpus() -> None:
    corpus = Corpus.read(None)
    for recipe in RECIPES:
        head = load_head(PACKAGED, recipe.name)  # refuses a head of another encoder
        lines = corpus.customer if recipe.side == "customer" else corpus.agent
        assert head.corpus_digest == corpus_digest(lines), f"{recipe.name}: retrain, the corpus changed"
        assert [e.name for e in head.encoders] == list(recipe.encoders)
    assert check_heads(Config(base_dir=Path("/nonexistent"))) == []


def test_two_trainings_at_once_share_the_vector_cache(tmp_path: Path) -> None:
    """Two cross-validation folds run side by side write the same cache: neither sees half a file."""
    encoder = shared_encoder("use")
    cache = tmp_path / f"vectors-use-{encoder.identity.digest}.npz"
    known = 20000  # a cache as big as a real corpus's: each write takes long enough to overlap
    keys = np.array([f"{i:040x}" for i in range(known)])
    np.savez(cache, keys=keys, vectors=np.zeros((known, encoder.dimensions), np.float32))
    errors: list[BaseException] = []

    def train(name: str) -> None:
        try:
            for round_ in range(4):
                texts = [f"{name} line {round_} number {i}" for i in range(3)]
                assert VectorCache(tmp_path).vectors([encoder], texts).shape == (3, encoder.dimensions)
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=train, args=(name,)) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]


def test_a_torn_vector_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = shared_encoder("use")
    cache = tmp_path / f"vectors-use-{encoder.identity.digest}.npz"
    texts = ["my parcel never came", "the router keeps dropping"]
    expected = VectorCache(tmp_path).vectors([encoder], texts)
    cache.write_bytes(cache.read_bytes()[:-300])  # cut short, as a full disk or a crash would leave it
    again = VectorCache(tmp_path).vectors([encoder], texts)
    assert np.allclose(again, expected, atol=1e-5)
    assert "unreadable" in caplog.text and str(cache) in caplog.text
    with np.load(cache) as rewritten:  # written whole again
        assert len(rewritten["keys"]) == len(texts)


def test_retraining_reproduces_the_shipped_agent_head(tmp_path: Path) -> None:
    """The agent's head (one fast encoder) retrained from scratch gives the committed head's
    decisions; the customer's heads are checked the same way by the slow test below."""
    shipped = load_head(PACKAGED, "agent")
    corpus = Corpus.read(None)
    fresh = train_heads(corpus, VectorCache(tmp_path), sides=("agent",))["agent"]
    texts = [row.text for row in agent_rows(corpus.agent)[::7]]
    vectors = shared_encoder("use").encode(texts)
    assert np.abs(fresh.scores(vectors, texts) - shipped.scores(vectors, texts)).max() < 0.02
    assert fresh.corpus_digest == shipped.corpus_digest


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_customer_heads(tmp_path: Path) -> None:
    corpus = Corpus.read(None)
    fresh = train_heads(corpus, VectorCache(), sides=("customer",))
    lines = [encoder_text(x.text) for x in corpus.customer[::13]]
    for name, head in fresh.items():
        shipped = load_head(PACKAGED, name)
        step = HeadStep(shipped, tuple(shared_encoder(e.name) for e in shipped.encoders))  # type: ignore[arg-type]
        vectors = step.vectors(lines)
        assert np.abs(head.scores(vectors, lines) - shipped.scores(vectors, lines)).max() < 0.02, name


# ---------------------------------------------------------------- the detector


@pytest.mark.parametrize(
    ("text", "lang", "category"),
    [
        ("you better pray we never cross paths", "en", "threat"),
        ("i hope you enjoy your drive home tonight because it might be your last", "en", "threat"),
        ("you've got the brains of a goldfish", "en", "insult"),
        ("tu ferais mieux de ne jamais croiser mon chemin", "fr", "threat"),
        ("t'as un petit pois à la place du cerveau", "fr", "insult"),
    ],
)
def test_the_head_reads_what_no_word_list_holds(
    detector: TextDetector, text: str, lang: str, category: str
) -> None:
    assert category not in detector.lexicon_detection(text, lang).categories
    detection = detector.analyse(text, lang)
    assert category in detection.categories
    match = next(m for m in detection.matches if m.category == category)
    assert match.source == "semantic" and match.like and "like" in match.because


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("my internet has been down for three days and i want it fixed today", "en"),
        ("i could kill for a coffee right now honestly", "en"),
        ("je voudrais résilier mon contrat et récupérer ma caution", "fr"),
    ],
)
def test_ordinary_complaints_stay_clean(detector: TextDetector, text: str, lang: str) -> None:
    assert detector.analyse(text, lang).categories == ()


def test_the_cascade_stops_plainly_clean_lines_at_the_first_head(detector: TextDetector) -> None:
    semantic = detector.semantic
    assert semantic is not None and len(semantic.steps) == 2
    texts = [encoder_text("hello i am calling about my bill"), encoder_text("i know where you live")]
    _, _, used = semantic._run(texts)
    assert used[0] is semantic.steps[0] and used[1] is semantic.steps[1]


def test_thresholds_follow_the_sensitivity() -> None:
    config = Config().with_overrides(detector={"threat_sensitivity": 0.9, "insult_sensitivity": 0.1})
    semantic = load_detector(config).semantic
    assert semantic is not None
    assert semantic.thresholds["threat"] == pytest.approx(0.1)
    assert semantic.thresholds["insult"] == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="threat_sensitivity"):
        Config().with_overrides(detector={"threat_sensitivity": 1.5})


# ---------------------------------------------------------------- the streaming stages


def english() -> str:
    """The call's language, as the session's language stage gives it to the abuse stage."""
    return "en"


def test_a_threat_spanning_two_utterances_is_found_with_the_context(detector: TextDetector) -> None:
    stage = AbuseStage(detector, context_s=15.0, language=english)
    first = stage.on_event(transcript(10.0, "i know which branch you work at"))
    second = stage.on_event(transcript(13.0, "maybe i'll pop by and say hello"))
    assert [a.category for a in first + second] == ["threat"]
    assert second[0].matches[0].source == "context"
    alone = AbuseStage(detector, context_s=15.0, language=english)
    alone.on_event(transcript(10.0, "i know which branch you work at"))
    assert alone.on_event(transcript(40.0, "maybe i'll pop by and say hello")) == []


def test_the_agents_words_are_never_the_customers_abuse(detector: TextDetector) -> None:
    stage = AbuseStage(detector, language=english)
    assert stage.on_event(transcript(1.0, "i know where you live", speaker="agent")) == []


def test_stable_partials_are_read_every_few_words(detector: TextDetector) -> None:
    stage = AbuseStage(detector, stable_partials=2, partial_step_words=3, language=english)
    text = "you better pray we never cross paths"
    assert detector.lexicon_detection(text, "en").categories == ()  # the head's alone
    partials = [transcript(1.0, " ".join(text.split()[:n]), final=False) for n in (2, 2, 5, 5, 8, 8)]
    fired = run_events(stage, partials)
    assert [a.category for a in fired] == ["threat"] and fired[0].partial
    assert stage.on_event(transcript(1.0, text)) == []  # already fired in this utterance


def test_agent_acts_are_recognised_in_both_languages() -> None:
    classifier = load_agent_acts(Config())
    assert classifier is not None
    stage = AgentActStage(classifier, AgentNames.of("Mark Dunn", "Northwind Broadband"))
    cases = [
        ("i can keep helping you as long as the language stays respectful", "limits"),
        ("je peux continuer à vous aider si vous restez poli", "limits"),
        ("i'm going to pass you to my supervisor now", "transfer"),
        ("je vais mettre fin à cet appel maintenant", "release"),
    ]
    for text, act in cases:
        out = stage.on_event(transcript(5.0, text, speaker="agent"))
        assert [e.act for e in out] == [act], text
    named = stage.on_event(transcript(6.0, "okay mister dunn one moment", speaker="agent"))
    assert [e.act for e in named] in (["personalise"],)
    customer = transcript(7.0, "i can keep helping you as long as you stay calm")
    assert stage.on_event(customer) == []  # the customer's words are not the agent's acts


def test_shared_resources_load_the_encoders_before_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first threat of the first call must not wait for the weights (1-2 s)."""
    from callguard.detector import encoder
    from callguard.pipeline.session import SharedResources

    monkeypatch.setattr(encoder, "_SHARED", {})  # a fresh process's encoders, none loaded yet
    shared = SharedResources.build(Config())
    assert shared.detector.semantic is not None and shared.agent_acts is not None
    for classifier in (shared.detector.semantic, shared.agent_acts):
        for step in classifier.steps:
            assert all(e._model is not None for e in step.encoders)  # type: ignore[attr-defined]
