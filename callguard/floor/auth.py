"""Credentials of the floor: workstations' bearer credentials, supervisors' passwords and sessions.

The database keeps only SHA-256 digests of credentials and session tokens (they are long random
strings, so a fast hash is enough) and argon2 hashes of passwords (chosen by people, so a slow one).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

CREDENTIAL_PREFIX = "cgf_"
SESSION_COOKIE = "callguard_floor_session"
CSRF_HEADER = "x-csrf-token"
MIN_PASSWORD_LENGTH = 10

# argon2-cffi's defaults (RFC 9106 low-memory profile); one hasher, no mutable state
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the login is unknown, so an unknown login takes as long as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def new_credential() -> str:
    """A workstation's credential: printed once by `enrol`, stored only as its SHA-256."""
    return CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    """The SHA-256 of a credential or session token, as stored."""
    return hashlib.sha256(secret.encode()).digest()


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password: expected at least {MIN_PASSWORD_LENGTH} characters, got {len(password)}")
    return _HASHER.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether the password is the hashed one; with no hash (unknown login), False after the same work."""
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
