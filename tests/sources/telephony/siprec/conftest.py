"""The SIPREC tests' shared fixture: an excerpt of a fixture call with both speakers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from scripts.make_fixtures import DEFAULT_OUT_DIR, build

EXCERPT = (8.0, 15.0)  # the customer shouting (8.0-10.4 s), then the agent (12.0-14.6 s)


@pytest.fixture(scope="session")
def call_excerpt() -> dict[str, np.ndarray]:
    """Both channels of the fixture's excerpt, as the int16 PCM its μ-law codes decode to."""
    path = build(["abusive_stereo_en_ulaw"], DEFAULT_OUT_DIR)["abusive_stereo_en_ulaw"]
    pcm, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000 and pcm.shape[1] == 2
    a, b = (int(x * rate) for x in EXCERPT)
    return {"customer": np.ascontiguousarray(pcm[a:b, 0]), "agent": np.ascontiguousarray(pcm[a:b, 1])}
