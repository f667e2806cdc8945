"""The request signatures of the WebSocket inputs, against published vectors and their failure modes.

- RFC 9421 Appendix B.2.5 (hmac-sha256 over date, @authority, content-type, keyed by the shared secret
  of B.1.5): signed to the published value, and verified.
- Genesys' own AudioHook example (the protocol documentation's, as the reference implementation's tests
  carry it: API key SGVsbG8s..., client secret TXlTdXBl...): verified, and its builder example signed.
- Twilio's documented X-Twilio-Signature examples (auth token 12345, the myapp.php URL).
"""

from __future__ import annotations

import base64

import pytest

from callguard.sources.telephony.signatures import (
    InnerList,
    Item,
    NonceCache,
    SignaturePolicy,
    SignatureRejected,
    SignedRequest,
    StructuredFieldError,
    Token,
    parse_dictionary,
    serialize_inner_list,
    sign_request,
    twilio_signature,
    twilio_signature_valid,
    verify_request,
)

# RFC 9421 B.1.5 test-shared-secret, and the B.2 test request
RFC_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
RFC_HEADERS = [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    (
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    ),
    ("Content-Length", "18"),
]
RFC_B25_INPUT = 'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
RFC_B25_SIGNATURE = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"

# Genesys AudioHook documentation example
AH_API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
AH_SECRET = base64.b64decode("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=")
AH_HEADERS = [
    ("Host", "audiohook.example.com"),
    ("Audiohook-Organization-Id", "d7934305-0972-4844-938e-9060eef73d05"),
    ("Audiohook-Session-Id", "30b0e395-84d3-4570-ac13-9a62d8f514c0"),
    ("Audiohook-Correlation-Id", "e160e428-53e2-487c-977d-96989bf5c99d"),
    ("X-API-KEY", AH_API_KEY),
]
AH_TARGET = "/api/v1/voicebiometrics/ws"
AH_INPUT = (
    'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
    '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
    'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430'
)
AH_SIGNATURE = "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"
AH_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
AH_POLICY = SignaturePolicy(
    required=AH_COMPONENTS, max_age_s=10, skew_s=3, require_nonce=True, min_nonce_chars=22
)


def rfc_request(*extra: tuple[str, str]) -> SignedRequest:
    return SignedRequest.of("POST", "/foo?param=Value&Pet=dog", [*RFC_HEADERS, *extra])


def rfc_key(keyid: str) -> bytes | None:
    return RFC_SECRET if keyid == "test-shared-secret" else None


def audiohook_request(signature_input: str = AH_INPUT, signature: str = AH_SIGNATURE) -> SignedRequest:
    headers = [*AH_HEADERS, ("Signature-Input", signature_input), ("Signature", signature)]
    return SignedRequest.of("GET", AH_TARGET, headers)


def audiohook_key(keyid: str) -> bytes | None:
    return AH_SECRET if keyid == AH_API_KEY else None


# ------------------------------------------------------------------------------ RFC 9421 B.2.5


def test_rfc9421_b25_hmac_sha256_is_signed_to_the_published_value() -> None:
    headers = sign_request(
        rfc_request(),
        ["date", "@authority", "content-type"],
        key=RFC_SECRET,
        params=[("created", 1618884473), ("keyid", "test-shared-secret")],
        label="sig-b25",
    )
    assert headers == {"Signature-Input": RFC_B25_INPUT, "Signature": RFC_B25_SIGNATURE}


def test_rfc9421_b25_verifies() -> None:
    request = rfc_request(("Signature-Input", RFC_B25_INPUT), ("Signature", RFC_B25_SIGNATURE))
    verified = verify_request(request, rfc_key, now=1618884473 + 1)
    assert (verified.label, verified.keyid, verified.created) == ("sig-b25", "test-shared-secret", 1618884473)


def test_rfc9421_b25_fails_with_another_secret_or_a_changed_header() -> None:
    signed = [("Signature-Input", RFC_B25_INPUT), ("Signature", RFC_B25_SIGNATURE)]
    with pytest.raises(SignatureRejected) as wrong_key:
        verify_request(rfc_request(*signed), lambda _: b"not the shared secret", now=1618884473)
    assert wrong_key.value.code == "mismatch"
    changed = SignedRequest.of(
        "POST", "/foo", [("Host", "example.com"), ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
                         ("Content-Type", "application/json"), *signed],
    )  # fmt: skip
    with pytest.raises(SignatureRejected) as tampered:
        verify_request(changed, rfc_key, now=1618884473)
    assert tampered.value.code == "mismatch"
    with pytest.raises(SignatureRejected) as unknown:
        verify_request(rfc_request(*signed), lambda _: None, now=1618884473)
    assert unknown.value.code == "mismatch" and "unknown key" in unknown.value.reason


# --------------------------------------------------------------------- Genesys' AudioHook example


def test_genesys_audiohook_example_verifies() -> None:
    verified = verify_request(audiohook_request(), audiohook_key, now=1641013200 + 2, policy=AH_POLICY)
    assert verified.keyid == AH_API_KEY and verified.nonce == "VGhpc0lzQVVuaXF1ZU5vbmNl"


def test_genesys_audiohook_builder_example_is_signed_to_its_value() -> None:
    # the reference implementation's builder test: "host" rather than "@authority", and Genesys' order
    # of parameters (keyid, nonce, alg, created, expires)
    headers = sign_request(
        SignedRequest.of("GET", AH_TARGET, AH_HEADERS),
        ["@request-target", "host", *AH_COMPONENTS[2:]],
        key=AH_SECRET,
        params=[
            ("keyid", AH_API_KEY),
            ("nonce", "VGhpc0lzQVVuaXF1ZU5vbmNl"),
            ("alg", "hmac-sha256"),
            ("created", 1641013200),
            ("expires", 3282026430),
        ],
    )
    assert headers["Signature"] == "sig1=:zupMJUMfd/kMuvKc5zhRyfJPE3jTROuz1S1hn8SCTpE=:"
    assert headers["Signature-Input"].startswith('sig1=("@request-target" "host" "audiohook-organization-id"')


def test_a_stale_or_future_signature_is_refused() -> None:
    with pytest.raises(SignatureRejected) as stale:
        verify_request(audiohook_request(), audiohook_key, now=1641013200 + 60, policy=AH_POLICY)
    assert stale.value.code == "expired"
    with pytest.raises(SignatureRejected) as future:
        verify_request(audiohook_request(), audiohook_key, now=1641013200 - 60, policy=AH_POLICY)
    assert future.value.code == "invalid" and "future" in future.value.reason
    expired_input = AH_INPUT.replace("expires=3282026430", "expires=1641013205")
    with pytest.raises(SignatureRejected) as expired:
        verify_request(audiohook_request(expired_input), audiohook_key, now=1641013209, policy=AH_POLICY)
    assert expired.value.code == "expired"


def test_a_replayed_nonce_is_refused() -> None:
    nonces = NonceCache()
    verify_request(audiohook_request(), audiohook_key, now=1641013201, policy=AH_POLICY, nonces=nonces)
    with pytest.raises(SignatureRejected) as replayed:
        verify_request(audiohook_request(), audiohook_key, now=1641013202, policy=AH_POLICY, nonces=nonces)
    assert replayed.value.code == "replayed"


def test_the_policy_demands_its_components_and_a_nonce() -> None:
    secret_policy = SignaturePolicy(required=(*AH_COMPONENTS, "audiohook-extra"), max_age_s=10)
    with pytest.raises(SignatureRejected) as uncovered:
        verify_request(audiohook_request(), audiohook_key, now=1641013201, policy=secret_policy)
    assert "does not cover audiohook-extra" in uncovered.value.reason
    long_nonce = SignaturePolicy(required=AH_COMPONENTS, require_nonce=True, min_nonce_chars=40)
    with pytest.raises(SignatureRejected) as short:
        verify_request(audiohook_request(), audiohook_key, now=1641013201, policy=long_nonce)
    assert "nonce" in short.value.reason


@pytest.mark.parametrize(
    ("signature_input", "signature", "code"),
    [
        ("", "", "unsigned"),
        (AH_INPUT, "", "invalid"),
        ("sig1=(@request-target)", AH_SIGNATURE, "invalid"),  # a token, not a string
        (AH_INPUT.replace('alg="hmac-sha256"', 'alg="rsa-pss-sha512"'), AH_SIGNATURE, "unsupported"),
        (AH_INPUT.replace("created=1641013200", 'created="1641013200"'), AH_SIGNATURE, "invalid"),
        (AH_INPUT + ";color=1", AH_SIGNATURE, "invalid"),
        (AH_INPUT, "sig1=:not base64!:", "invalid"),
        (AH_INPUT, "other=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:", "invalid"),
        (AH_INPUT.replace('"x-api-key"', '"x-api-key";sf'), AH_SIGNATURE, "unsupported"),
        (AH_INPUT.replace('"x-api-key"', '"@request-target"'), AH_SIGNATURE, "invalid"),  # twice
        (AH_INPUT.replace('"x-api-key"', '"@status"'), AH_SIGNATURE, "unsupported"),
        (AH_INPUT.replace('"x-api-key"', '"x-missing"'), AH_SIGNATURE, "invalid"),
    ],
)
def test_malformed_signature_fields_are_refused_with_a_reason(
    signature_input: str, signature: str, code: str
) -> None:
    request = audiohook_request(signature_input, signature)
    with pytest.raises(SignatureRejected) as rejected:
        verify_request(request, audiohook_key, now=1641013201)
    assert rejected.value.code == code and rejected.value.reason


def test_structured_fields_round_trip_and_refuse_garbage() -> None:
    parsed = parse_dictionary('a=("x" "y";k=?1);n=12;t=tok, b=:AAE=:, c')
    inner = parsed["a"]
    assert isinstance(inner, InnerList)
    assert serialize_inner_list(inner) == '("x" "y";k);n=12;t=tok'
    assert parsed["b"] == Item(b"\x00\x01") and parsed["c"] == Item(True)
    assert isinstance(dict(inner.params)["t"], Token)
    for garbage in ['a=("x"', "a=1.5", "A=1", 'a="unterminated', "a=1,", 'a="\\q"']:
        with pytest.raises(StructuredFieldError):
            parse_dictionary(garbage)


def test_header_values_are_canonicalised_and_joined() -> None:
    request = SignedRequest.of(
        "get", "/p?q=1", [("Host", "Example.COM:443"), ("X-A", " one "), ("x-a", "two")]
    )
    assert request.header("x-a") == "one, two"
    assert request.derived("@authority") == "example.com"  # https's default port dropped, lower case
    assert (request.derived("@path"), request.derived("@query"), request.derived("@method")) == (
        "/p",
        "?q=1",
        "GET",
    )
    assert request.derived("@target-uri") == "https://example.com/p?q=1"


# ---------------------------------------------------------------------------- X-Twilio-Signature


def test_twilio_documented_examples() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    for caller, expected in (
        ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    ):
        params = {
            "CallSid": "CA1234567890ABCDE",
            "Caller": caller,
            "Digits": "1234",
            "From": caller,
            "To": "+18005551212",
        }
        assert twilio_signature("12345", url, params) == expected
        assert twilio_signature_valid("12345", url, expected, params)
        assert not twilio_signature_valid("12345", url, expected, {**params, "Digits": "9999"})


def test_twilio_websocket_signature_covers_the_url_alone() -> None:
    url = "wss://calls.example.com/twilio"
    signature = twilio_signature("token-1", url)
    assert twilio_signature_valid("token-1", url, signature)
    assert not twilio_signature_valid("token-2", url, signature)
    assert not twilio_signature_valid("token-1", url + "?x=1", signature)
    assert not twilio_signature_valid("token-1", url, None)
    assert not twilio_signature_valid("token-1", url, "")
    assert not twilio_signature_valid("token-1", url, "ünïcode not base64")
