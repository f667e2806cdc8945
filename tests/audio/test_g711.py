"""G.711 tables against libsndfile's own μ-law and A-law decoders (an independent implementation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from callguard.audio.g711 import decode_alaw, decode_ulaw, encode_alaw, encode_ulaw


@pytest.mark.parametrize(("subtype", "decode"), [("ULAW", decode_ulaw), ("ALAW", decode_alaw)])
def test_every_code_decodes_as_libsndfile_does(subtype: str, decode: object) -> None:
    codes = bytes(range(256))
    # a headerless raw file of the 256 codes, read back by libsndfile as int16
    theirs = sf.read(
        io.BytesIO(codes), samplerate=8000, channels=1, format="RAW", subtype=subtype, dtype="int16"
    )[0]
    assert np.array_equal(decode(codes), theirs)  # type: ignore[operator]


@pytest.mark.parametrize(("encode", "decode"), [(encode_ulaw, decode_ulaw), (encode_alaw, decode_alaw)])
def test_encoding_round_trips_within_a_step(encode: object, decode: object) -> None:
    pcm = (np.sin(np.linspace(0, 60, 8000)) * 20000).astype(np.int16)
    back = decode(encode(pcm))  # type: ignore[operator]
    assert np.abs(back.astype(np.int32) - pcm).max() < 0.04 * np.abs(pcm).max()
    assert np.array_equal(decode(encode(back)), back)  # type: ignore[operator]  # codes are fixed points
