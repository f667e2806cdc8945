"""`callguard serve` on one asyncio loop: uvicorn for the panels and the API, every enabled listener.

The models are loaded once (one per language, the same object when both use the same folder), the
shared resources built on them, and every call reads them. SIGTERM or SIGINT stops the listeners
(their streams end "shutdown"), ends every call, writes the store, and stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from callguard.core.config import Config
from callguard.core.errors import CallguardError, ConfigError
from callguard.live.daemon import kept_token, setup_logging
from callguard.live.serve.agents import AgentDirectory
from callguard.live.serve.app import create_app
from callguard.live.serve.host import ServeHost
from callguard.live.serve.hub import AgentHub
from callguard.live.serve.listeners import LISTENERS, enabled_listeners, server_tls
from callguard.pipeline.session import SharedResources
from callguard.sources.telephony.base import Listener

log = logging.getLogger("callguard.live.serve")
HTTP_CONNECTIONS = 2048  # panels (one stream each), the CTI and scripts


def token_file(config: Config) -> Path:
    return config.path(config.store.path).parent / "serve-token"


def admin_token(config: Config) -> str:
    """[serve] token, else the one generated at the first start and kept beside the store (mode 600)."""
    return config.serve.token or kept_token(token_file(config))


def load_shared(config: Config, model_override: str = "") -> dict[str, SharedResources]:
    """Each language's shared resources; a model folder used by both languages is loaded once."""
    from callguard.models.catalogue import configured_model_name, missing_model_notice, model_for_language
    from callguard.stages.asr import SpeechModel

    loaded: dict[Path, Any] = {}
    shared: dict[str, SharedResources] = {}
    for lang in ("en", "fr"):
        path = model_for_language(config, lang, model_override)
        model = None
        if path is None:
            notice = missing_model_notice(model_override or configured_model_name(config, lang), lang)
            log.warning("loudness-only for this language", extra={"fields": {"lang": lang, "notice": notice}})
        else:
            if path not in loaded:
                started = time.monotonic()
                loaded[path] = SpeechModel.load(path)
                seconds = round(time.monotonic() - started, 2)
                log.info(
                    "speech model loaded",
                    extra={"fields": {"lang": lang, "path": str(path), "seconds": seconds}},
                )
            model = loaded[path]
        shared[lang] = SharedResources.build(config, model)
    return shared


class ServeRunner:
    """The host, the app and the listeners; `run()` in the foreground, or `start()`/`stop()` on a thread."""

    def __init__(
        self,
        config: Config,
        *,
        model_override: str = "",
        transcripts: Path | None = None,
        registry: dict[str, str] | None = None,
        shared: dict[str, SharedResources] | None = None,
    ) -> None:
        self.config = config
        self.token = admin_token(config)
        self.agents = AgentDirectory(config.path(config.serve.agents_file))
        self.agents.refresh()
        if self.agents.last_error:
            raise ConfigError(self.agents.path, "", self.agents.last_error)
        self.hub = AgentHub()
        self.host = ServeHost(
            config, shared or load_shared(config, model_override), hub=self.hub, transcripts=transcripts
        )
        self.listeners: list[Listener] = enabled_listeners(
            config, LISTENERS if registry is None else registry, ssl=server_tls(config)
        )
        self.app = create_app(
            self.host, self.agents, self.token, bound_host=config.serve.host, port=config.serve.port
        )
        self.server: Any = None
        self.port = config.serve.port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    async def serve(self) -> None:
        """Signals are uvicorn's on the main thread (it ignores them on any other)."""
        import uvicorn

        serve = self.config.serve
        tls = bool(serve.tls_cert and serve.tls_key)
        hub = self.hub

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                hub.close()  # the panels' streams would hold the stop for the whole grace period
                super().handle_exit(sig, frame)
                # uvicorn raises the signal again once it has stopped, which would kill the process
                # before the listeners, the calls and the store are closed: serve() ends instead
                self._captured_signals.clear()

        config = uvicorn.Config(
            self.app,
            host=serve.host,
            port=serve.port,
            log_level="warning",
            proxy_headers=False,
            server_header=False,
            # every panel's stream holds a connection; past this a new one gets 503, the open ones go on
            limit_concurrency=HTTP_CONNECTIONS,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=3,
            lifespan="off",
            log_config=None,
            ssl_certfile=str(self.config.path(serve.tls_cert)) if tls else None,
            ssl_keyfile=str(self.config.path(serve.tls_key)) if tls else None,
        )
        self.server = Server(config)
        self.hub.bind(asyncio.get_running_loop())
        started: list[Listener] = []
        try:
            for listener in self.listeners:
                await listener.start(self.host)
                started.append(listener)
            server_task = asyncio.create_task(self.server.serve())
            while not self.server.started and not server_task.done():
                await asyncio.sleep(0.02)
            if server_task.done():
                server_task.result()
                raise OSError(f"cannot listen on {serve.host}:{serve.port} ([serve] host/port)")
            sockets = [s for srv in self.server.servers for s in srv.sockets]
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            log.info(
                "serve ready",
                extra={
                    "fields": {
                        "url": f"{'https' if serve.tls_cert else 'http'}://{serve.host}:{self.port}",
                        "listeners": [listener.name for listener in self.listeners],
                        "max_calls": serve.max_calls,
                    }
                },
            )
            self._ready.set()
            await server_task
        finally:
            for listener in started:
                try:
                    await listener.stop()
                except Exception:
                    log.exception("listener failed to stop", extra={"fields": {"listener": listener.name}})
            await asyncio.to_thread(self.host.shutdown)
            log.info("stopped")

    def run(self) -> int:
        try:
            asyncio.run(self.serve())
        except OSError as exc:
            log.error("cannot listen", extra={"fields": {"error": str(exc)}})
            return 1
        return 0

    # --- on a thread (tests, the bench) ------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        def main() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:
                log.exception("callguard serve failed")
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=main, name="serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise CallguardError(f"callguard serve did not start: {self._error!r}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.server is not None:
            self.hub.close()
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def listener(self, name: str) -> Listener:
        return next(listener for listener in self.listeners if listener.name == name)


def run_serve(config: Config, *, model_override: str = "", transcripts: Path | None = None) -> int:
    """`callguard serve`: runs until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(config.daemon.log_level)
    try:
        runner = ServeRunner(config, model_override=model_override, transcripts=transcripts)
    except ConfigError as exc:
        log.error(
            "invalid configuration",
            extra={"fields": {"source": exc.source, "key": exc.key, "problem": exc.problem}},
        )
        return 2
    except CallguardError as exc:
        log.error("cannot start", extra={"fields": {"problem": str(exc)}})
        return 2
    if not runner.config.serve.token:
        log.info("admin token kept beside the store", extra={"fields": {"path": str(token_file(config))}})
    return runner.run()
