"""What the semantic head reads of an utterance: sentence vectors and hashed word n-grams.

Sentence vectors (see `encoder`) carry the meaning; they blur wording, and a threat and its
harmless twin ("i know where your office is" / "... i'll bring the form in") can sit close
together. Word uni- and bigrams, hashed into a fixed number of buckets, carry the wording
itself. The head weighs both (a linear model on the two side by side).

A sparse block is (row, column, value) triples: the head's training multiplies through it with
`np.bincount`, so neither SciPy nor a sparse-matrix library is needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

NGRAM_BUCKETS = 1 << 18
NGRAM_ORDERS = (1, 2)


@dataclass(frozen=True)
class SparseRows:
    """An (n, width) matrix stored as its non-zero entries."""

    n: int
    width: int
    rows: np.ndarray  # int64
    columns: np.ndarray  # int64
    values: np.ndarray  # float64

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """(n, k) = self @ weights[(width, k)]."""
        out = np.zeros((self.n, weights.shape[1]))
        for k in range(weights.shape[1]):
            out[:, k] = np.bincount(self.rows, self.values * weights[self.columns, k], minlength=self.n)
        return out

    @cached_property
    def row_starts(self) -> np.ndarray:
        """(n + 1,) where each row's entries begin (rows are stored in order), once per block."""
        return np.searchsorted(self.rows, np.arange(self.n + 1))

    def select(self, order: np.ndarray) -> SparseRows:
        """The rows `order` (indices into self), in that order, as a new block."""
        starts = self.row_starts
        lengths = starts[order + 1] - starts[order]
        new_rows = np.repeat(np.arange(order.size), lengths)
        # each entry's position: its row's start, plus its rank within the row
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        picked = np.repeat(starts[order], lengths) + within
        return SparseRows(order.size, self.width, new_rows, self.columns[picked], self.values[picked])

    def transpose_dot(self, delta: np.ndarray) -> np.ndarray:
        """(width, k) = self.T @ delta[(n, k)]."""
        out = np.zeros((self.width, delta.shape[1]))
        for k in range(delta.shape[1]):
            out[:, k] = np.bincount(self.columns, self.values * delta[self.rows, k], minlength=self.width)
        return out


def ngram_buckets(text: str) -> dict[int, float]:
    """One utterance's hashed word n-grams, L2-normalised counts by bucket."""
    words = text.split()
    counts: dict[int, float] = {}
    for order in NGRAM_ORDERS:
        for i in range(len(words) - order + 1):
            gram = " ".join(words[i : i + order])
            bucket = zlib.crc32(gram.encode("utf-8")) % NGRAM_BUCKETS  # stable across runs and machines
            counts[bucket] = counts.get(bucket, 0.0) + 1.0
    norm = float(np.sqrt(sum(v * v for v in counts.values()))) or 1.0
    return {bucket: value / norm for bucket, value in counts.items()}


def ngram_rows(texts: Sequence[str]) -> SparseRows:
    rows: list[int] = []
    columns: list[int] = []
    values: list[float] = []
    for r, text in enumerate(texts):
        for bucket, value in ngram_buckets(text).items():
            rows.append(r)
            columns.append(bucket)
            values.append(value)
    return SparseRows(
        len(texts), NGRAM_BUCKETS, np.array(rows, np.int64), np.array(columns, np.int64), np.array(values)
    )
