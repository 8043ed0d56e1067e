"""Secrets: API keys, the server keyring and passwords.

* **API keys** look like ``sk-llmux-<id>_<secret>``: a 12-hex-digit id (the row to look
  up) and a 192-bit secret. Only a keyed hash of the secret is stored: HMAC-SHA256 under
  a key derived from the server secret (a *pepper*: a copy of the database alone does
  not let anyone test guesses). Hashes are compared in constant time.
* **The keyring** derives independent keys from the one server secret
  (``[auth] secret``, else ``$LLMUX_HOME/auth-secret``, made on first start): for key
  hashes, for signing llmux's own tokens, for sealing OAuth2 client secrets, for UI
  sessions and for the audit trail's prompt and response hashes. Replicas must share
  the secret.
* **Client secrets** are stored twice: as a keyed hash (checked on ``/oauth2/token``)
  and sealed with AES-GCM (needed to verify the HS256 tokens a client signs with it).
* **Passwords** are hashed with argon2id (argon2-cffi); hashing is slow on purpose, so
  callers on the event loop run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmux.errors import LlmuxError

KEY_PREFIX = "sk-llmux-"
_KEY = re.compile(r"^sk-llmux-([0-9a-f]{12})_([A-Za-z0-9_\-]{32,128})$")
MIN_HMAC_SECRET = 32  # bytes: RFC 7518 section 3.2, a key at least as long as the hash
SECRET_FILE = "auth-secret"

_passwords = PasswordHasher()


def new_id() -> str:
    return secrets.token_hex(6)


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def new_api_key() -> tuple[str, str, str]:
    """(id, secret, the whole key as shown once)."""
    key_id, secret = new_id(), new_secret()
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def parse_api_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of something shaped like an llmux key, else None."""
    found = _KEY.match(text)
    return (found.group(1), found.group(2)) if found else None


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def password_matches(stored: str, password: str) -> bool:
    if not stored:
        return False
    try:
        return _passwords.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class Keyring:
    """Keys derived from the one server secret, one per purpose."""

    def __init__(self, master: bytes) -> None:
        if len(master) < MIN_HMAC_SECRET:
            raise LlmuxError(
                f"[auth] secret must be at least {MIN_HMAC_SECRET} bytes; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._hashing = self._derive(master, b"llmux api-key hash")
        self.signing = self._derive(master, b"llmux token signing")
        self.sessions = self._derive(master, b"llmux ui sessions")
        self.audit = self._derive(master, b"llmux audit hashes")  # prompt/response HMACs
        self._sealing = AESGCM(self._derive(master, b"llmux client-secret sealing"))

    @staticmethod
    def _derive(master: bytes, label: bytes) -> bytes:
        return hmac.new(master, label, hashlib.sha256).digest()

    def digest(self, secret: str) -> str:
        return hmac.new(self._hashing, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, secret: str, stored: str) -> bool:
        return hmac.compare_digest(self.digest(secret), stored)

    def seal(self, plain: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._sealing.encrypt(nonce, plain.encode(), context.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, context: str) -> str | None:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
            return self._sealing.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError):
            return None  # sealed under another server secret


def load_master(configured: str | None, home: Path) -> bytes:
    """The configured server secret, else the one in ``$LLMUX_HOME/auth-secret`` (made
    with 256 random bits, mode 0600, on first use)."""
    if configured:
        return configured.encode()
    path = home / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
    return value
