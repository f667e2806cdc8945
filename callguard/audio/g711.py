"""G.711 μ-law and A-law (ITU-T G.711), the codecs of telephone streams: byte -> int16 by table.

A 256-entry table per law, built once from the standard's segment formula, so a packet of 160
bytes decodes with one numpy index (no audioop: it left the standard library in Python 3.13).
"""

from __future__ import annotations

import numpy as np


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TO_PCM = _ulaw_table()
ALAW_TO_PCM = _alaw_table()
ULAW_SILENCE = 0xFF  # the μ-law byte of zero, what a stream sends when nobody speaks
ALAW_SILENCE = 0xD5


def decode_ulaw(payload: bytes) -> np.ndarray:
    return ULAW_TO_PCM[np.frombuffer(payload, dtype=np.uint8)]


def decode_alaw(payload: bytes) -> np.ndarray:
    return ALAW_TO_PCM[np.frombuffer(payload, dtype=np.uint8)]


def encode_ulaw(pcm: np.ndarray) -> bytes:
    """int16 -> μ-law (the nearest code), for tests and peers that send what they were given."""
    return _encode(pcm, ULAW_TO_PCM)


def encode_alaw(pcm: np.ndarray) -> bytes:
    return _encode(pcm, ALAW_TO_PCM)


def _encode(pcm: np.ndarray, table: np.ndarray) -> bytes:
    order = np.argsort(table, kind="stable")
    levels = table[order].astype(np.int32)
    x = np.asarray(pcm, dtype=np.int32)
    i = np.clip(np.searchsorted(levels, x), 1, len(levels) - 1)
    nearer_below = (x - levels[i - 1]) <= (levels[i] - x)
    return order[np.where(nearer_below, i - 1, i)].astype(np.uint8).tobytes()
