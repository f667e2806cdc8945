"""The Twilio Media Streams listener on 127.0.0.1, driven by streamdouble (an independent Twilio Media
Streams simulator, PyPI) and by raw WebSocket clients for what streamdouble cannot send (bad messages,
floods). What the listener hands the host is read through CallRecorder, the host's side of the contract.

Twilio's cloud is the one thing that cannot run here: it signs every upgrade request with the account's
auth token (X-Twilio-Signature) and streamdouble does not, so `signed_streamdouble` adds the header
Twilio would add, computed by Twilio's published algorithm. That is the only stand-in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import subprocess
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import streamdouble.session
import websockets
from streamdouble import api as streamdouble_api
from streamdouble import audio as streamdouble_audio
from streamdouble.chaos import Impairments
from streamdouble.session import SessionConfig
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callguard.audio.g711 import encode_ulaw
from callguard.core.config import Config, TwilioConfig
from callguard.core.errors import ConfigError
from callguard.sources.telephony.signatures import twilio_signature
from callguard.sources.telephony.twilio import TwilioListener
from scripts.make_fixtures import DEFAULT_OUT_DIR, build
from tests.sources.telephony.call_recorder import (
    CallRecorder,
    RecordedCall,
    correlation,
    stereo_excerpt,
    until,
)

TOKEN = "test-auth-token-0123456789abcdef"
EXCERPT = (8.0, 15.0)  # the customer swears (8.0-10.4 s), the agent answers (12.0-14.6 s)
FRAME = 160


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    """The stereo abusive call's excerpt: (customer, agent) PCM and each as an 8 kHz mono WAV."""
    call = build(["abusive_stereo_en_ulaw"], DEFAULT_OUT_DIR)["abusive_stereo_en_ulaw"]
    customer, agent = stereo_excerpt(call, *EXCERPT)
    folder = tmp_path_factory.mktemp("twilio")
    paths = folder / "customer.wav", folder / "agent.wav"
    for path, pcm in zip(paths, (customer, agent), strict=True):
        sf.write(path, pcm, 8000, subtype="PCM_16")
    return customer, agent, *paths


@asynccontextmanager
async def listening(
    handshake_timeout_s: float = 5.0, **settings: Any
) -> AsyncIterator[tuple[TwilioListener, CallRecorder]]:
    listener = TwilioListener(replace(TwilioConfig(), port=0, **settings), TOKEN)
    listener.handshake_timeout_s = handshake_timeout_s
    host = CallRecorder()
    await listener.start(host)
    try:
        yield listener, host
    finally:
        await listener.stop()


def url_of(listener: TwilioListener, path: str = "/twilio") -> str:
    return f"ws://127.0.0.1:{listener.bound_port}{path}"


@pytest.fixture
def signed_streamdouble(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """streamdouble's connections carry X-Twilio-Signature, as Twilio's would (see the module docstring)."""

    def signed_connect(url: str, **kwargs: Any) -> Any:
        return websockets.connect(
            url, additional_headers={"X-Twilio-Signature": twilio_signature(TOKEN, url)}, **kwargs
        )

    shim = types.SimpleNamespace(connect=signed_connect, ConnectionClosed=websockets.ConnectionClosed)
    monkeypatch.setattr(streamdouble.session, "websockets", shim)
    yield


async def raw_stream(listener: TwilioListener, token: str = TOKEN, **kwargs: Any) -> ClientConnection:
    url = url_of(listener)
    return await connect(
        url, additional_headers={"X-Twilio-Signature": twilio_signature(token, url)}, **kwargs
    )


def start(sid: str, **params: str) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"streamSid": sid, "callSid": "CA" + sid[2:], "accountSid": "AC0",
                  "tracks": ["inbound", "outbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": params},
    })  # fmt: skip


def media(sid: str, timestamp_ms: int, payload: bytes, track: str = "inbound") -> str:
    return json.dumps({
        "event": "media", "streamSid": sid,
        "media": {"track": track, "chunk": "1", "timestamp": str(timestamp_ms),
                  "payload": base64.b64encode(payload).decode()},
    })  # fmt: skip


def frames_of(pcm: np.ndarray) -> list[bytes]:
    data = encode_ulaw(pcm)
    return [data[i : i + FRAME] for i in range(0, len(data) - FRAME + 1, FRAME)]


# -------------------------------------------------------------------------------- streamdouble


PARAMETERS = {
    "agent_id": "agent-7",
    "customer_name": "Mark Dunn",
    "company": "Northwind Broadband",
    "agentName": "Sam",  # camelCase, as TwiML authors write them
    "language": "en-US",
    "queue": "billing",
    "crm_ticket": "T-42",  # not a call fact: kept for the log
}


def test_streamdouble_streams_clean_lossy_and_jittery_reach_the_host_whole(
    excerpt: tuple[np.ndarray, np.ndarray, Path, Path], signed_streamdouble: None
) -> None:
    """Three forks of the excerpt at once (<Start><Stream track="both_tracks">), one on a clean line, one
    losing 5% of the caller's frames, one with up to 30 ms of jitter on each frame: each call's roles,
    facts, durations and audio, and each role's timeline contiguous."""
    customer, agent, customer_wav, agent_wav = excerpt
    agent_frames = streamdouble_audio.wav_to_ulaw_frames(agent_wav)
    networks = {
        "clean": Impairments(),
        "lossy": Impairments(loss=0.05),
        "jittery": Impairments(jitter_ms=30),
    }

    async def main() -> tuple[dict[str, Any], CallRecorder]:
        async with listening() as (listener, host):
            configs = {
                name: SessionConfig(
                    fork=True, tracks=["inbound", "outbound"], agent_frames=agent_frames,
                    custom_parameters={**PARAMETERS, "call_id": f"call-{name}"},
                    impairments=impairments, chaos_seed=7, quiet_period_s=0.2,
                )
                for name, impairments in networks.items()
            }  # fmt: skip
            reports = await asyncio.gather(*(
                streamdouble_api.call(url_of(listener), audio_path=customer_wav, config=config)
                for config in configs.values()
            ))  # fmt: skip
            await until(lambda: all(call.ends for call in host.calls))
            return dict(zip(configs, reports, strict=True)), host

    reports, host = asyncio.run(main())
    assert len(host.calls) == 3
    frames = len(customer) // FRAME
    for name, report in reports.items():
        call = host.call(report.stream_sid)
        start = call.start
        assert start.protocol == "twilio" and start.agent_id == "agent-7"
        assert start.facts.call_id == f"call-{name}"
        assert (start.facts.customer_name, start.facts.company, start.facts.agent_name) == (
            "Mark Dunn", "Northwind Broadband", "Sam",
        )  # fmt: skip
        assert (start.facts.language, start.facts.queue) == ("en", "billing")
        assert (
            start.extra["crm_ticket"] == "T-42" and start.extra["callSid"] == report.result.identity.call_sid
        )
        assert start.remote.startswith("127.0.0.1:")
        assert call.ends == ["stop"]
        for role in ("customer", "agent"):
            assert call.contiguous(role), f"{name}: the {role}'s blocks are not contiguous"
            assert {b.rate for b in call.of(role)} == {8000}

        # the agent's leg is never impaired: the whole excerpt, sample for sample
        heard_agent = call.pcm("agent")
        assert len(heard_agent) == frames * FRAME
        assert correlation(heard_agent, agent) > 0.999
        # the caller's: every frame is the source's or, where the network lost it, silence
        heard = call.pcm("customer")
        dropped = report.result.frames_dropped
        assert frames - dropped <= len(heard) // FRAME <= frames
        kept = silent = 0
        for i in range(len(heard) // FRAME):
            got, sent = heard[i * FRAME : (i + 1) * FRAME], customer[i * FRAME : (i + 1) * FRAME]
            if np.array_equal(got, sent):
                kept += 1
            else:
                assert not got.any(), f"{name}: frame {i} is neither the source's nor silence"
                silent += 1
        assert silent <= dropped
        assert kept >= frames - dropped
        if name == "lossy":
            assert dropped > 5 and correlation(heard, customer) > 0.9
        else:
            assert dropped == 0 and silent == 0 and correlation(heard, customer) > 0.999


# --------------------------------------------------------------------------------- signatures


def test_an_upgrade_twilio_did_not_sign_is_refused_before_it_happens() -> None:
    async def status(listener: TwilioListener, path: str = "/twilio", **headers: str) -> int:
        try:
            async with connect(url_of(listener, path), additional_headers=headers):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    async def main() -> None:
        async with listening() as (listener, host):
            url = url_of(listener)
            assert await status(listener) == 403
            assert (
                await status(listener, **{"X-Twilio-Signature": twilio_signature("another token", url)})
                == 403
            )
            assert await status(listener, **{"X-Twilio-Signature": "garbage"}) == 403
            assert await status(listener, **{"X-Twilio-Signature": twilio_signature(TOKEN, url)}) == 101
            assert (
                await status(listener, "/elsewhere", **{"X-Twilio-Signature": twilio_signature(TOKEN, url)})
                == 404
            )
            assert host.calls == []
        # behind a proxy Twilio signs the public URL, not ours
        public = "wss://calls.example.com/twilio"
        async with listening(public_url=public) as (listener, _):
            assert (
                await status(listener, **{"X-Twilio-Signature": twilio_signature(TOKEN, url_of(listener))})
                == 403
            )
            assert await status(listener, **{"X-Twilio-Signature": twilio_signature(TOKEN, public)}) == 101

    asyncio.run(main())


def test_a_missing_auth_token_file_is_a_startup_error_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(Config(), base_dir=tmp_path)
    with pytest.raises(ConfigError) as missing:
        TwilioListener.from_config(config)
    assert str(tmp_path / "twilio-auth-token") in str(missing.value) and "not found" in str(missing.value)
    (tmp_path / "twilio-auth-token").write_text("two words\n")
    with pytest.raises(ConfigError, match="alone, on one line"):
        TwilioListener.from_config(config)
    (tmp_path / "twilio-auth-token").write_text(TOKEN + "\n")
    (tmp_path / "twilio-auth-token").chmod(0o644)
    assert TwilioListener.from_config(config).name == "twilio"
    assert "can be read by other users" in caplog.text
    caplog.clear()
    (tmp_path / "twilio-auth-token").chmod(0o600)
    TwilioListener.from_config(config)
    assert "can be read by other users" not in caplog.text


# ------------------------------------------------------------------------------------ bad input


def test_bad_messages_cost_a_log_line_not_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """Malformed JSON, unknown events, bad base64, another stream's messages, repeated, reordered and
    lost frames, on one stream, while a clean stream runs beside it."""
    caplog.set_level(logging.INFO, logger="callguard.sources.telephony")
    tone = (np.sin(np.arange(FRAME * 10) * 0.3) * 8000).astype(np.int16)
    frames = frames_of(tone)

    async def clean(listener: TwilioListener) -> None:
        async with await raw_stream(listener) as ws:
            await ws.send(start("MZclean"))
            for i, frame in enumerate(frames):
                await ws.send(media("MZclean", 20 * i, frame))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZclean"}))
            await ws.wait_closed()

    async def messy(listener: TwilioListener) -> None:
        async with await raw_stream(listener) as ws:
            await ws.send(media("MZmessy", 0, frames[0]))  # before start
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(start("MZmessy", call_id="messy"))
            await ws.send("{not json")
            await ws.send("[1, 2]")
            await ws.send(json.dumps({"event": "transcription", "streamSid": "MZmessy"}))
            await ws.send(b"\x00\x01binary")
            await ws.send(json.dumps({"event": "media", "streamSid": "MZmessy", "media": {"track": "inbound",
                                      "timestamp": "0", "payload": "%%% not base64"}}))  # fmt: skip
            await ws.send(media("MZmessy", 0, frames[0], track="sideways"))
            await ws.send(media("MZother", 0, frames[0]))
            order = [
                0,
                1,
                1,
                3,
                2,
                4,
                0,
                7,
                8,
                9,
            ]  # a repeat, a swap (2 comes late), 5 and 6 lost, an old one
            for i in order:
                await ws.send(media("MZmessy", 20 * i, frames[i]))
            await ws.send(
                json.dumps(
                    {
                        "event": "dtmf",
                        "streamSid": "MZmessy",
                        "dtmf": {"track": "inbound_track", "digit": "5"},
                    }
                )
            )
            await ws.send(json.dumps({"event": "dtmf", "streamSid": "MZmessy", "dtmf": {"digit": "Z"}}))
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZmessy", "mark": {"name": "m1"}}))
            await ws.send(media("MZmessy", 0, frames[0], track="outbound"))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZmessy"}))
            await ws.wait_closed()

    async def main() -> CallRecorder:
        async with listening() as (listener, host):
            await asyncio.gather(clean(listener), messy(listener))
            await until(lambda: len(host.calls) == 2 and all(c.ends for c in host.calls))
            return host

    host = asyncio.run(main())
    good = host.call("MZclean")
    assert good.ends == ["stop"] and good.contiguous("customer")
    assert len(good.pcm("customer")) == 10 * FRAME and correlation(good.pcm("customer"), tone) > 0.999
    call = host.call("MZmessy")
    assert call.ends == ["stop"] and call.start.facts.call_id == "messy"
    heard = call.pcm("customer")
    assert call.contiguous("customer") and len(heard) == 10 * FRAME
    decoded = np.split(heard, 10)
    expected_kept = {0, 1, 3, 4, 7, 8, 9}
    for i, got in enumerate(decoded):
        if i in expected_kept:
            assert correlation(got, tone[i * FRAME : (i + 1) * FRAME]) > 0.999, f"frame {i}"
        else:
            assert not got.any(), f"frame {i} (lost or late) should be silence"
    assert call.keys == [("5", pytest.approx(0.2))]
    assert len(call.pcm("agent")) == FRAME and call.contiguous("agent")
    logged = caplog.text
    for kind in (
        "media before start", "malformed JSON", "not a JSON object", "unknown event", "binary message",
        "bad timestamp or payload", "unknown track", "another streamSid", "repeated or late media",
        "dtmf of an unknown digit",
    ):  # fmt: skip
        assert kind in logged, kind
    assert "MZmessy: ended (stop)" in logged


def test_an_oversized_message_ends_only_its_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callguard.sources.telephony")

    async def main() -> CallRecorder:
        async with listening() as (listener, host):
            big, fine = await raw_stream(listener), await raw_stream(listener)
            await big.send(start("MZbig"))
            await fine.send(start("MZfine"))
            await big.send(media("MZbig", 0, b"\xff" * 100_000))
            with pytest.raises(ConnectionClosed) as closed:
                await big.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await fine.send(media("MZfine", 0, b"\xff" * FRAME))
            await fine.send(json.dumps({"event": "stop", "streamSid": "MZfine"}))
            await fine.wait_closed()
            await until(lambda: all(c.ends for c in host.calls))
            return host

    host = asyncio.run(main())
    assert host.call("MZbig").ends == ["error: a message over 65536 bytes"]
    assert host.call("MZfine").ends == ["stop"] and len(host.call("MZfine").pcm("customer")) == FRAME
    assert "a message over 65536 bytes" in caplog.text


def test_a_stream_that_stops_mid_call_ends_as_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callguard.sources.telephony")

    async def main() -> tuple[CallRecorder, int | None]:
        async with listening(idle_timeout_s=0.5) as (listener, host), await raw_stream(listener) as ws:
            await ws.send(start("MZquiet"))
            await ws.send(media("MZquiet", 0, b"\xff" * FRAME))
            await ws.wait_closed()  # the client says nothing more; the server gives up
            return host, ws.close_code

    host, code = asyncio.run(main())
    assert host.call("MZquiet").ends == ["timeout"] and code == 1001
    assert "no message for 0.5 s" in caplog.text


def test_a_connection_that_vanishes_mid_call_ends_as_an_error() -> None:
    async def main() -> RecordedCall:
        async with listening() as (listener, host):
            ws = await raw_stream(listener)
            await ws.send(start("MZgone"))
            await ws.send(media("MZgone", 0, b"\xff" * FRAME))
            await until(lambda: len(host.calls) == 1 and len(host.calls[0].blocks) == 1)
            ws.transport.abort()  # no close frame, no stop: the TCP connection is simply gone
            await until(lambda: bool(host.calls[0].ends))
            return host.calls[0]

    assert asyncio.run(main()).ends == ["error: connection lost"]


def test_a_flood_of_connections_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callguard.sources.telephony")

    async def main() -> None:
        async with listening(max_connections=3) as (listener, host):
            held = [await raw_stream(listener) for _ in range(3)]
            for attempt in range(5):
                with pytest.raises(InvalidStatus) as refused:
                    await raw_stream(listener)
                assert refused.value.response.status_code == 503, attempt
            await held.pop().close()
            await until(lambda: listener.open_streams == 2)
            async with await raw_stream(listener) as ws:  # room again
                await ws.send(start("MZafter"))
                await until(lambda: len(host.calls) == 1)
            for ws in held:
                await ws.close()

    asyncio.run(main())
    assert "3 streams open, the most this input takes" in caplog.text


def test_a_call_the_host_refuses_is_closed_1013() -> None:
    async def main() -> tuple[int | None, str | None]:
        async with listening() as (listener, host):
            host.refusing = True
            async with await raw_stream(listener) as ws:
                await ws.send(start("MZbusy"))
                await ws.wait_closed()
                return ws.close_code, ws.close_reason

    code, reason = asyncio.run(main())
    assert code == 1013 and reason is not None and "at its call limit" in reason


def test_stop_ends_every_open_stream_as_shutdown() -> None:
    async def main() -> tuple[RecordedCall, int | None]:
        listener = TwilioListener(replace(TwilioConfig(), port=0), TOKEN)
        host = CallRecorder()
        await listener.start(host)
        ws = await raw_stream(listener)
        await ws.send(start("MZlast"))
        await until(lambda: len(host.calls) == 1)
        await listener.stop()
        await ws.wait_closed()
        return host.calls[0], ws.close_code

    call, code = asyncio.run(main())
    assert call.ends == ["shutdown"] and code == 1001


def test_half_open_connections_are_dropped_after_the_handshake_timeout() -> None:
    """A flood of sockets that never send their upgrade request: each is closed after the handshake
    timeout, and a real stream is served meanwhile."""

    async def main() -> tuple[list[bytes], RecordedCall]:
        async with listening(handshake_timeout_s=0.3) as (listener, host):
            silent = [await asyncio.open_connection("127.0.0.1", listener.bound_port) for _ in range(20)]
            async with await raw_stream(listener) as ws:
                await ws.send(start("MZreal"))
                await ws.send(json.dumps({"event": "stop", "streamSid": "MZreal"}))
                await ws.wait_closed()
            eofs = [await asyncio.wait_for(reader.read(), 3) for reader, _ in silent]
            for _, writer in silent:
                writer.close()
            return eofs, host.call("MZreal")

    eofs, call = asyncio.run(main())
    assert call.ends == ["stop"]
    assert all(data == b"" for data in eofs)  # closed by the server, not a byte sent


def test_wss_when_the_host_passes_a_tls_context(tmp_path: Path) -> None:
    """[serve] tls_cert/tls_key set: the host hands the listener an SSL context; Twilio then connects
    with wss:// and signs that URL."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def main() -> tuple[RecordedCall, int]:
        listener = TwilioListener(replace(TwilioConfig(), port=0), TOKEN, ssl=server_context)
        host = CallRecorder()
        await listener.start(host)
        try:
            url = f"wss://127.0.0.1:{listener.bound_port}/twilio"
            with pytest.raises(InvalidStatus) as plain_signed:  # signed as ws://: not the URL Twilio used
                await connect(url, ssl=client_context, additional_headers={
                    "X-Twilio-Signature": twilio_signature(TOKEN, url.replace("wss:", "ws:"))})  # fmt: skip
            signature = {"X-Twilio-Signature": twilio_signature(TOKEN, url)}
            async with connect(url, ssl=client_context, additional_headers=signature) as ws:
                await ws.send(start("MZtls"))
                await ws.send(media("MZtls", 0, b"\xff" * FRAME))
                await ws.send(json.dumps({"event": "stop", "streamSid": "MZtls"}))
                await ws.wait_closed()
            return host.call("MZtls"), plain_signed.value.response.status_code
        finally:
            await listener.stop()

    call, status = asyncio.run(main())
    assert status == 403 and call.ends == ["stop"] and len(call.pcm("customer")) == FRAME
