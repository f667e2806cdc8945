"""A small asyncio HTTP/1.1 client for the webhook and Alertmanager channels.

asyncio-native on purpose: a peer that hangs holds only its own coroutine, never a worker thread that
the other channels need. One request per connection (`Connection: close`), bounded by one time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.parse
from collections.abc import Mapping

from callguard.floor.channels.base import DeliveryError

_MAX_HEAD_BYTES = 64 * 1024
_ERROR_BODY_BYTES = 300


def origin(url: urllib.parse.SplitResult) -> str:
    """scheme://host:port of a URL: what error messages show (a webhook URL's path is often its secret)."""
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}"


async def post_json(
    url: urllib.parse.SplitResult,
    body: object,
    *,
    headers: Mapping[str, str],
    timeout: float,
    tls: ssl.SSLContext,
) -> None:
    """POST `body` as JSON to `url`; DeliveryError unless the answer is 2xx within `timeout` seconds."""
    payload = json.dumps(body, ensure_ascii=False).encode()
    where = origin(url)
    try:
        async with asyncio.timeout(timeout):
            status, reason, answer = await _exchange(url, _request(url, payload, headers), tls)
    except TimeoutError:
        raise DeliveryError(f"POST {where}: no answer within {timeout:g} s") from None
    except ssl.SSLError as error:
        raise DeliveryError(f"POST {where}: TLS failed: {error.reason or error}") from None
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        raise DeliveryError(f"POST {where}: {type(error).__name__}: {error}") from None
    if not 200 <= status < 300:
        text = answer.decode(errors="replace").strip()
        raise DeliveryError(f"POST {where}: HTTP {status} {reason}" + (f": {text}" if text else ""))


def _request(url: urllib.parse.SplitResult, payload: bytes, headers: Mapping[str, str]) -> bytes:
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {url.netloc.rpartition('@')[2]}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        "User-Agent: callguard-floor",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _exchange(
    url: urllib.parse.SplitResult, request: bytes, tls: ssl.SSLContext
) -> tuple[int, str, bytes]:
    """Sends the request; the status, reason and the start of the body (for an error message)."""
    https = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if https else 80)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls if https else None, server_hostname=host if https else None, limit=_MAX_HEAD_BYTES
    )
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        version, _, rest = status_line.decode("latin-1").strip().partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # the headers: nothing in them matters here
        answer = b"" if 200 <= int(code) < 300 else await reader.read(_ERROR_BODY_BYTES)
        return int(code), reason, answer
    finally:
        writer.close()
        # the answer is in; a peer that drops the connection at once is no failure
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
