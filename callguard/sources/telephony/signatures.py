"""Who may open a telephony stream: the two request signatures the WebSocket inputs check.

- **RFC 9421 HTTP Message Signatures**, the `hmac-sha256` algorithm, as Genesys AudioHook signs its
  upgrade request (`Signature-Input` / `Signature`, keyid = the API key, the client secret as key).
  `verify_request` rebuilds the signature base from the request (RFC 9421 §2.5), checks the time
  parameters and a nonce against replay, and compares in constant time; `sign_request` is its other
  half, for clients and tests. The structured fields (RFC 8941) those two headers carry are parsed
  strictly and serialized back, so the `@signature-params` line is our own canonical encoding.
- **Twilio's `X-Twilio-Signature`**: base64 HMAC-SHA1, keyed by the account's auth token, of the full
  URL followed by the sorted POST parameters (none for a WebSocket GET).

Pure functions over plain values: no sockets, no clock (callers pass `now`), no files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# ------------------------------------------------------------------ structured fields (RFC 8941)


class Token(str):
    """An sf-token (a bare word, not a quoted string)."""


BareItem = int | str | bytes | bool  # str includes Token
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Params = ()


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


class StructuredFieldError(ValueError):
    """A header value that is not the structured field it should be (names what and where)."""


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def fail(self, what: str) -> StructuredFieldError:
        return StructuredFieldError(f"{what} at character {self.i} of {self.text[:200]!r}")

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.text, self.i)
        if not found:
            raise self.fail(f"expected {what}")
        self.i = found.end()
        return found.group()

    def dictionary(self) -> dict[str, Item | InnerList]:
        members: dict[str, Item | InnerList] = {}
        self.skip(" ")
        while self.peek():
            key = self.match(_KEY, "a key")
            if self.peek() == "=":
                self.i += 1
                members[key] = self.inner_list() if self.peek() == "(" else self.item()
            else:
                members[key] = Item(True, self.params())
            self.skip(" \t")
            if not self.peek():
                break
            if self.peek() != ",":
                raise self.fail("expected ','")
            self.i += 1
            self.skip(" \t")
            if not self.peek():
                raise self.fail("trailing ','")
        return members

    def inner_list(self) -> InnerList:
        self.i += 1  # "("
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("expected ' ' or ')' in an inner list")

    def item(self) -> Item:
        return Item(self.bare_item(), self.params())

    def params(self) -> Params:
        params: list[tuple[str, BareItem]] = []
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            key = self.match(_KEY, "a parameter key")
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare_item()
            params = [(k, v) for k, v in params if k != key] + [(key, value)]
        return tuple(params)

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            self.i += 1
            encoded = self.match(_BASE64, "base64")
            if self.peek() != ":":
                raise self.fail("expected ':' closing a byte sequence")
            self.i += 1
            try:
                return base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise self.fail("bad base64 in a byte sequence") from None
        if c == "?":
            self.i += 1
            flag = self.peek()
            if flag not in ("0", "1"):
                raise self.fail("expected ?0 or ?1")
            self.i += 1
            return flag == "1"
        if c == "-" or c.isdigit():
            number = self.match(_INTEGER, "an integer")
            if self.peek() == ".":
                raise self.fail("decimals are not supported")
            return int(number)
        return Token(self.match(_TOKEN, "a string, token, integer, byte sequence or boolean"))

    def string(self) -> str:
        self.i += 1
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unterminated string")
            self.i += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise self.fail("bad escape in a string")
                self.i += 1
                out.append(escaped)
            elif not (0x20 <= ord(c) <= 0x7E):
                raise self.fail("non-printable character in a string")
            else:
                out.append(c)


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """An sf-dictionary (RFC 8941 §4.2.2), strictly: decimals are refused (no field here uses them)."""
    return _Parser(text.strip()).dictionary()


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Token):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare_item(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + serialize_params(inner.params)


# ----------------------------------------------------------------- HTTP message signatures (RFC 9421)


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers of an HTTP request: its method, target, authority and header fields."""

    method: str
    target: str  # the request target as sent: path and query ("/audiohook?x=1")
    authority: str  # the Host header
    headers: Mapping[str, Sequence[str]]  # lower-case field name -> each value as received
    scheme: str = "https"

    @classmethod
    def of(
        cls, method: str, target: str, headers: Iterable[tuple[str, str]], scheme: str = "https"
    ) -> SignedRequest:
        fields: dict[str, list[str]] = {}
        for name, value in headers:
            fields.setdefault(name.lower(), []).append(value)
        authority = ", ".join(fields.get("host", []))
        return cls(method.upper(), target, authority, fields, scheme)

    def header(self, name: str) -> str | None:
        """A field's value as RFC 9421 §2.1 covers it: each value trimmed, obs-fold gone, joined by ', '."""
        values = self.headers.get(name.lower())
        if not values:
            return None
        return ", ".join(re.sub(r"[ \t]*\r\n[ \t]+", " ", v).strip() for v in values)

    def derived(self, name: str) -> str | None:
        path, _, query = self.target.partition("?")
        match name:
            case "@method":
                return self.method
            case "@authority":
                return _normalise_authority(self.authority, self.scheme)
            case "@scheme":
                return self.scheme.lower()
            case "@request-target":
                return self.target
            case "@path":
                return path or "/"
            case "@query":
                return "?" + query
            case "@target-uri":
                authority = _normalise_authority(self.authority, self.scheme)
                return f"{self.scheme.lower()}://{authority}{self.target}"
        return None


def _normalise_authority(authority: str, scheme: str) -> str:
    authority = authority.strip().lower()
    default = {"https": ":443", "wss": ":443", "http": ":80", "ws": ":80"}.get(scheme.lower())
    return authority.removesuffix(default) if default else authority


class SignatureRejected(Exception):
    """A request whose signature does not hold: `code` is a stable word, `reason` says why."""

    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class SignaturePolicy:
    """What a verifier demands beyond a matching HMAC."""

    required: tuple[str, ...] = ()  # components the signature must cover
    max_age_s: float | None = None  # refuse a `created` older than this; None = no age limit
    skew_s: float = 3.0  # clock difference allowed between the signer and us
    require_nonce: bool = False
    min_nonce_chars: int = 0


@dataclass(frozen=True)
class Verified:
    label: str
    keyid: str
    created: int | None
    nonce: str | None


@dataclass
class NonceCache:
    """Nonces seen, each kept until its signature could no longer pass the age check; bounded."""

    max_entries: int = 100_000
    _until: dict[str, float] = field(default_factory=dict)

    def seen(self, nonce: str, now: float, keep_until: float) -> bool:
        """True if `nonce` was used before; otherwise remember it."""
        if len(self._until) >= self.max_entries:
            self._until = {n: t for n, t in self._until.items() if t > now}
            while len(self._until) >= self.max_entries:  # all still live: forget the oldest
                self._until.pop(next(iter(self._until)))
        if self._until.get(nonce, 0.0) > now:
            return True
        self._until[nonce] = keep_until
        return False


_SIGNATURE_PARAMS = {"alg": str, "created": int, "expires": int, "keyid": str, "nonce": str, "tag": str}


def signature_base(request: SignedRequest, components: InnerList) -> str:
    """The signature base (RFC 9421 §2.5) of `request` for these covered components and parameters."""
    lines: list[str] = []
    seen: set[str] = set()
    for component in components.items:
        name = component.value
        if not isinstance(name, str) or isinstance(name, Token):
            raise SignatureRejected(
                "invalid", f"covered component {serialize_item(component)} is not a string"
            )
        if component.params:
            raise SignatureRejected(
                "unsupported", f"component parameters are not supported ({serialize_item(component)})"
            )
        if name != name.lower():
            raise SignatureRejected("invalid", f"component name {name!r} must be lower case")
        if name in seen:
            raise SignatureRejected("invalid", f"component {name!r} is covered twice")
        seen.add(name)
        if name.startswith("@"):
            if name in ("@signature-params", "@status", "@query-param"):
                raise SignatureRejected("unsupported", f"derived component {name!r} cannot be covered here")
            value = request.derived(name)
            if value is None:
                raise SignatureRejected("invalid", f"unknown derived component {name!r}")
        else:
            value = request.header(name)
            if value is None:
                raise SignatureRejected("invalid", f"covered header field {name!r} is not in the request")
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {serialize_inner_list(components)}')
    return "\n".join(lines)


def _hmac_sha256(key: bytes, data: str) -> bytes:
    return hmac.new(key, data.encode("utf-8"), hashlib.sha256).digest()


def verify_request(
    request: SignedRequest,
    key_for: Callable[[str], bytes | None],
    *,
    now: float,
    policy: SignaturePolicy = SignaturePolicy(),
    nonces: NonceCache | None = None,
) -> Verified:
    """Check the request's hmac-sha256 signature; raises SignatureRejected naming what is wrong.

    `key_for(keyid)` gives the shared secret of a key id, or None for an unknown one (the HMAC is still
    computed, with a random key, so that an unknown key costs what a wrong one does)."""
    try:
        inputs = parse_dictionary(request.header("signature-input") or "")
        signatures = parse_dictionary(request.header("signature") or "")
    except StructuredFieldError as exc:
        raise SignatureRejected("invalid", f"Signature-Input or Signature is malformed ({exc})") from None
    if not inputs and not signatures:
        raise SignatureRejected("unsigned", "no Signature-Input and Signature header fields")
    if not inputs or not signatures:
        raise SignatureRejected("invalid", "Signature-Input and Signature must come together")
    label = next(iter(inputs))
    components, signature = inputs[label], signatures.get(label)
    if not isinstance(components, InnerList):
        raise SignatureRejected("invalid", f"Signature-Input {label!r} is not an inner list")
    if signature is None or not isinstance(signature, Item) or not isinstance(signature.value, bytes):
        raise SignatureRejected("invalid", f"Signature has no byte sequence labelled {label!r}")

    params: dict[str, int | str] = {}
    for key, value in components.params:
        kind = _SIGNATURE_PARAMS.get(key)
        if kind is None:
            raise SignatureRejected("invalid", f"unknown signature parameter {key!r}")
        if isinstance(value, (bool, bytes, Token)) or not isinstance(value, kind):
            raise SignatureRejected("invalid", f"signature parameter {key!r} must be a {kind.__name__}")
        params[key] = value
    alg = params.get("alg", "hmac-sha256")
    if alg != "hmac-sha256":
        raise SignatureRejected("unsupported", f"algorithm {alg!r} (only hmac-sha256)")
    keyid = str(params.get("keyid", ""))
    if not keyid:
        raise SignatureRejected("invalid", "no keyid signature parameter")

    created = params.get("created")
    expires = params.get("expires")
    assert created is None or isinstance(created, int)
    assert expires is None or isinstance(expires, int)
    if created is not None and created > now + policy.skew_s:
        raise SignatureRejected("invalid", f"created {created} is in the future (now {now:.0f})")
    if expires is not None and expires < now - policy.skew_s:
        raise SignatureRejected("expired", f"expired at {expires} (now {now:.0f})")
    if policy.max_age_s is not None:
        if created is None:
            raise SignatureRejected("invalid", "no created signature parameter: its age cannot be told")
        if now - created > policy.max_age_s + policy.skew_s:
            raise SignatureRejected(
                "expired", f"created {now - created:.0f} s ago (at most {policy.max_age_s:g} s)"
            )
    nonce = params.get("nonce")
    assert nonce is None or isinstance(nonce, str)
    if policy.require_nonce and (nonce is None or len(nonce) < policy.min_nonce_chars):
        raise SignatureRejected(
            "invalid", f"a nonce of at least {policy.min_nonce_chars} characters is required"
        )

    covered = {item.value for item in components.items}
    missing = [name for name in policy.required if name not in covered]
    if missing:
        raise SignatureRejected("invalid", f"the signature does not cover {', '.join(missing)}")
    base = signature_base(request, components)

    secret = key_for(keyid)
    expected = _hmac_sha256(secret if secret is not None else secrets.token_bytes(32), base)
    if not hmac.compare_digest(expected, signature.value) or secret is None:
        reason = "unknown key id" if secret is None else "the signature does not match"
        raise SignatureRejected("mismatch", f"{reason} (keyid {keyid!r})")
    if nonces is not None and nonce is not None:
        horizon = (created if created is not None else now) + (policy.max_age_s or 3600.0) + policy.skew_s
        if nonces.seen(nonce, now, max(horizon, float(expires or 0))):
            raise SignatureRejected("replayed", f"nonce {nonce!r} was already used")
    return Verified(label, keyid, created, nonce)


def sign_request(
    request: SignedRequest,
    components: Sequence[str],
    *,
    key: bytes,
    params: Sequence[tuple[str, int | str]],
    label: str = "sig1",
) -> dict[str, str]:
    """The Signature-Input and Signature header fields that sign `request` with hmac-sha256.

    `params` in the order they are to be written (Genesys writes keyid, nonce, alg, created, expires)."""
    inner = InnerList(tuple(Item(name) for name in components), tuple(params))
    signature = _hmac_sha256(key, signature_base(request, inner))
    return {
        "Signature-Input": f"{label}={serialize_inner_list(inner)}",
        "Signature": f"{label}={serialize_bare_item(signature)}",
    }


# --------------------------------------------------------------------------- X-Twilio-Signature


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """What Twilio puts in X-Twilio-Signature: base64 HMAC-SHA1 of the URL then each sorted key+value."""
    data = url + "".join(key + value for key, value in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_valid(
    auth_token: str, url: str, signature: str | None, params: Mapping[str, str] | None = None
) -> bool:
    """Whether `signature` (the header's value, or None when absent) signs `url`; constant time."""
    if not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8", "replace"))
