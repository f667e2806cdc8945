"""The listener registry as the lead plugs the other protocols in: "module:Class.from_config", imported
only when its [serve.NAME] is enabled, given the server's TLS context when it takes one, started on the
host's loop and stopped with it; an enabled protocol that cannot be loaded is an error naming it."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from callguard.core.config import Config, load_config
from callguard.core.errors import CallguardError
from callguard.live.serve.listeners import enabled_listeners
from callguard.live.serve.runner import ServeRunner, load_shared
from callguard.sources.telephony.base import CallHost
from tests.live.serve.peers import serve_config

STARTED: list[str] = []


class LineCounter:
    """A Listener of the test's own: it only records that the host started and stopped it."""

    name = "twilio"

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls

    @classmethod
    def from_config(cls, config: Config, *, ssl: ssl.SSLContext | None = None) -> LineCounter:
        assert config.serve.twilio.enabled
        return cls(ssl)

    async def start(self, host: CallHost) -> None:
        STARTED.append("start")

    async def stop(self) -> None:
        STARTED.append("stop")


def plain(config: Config) -> Any:
    return LineCounter(None)


def certificate(folder: Path) -> str:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return f'tls_cert = "{cert}"\ntls_key = "{key}"'


def test_a_registered_listener_gets_the_tls_context_and_runs_with_the_host(tmp_path: Path) -> None:
    path = serve_config(tmp_path, serve=certificate(tmp_path))
    path.write_text(path.read_text() + "[serve.twilio]\nenabled = true\n")
    config = load_config(path)
    registry = {"twilio": f"{__name__}:LineCounter.from_config", "audiohook": "no.such.module:listener"}
    runner = ServeRunner(config, registry=registry, shared=load_shared(config))
    (listener,) = runner.listeners  # audiohook is not enabled: never imported (nor audiosocket, not listed)
    assert isinstance(listener, LineCounter) and isinstance(listener.tls, ssl.SSLContext)
    STARTED.clear()
    runner.start()
    runner.stop()
    assert STARTED == ["start", "stop"]


def test_an_enabled_protocol_that_cannot_be_loaded_names_its_section(tmp_path: Path) -> None:
    path = serve_config(tmp_path)
    path.write_text(path.read_text() + "[serve.siprec]\nenabled = true\n")
    config = load_config(path)
    with pytest.raises(
        CallguardError, match=r"\[serve.siprec\] is enabled but its protocol cannot be loaded"
    ):
        enabled_listeners(config, {"siprec": "callguard.sources.telephony.no_such_protocol:listener"})
    with pytest.raises(CallguardError, match=r"has no listener factory 'Nothing.here'"):
        enabled_listeners(config, {"siprec": f"{__name__}:Nothing.here"})
    (listener,) = enabled_listeners(config, {"siprec": f"{__name__}:plain"})  # no ssl parameter: not given
    assert listener.tls is None
