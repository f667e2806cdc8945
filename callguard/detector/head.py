"""A small classifier on what the features module reads of an utterance, stored as one .npz file.

`Head` is a linear model over the sentence vectors of its encoders side by side and the hashed
word n-grams: sigmoid outputs for the customer's categories (an utterance can be an insult and
a threat), softmax outputs for the agent's speech acts (one act per utterance). Training is
Adam on a convex loss from zero (the full batch in float64, or seeded mini-batches in float32),
so the same corpus and settings give the same head on any machine, to rounding. The file
records the encoders the head was trained on and the digest of its corpus; a head is refused by
any other encoder.

`ExampleBank` keeps the labelled lines the head learnt from, their vectors projected on the
corpus's main directions and quantised to int8: a detection names the nearest examples it
resembles, and a head with `neighbours` also lets its nearest lines vote. The vote carries what
a linear boundary over general-purpose sentence vectors blurs (a veiled threat sits among
threats, its harmless twin among complaints); measured on the blind dev sets, a blend of the
two (`neighbour_weight`, the vote's share) finds 5 to 10 more threats in 100 at the same false
alarms than the linear head alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from callguard.core.errors import ConfigError
from callguard.detector.encoder import EncoderError, EncoderIdentity
from callguard.detector.features import NGRAM_BUCKETS, SparseRows, ngram_rows

HeadKind = Literal["multilabel", "multiclass"]
FORMAT = "callguard-head/3"


@dataclass(frozen=True)
class TrainingSettings:
    """How a head is fitted; stored with it, so that a retraining can use the same."""

    epochs: int = 800
    learning_rate: float = 0.05
    l2: float = 5e-6  # per unit of sample weight: larger smooths more
    ngrams: bool = True
    neighbours: int = 0  # nearest labelled lines that vote; 0 = the linear head alone
    neighbour_weight: float = 0.5  # the vote's share of the score, the linear head's is the rest
    bank_rank: int = 128  # the bank's vectors keep this many of the corpus's main directions
    batch: int = 0  # rows per Adam step, in an order drawn afresh each epoch (seeded); 0 = full batch


@dataclass(frozen=True)
class ExampleBank:
    """Labelled lines and their vectors, projected and quantised, for explanations and the vote."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]  # one label per line: its main category or act
    vectors: np.ndarray = field(repr=False)  # (n, r) int8, unit vectors times 127
    targets: np.ndarray = field(repr=False)  # (n, k) uint8: each line's labels among the head's
    mean: np.ndarray = field(repr=False)  # (d,) the encoder space's centre
    projection: np.ndarray = field(repr=False)  # (d, r) its main directions

    @classmethod
    def empty(cls, width: int = 1) -> ExampleBank:
        return cls(
            (),
            (),
            np.zeros((0, 1), np.int8),
            np.zeros((0, 1), np.uint8),
            np.zeros(width, np.float32),
            np.eye(width, 1, dtype=np.float32),
        )

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        vectors: np.ndarray,
        targets: np.ndarray | None = None,
        rank: int = 128,
    ) -> ExampleBank:
        unit = _unit(np.asarray(vectors, dtype=np.float64))
        mean = unit.mean(axis=0)
        # deterministic main directions: SVD of the centred bank, signs fixed by the largest entry
        _, _, vt = np.linalg.svd(unit - mean, full_matrices=False)
        vt = vt[: min(rank, vt.shape[0])]
        vt *= np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])[:, None]
        projection = vt.T.astype(np.float16).astype(np.float32)  # stored as float16: use what is stored
        projected = _unit((unit - mean).astype(np.float32) @ projection)
        quantised = np.clip(np.rint(projected * 127.0), -127, 127).astype(np.int8)
        if targets is None:
            targets = np.zeros((len(texts), 0), np.uint8)
        return cls(
            tuple(texts),
            tuple(labels),
            quantised,
            np.asarray(targets, np.uint8),
            mean.astype(np.float32),
            projection,
        )

    @property
    def width(self) -> int:
        """The width of the encoder vectors the bank reads (its first encoder's)."""
        return int(self.mean.shape[0])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """(n, r) unit vectors in the bank's space, from (n, d) encoder vectors."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        return _unit((_unit(v) - self.mean) @ self.projection)

    @cached_property
    def _label_array(self) -> np.ndarray:
        return np.asarray(self.labels)

    @cached_property
    def _unit_lines(self) -> np.ndarray:
        """(r, n) the bank's vectors as float, once per process: a vote then costs one product."""
        return np.ascontiguousarray(self.vectors.astype(np.float32).T / 127.0)

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, lines) cosine similarity of each vector to every line of the bank."""
        return self.project(vectors) @ self._unit_lines

    def nearest(self, vector: np.ndarray, label: str, k: int = 2) -> tuple[tuple[str, float], ...]:
        """The k lines labelled `label` closest to `vector`, with their cosine similarity."""
        rows = np.flatnonzero(self._label_array == label)
        if rows.size == 0:
            return ()
        similarity = self.similarities(vector)[0, rows]
        order = np.argsort(-similarity, kind="stable")[:k]
        return tuple((self.texts[rows[j]], float(similarity[j])) for j in order)

    def vote(self, vectors: np.ndarray, k: int, sharpness: float = 20.0) -> np.ndarray:
        """(n, labels) the share of each label among the k nearest lines, the nearer weighing more."""
        similarity = self.similarities(vectors)
        k = min(k, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        closeness = np.take_along_axis(similarity, nearest, axis=1)
        weights = np.exp((closeness - closeness.max(axis=1, keepdims=True)) * sharpness)
        votes = (self.targets[nearest].astype(np.float32) * weights[..., None]).sum(axis=1)
        return votes / weights.sum(axis=1, keepdims=True)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


@dataclass(frozen=True)
class Head:
    kind: HeadKind
    labels: tuple[str, ...]
    encoders: tuple[EncoderIdentity, ...]  # whose vectors, side by side, the dense weights read
    dense: np.ndarray = field(repr=False)  # (d, k) float32
    bias: np.ndarray = field(repr=False)  # (k,)
    ngram_buckets: np.ndarray = field(repr=False)  # (m,) sorted buckets the corpus used
    ngram_weights: np.ndarray = field(repr=False)  # (m, k)
    corpus_digest: str = ""
    corpus_lines: int = 0
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    bank: ExampleBank = field(default_factory=ExampleBank.empty)

    def scores(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(n, len(labels)) probabilities, from (n, d) vectors and the n texts in encoder form."""
        logits = np.asarray(vectors, dtype=np.float32) @ self.dense + self.bias
        if self.ngram_buckets.size:
            grams = ngram_rows(texts)
            slot = np.searchsorted(self.ngram_buckets, grams.columns)
            slot = np.minimum(slot, self.ngram_buckets.size - 1)
            known = self.ngram_buckets[slot] == grams.columns  # a bucket no training line used weighs 0
            for k in range(len(self.labels)):
                contribution = grams.values[known] * self.ngram_weights[slot[known], k]
                logits[:, k] += np.bincount(grams.rows[known], contribution, minlength=len(texts))
        linear = _output(logits, self.kind)
        if not self.settings.neighbours or not self.bank.targets.size:
            return linear
        share = self.settings.neighbour_weight
        vote = self.bank.vote(np.asarray(vectors)[:, : self.bank.width], self.settings.neighbours)
        return (1.0 - share) * linear + share * vote

    def check_encoders(self, identities: Sequence[EncoderIdentity], source: str | Path) -> None:
        if tuple(identities) != self.encoders:
            trained = ", ".join(map(str, self.encoders))
            installed = ", ".join(map(str, identities))
            raise EncoderError(
                f"{source}: this head was trained on the sentence encoders {trained}, but {installed} "
                "are installed; retrain it with `callguard detector train`"
            )

    # ---- file

    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "labels": list(self.labels),
            "encoders": [asdict(e) for e in self.encoders],
            "corpus_digest": self.corpus_digest,
            "corpus_lines": self.corpus_lines,
            "settings": asdict(self.settings),
            "bank_texts": list(self.bank.texts),
            "bank_labels": list(self.bank.labels),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                meta=np.array(json.dumps(meta, ensure_ascii=False)),
                dense=self.dense,
                bias=self.bias,
                ngram_buckets=self.ngram_buckets,
                ngram_weights=self.ngram_weights.astype(np.float16),  # a third of the file; 1e-3 of a logit
                bank_vectors=self.bank.vectors,
                bank_targets=self.bank.targets,
                bank_mean=self.bank.mean,
                bank_projection=self.bank.projection.astype(np.float16),
            )

    @classmethod
    def load(cls, path: Path) -> Head:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except FileNotFoundError:
            raise ConfigError(
                path, "", "semantic head not found (train one: callguard detector train)"
            ) from None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ConfigError(path, "", f"is not a callguard semantic head ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ConfigError(path, "format", f"expected {FORMAT!r}, got {meta.get('format')!r}: retrain it")
        return cls(
            kind=meta["kind"],
            labels=tuple(meta["labels"]),
            encoders=tuple(EncoderIdentity(**e) for e in meta["encoders"]),
            dense=arrays["dense"],
            bias=arrays["bias"],
            ngram_buckets=arrays["ngram_buckets"],
            ngram_weights=arrays["ngram_weights"].astype(np.float32),
            corpus_digest=meta["corpus_digest"],
            corpus_lines=meta["corpus_lines"],
            settings=TrainingSettings(**meta["settings"]),
            bank=ExampleBank(
                tuple(meta["bank_texts"]),
                tuple(meta["bank_labels"]),
                arrays["bank_vectors"],
                arrays["bank_targets"],
                arrays["bank_mean"],
                arrays["bank_projection"].astype(np.float32),
            ),
        )


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class LinearWeights:
    dense: np.ndarray
    bias: np.ndarray
    ngram_buckets: np.ndarray
    ngram_weights: np.ndarray


def fit(
    vectors: np.ndarray,
    grams: SparseRows | None,
    targets: np.ndarray,
    weights: np.ndarray,
    kind: HeadKind,
    settings: TrainingSettings,
) -> LinearWeights:
    """Adam on weighted cross-entropy plus L2, from zero.

    `targets` is (n, k) in [0, 1]: independent labels for "multilabel", one distribution per
    row for "multiclass". `weights` (n,) balances the classes and sources. Without
    `settings.batch`, each step reads every row, in float64. With it, each step reads a batch
    of that many rows, in an order drawn afresh every epoch from one seeded generator, in
    float32: on the customer's corpus, a head as good in a fifth of the time. Either way the
    same corpus and settings give the same head, to rounding.
    """
    dtype: type[np.floating[Any]] = np.float32 if settings.batch else np.float64
    x: np.ndarray = np.asarray(vectors, dtype=dtype)
    y: np.ndarray = np.asarray(targets, dtype=dtype)
    w: np.ndarray = (np.asarray(weights, dtype=np.float64) / float(np.mean(weights))).astype(dtype)
    n, k = y.shape
    used = np.unique(grams.columns) if grams is not None else np.zeros(0, np.int64)
    compact = (
        SparseRows(grams.n, used.size, grams.rows, np.searchsorted(used, grams.columns), grams.values)
        if grams is not None
        else None
    )
    params: list[np.ndarray] = [
        np.zeros((x.shape[1], k), dtype),
        np.zeros(k, dtype),
        np.zeros((used.size, k), dtype),
    ]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    l2 = settings.l2  # a Python float keeps float32 arrays float32
    rng = np.random.default_rng(0)
    step = 0
    for _ in range(settings.epochs):
        batches: list[np.ndarray | None] = [None]
        if settings.batch:
            order = rng.permutation(n)
            batches = [order[start : start + settings.batch] for start in range(0, n, settings.batch)]
        for rows in batches:
            if rows is None:
                xb, yb, wb, sparse = x, y, w, compact
            else:
                xb, yb, wb = x[rows], y[rows], w[rows]
                sparse = compact.select(rows) if compact is not None else None
            logits = xb @ params[0] + params[1]
            if sparse is not None:
                logits += sparse.dot(params[2]).astype(dtype, copy=False)
            # both cross-entropies: dL/dlogits = p - y; the batch's weighted mean estimates the whole's
            delta = (_output(logits, kind) - yb) * (wb[:, None] / len(wb))
            grads = [xb.T @ delta + l2 * params[0], delta.sum(axis=0), np.zeros_like(params[2])]
            if sparse is not None:
                grads[2] = sparse.transpose_dot(delta).astype(dtype, copy=False) + l2 * params[2]
            step += 1
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                first[i] = beta1 * first[i] + (1 - beta1) * g
                second[i] = beta2 * second[i] + (1 - beta2) * g * g
                p -= (
                    settings.learning_rate
                    * (first[i] / (1 - beta1**step))
                    / (np.sqrt(second[i] / (1 - beta2**step)) + eps)
                )
    return LinearWeights(
        params[0].astype(np.float32), params[1].astype(np.float32), used, params[2].astype(np.float32)
    )


def _output(logits: np.ndarray, kind: HeadKind) -> np.ndarray:
    if kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


__all__ = ["NGRAM_BUCKETS", "ExampleBank", "Head", "HeadKind", "LinearWeights", "TrainingSettings", "fit"]
