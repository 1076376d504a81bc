"""Sealing a session into its cookie, and opening it again.

Flask's own cookie session is signed, not encrypted: anyone holding the cookie
can base64-decode it and read what the app stored. Here the whole session,
with its creation time and expiry, is encrypted and authenticated with
AES-256-GCM:

- Keys are derived from ``SECRET_KEY`` with HKDF, so the app secret itself is
  never used as a cipher key. ``SECRET_KEY_FALLBACKS`` are tried for reading;
  the newest key always seals.
- The cookie's name is the GCM associated data, so a valid value cannot be
  moved into another cookie (say, from a staging app's cookie).
- Times travel inside the ciphertext, so the server enforces the idle and
  absolute timeouts even against an old cookie replayed later.

This module is the cryptography and needs no Flask; ``revocations.py`` is
the little the cookie mode keeps on a server, ``interface.py`` the rest.
"""

from __future__ import annotations

import base64
import binascii
import os
import typing as t
import zlib

import msgspec

# Without it, open_store says which extra to install.
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..stores.base import Record

_VERSION = b"\x01"
_NONCE = 12
#: Compress payloads from this size on. Deflating a 1 KB session costs more
#: than sealing it, and buys little below that: HTTP/2 and HTTP/3 index an
#: unchanged cookie after its first request, so what compression is for is
#: room under the browsers' 4 KB limit.
_COMPRESS_FROM = 1024
#: The first byte of a body: how the rest is packed. Deflated is raw
#: deflate with a 4 KB window (a cookie is never larger), which sets up far
#: less state per call than zlib's format.
_PLAIN, _DEFLATED = b"\x00", b"\x02"
_WBITS = -12


class Sealed(msgspec.Struct, array_like=True):
    """What a session cookie holds once decrypted."""

    #: The public id of this session (random, as the cookie store has no sid).
    handle: str
    #: When this cookie was sealed; revocation refuses cookies sealed before a mark.
    issued_at: float
    created_at: float
    last_seen: float
    expires_at: float
    permanent: bool
    user: str | None
    data: dict[str, bytes]

    @classmethod
    def of(cls, record: Record, handle: str, issued_at: float) -> Sealed:
        """What a cookie sealed at ``issued_at`` holds for ``record`` (its client details stay out)."""
        return cls(
            handle=handle,
            issued_at=issued_at,
            created_at=record.created_at,
            last_seen=record.last_seen,
            expires_at=record.expires_at,
            permanent=record.permanent,
            user=record.user,
            data=record.data,
        )

    def record(self) -> Record:
        return Record(
            data=self.data,
            created_at=self.created_at,
            last_seen=self.last_seen,
            expires_at=self.expires_at,
            permanent=self.permanent,
            user=self.user,
        )


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Sealed).decode


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


class Sealer:
    """Seals and opens session cookies with keys derived from the app's secrets."""

    def __init__(self) -> None:
        self._keys: dict[bytes, AESGCM] = {}

    def _cipher(self, secret: str | bytes) -> AESGCM:
        raw = _secret_bytes(secret)
        cipher = self._keys.get(raw)
        if cipher is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"flask-satchel", info=b"session cookie v1")
            cipher = self._keys[raw] = AESGCM(hkdf.derive(raw))
        return cipher

    def seal(self, sealed: Sealed, name: str, secret: str | bytes) -> str:
        plain = _encode(sealed)
        body = _PLAIN + plain
        if len(plain) >= _COMPRESS_FROM:
            deflate = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 4)
            packed = deflate.compress(plain) + deflate.flush()
            if len(packed) < len(plain):
                body = _DEFLATED + packed
        nonce = os.urandom(_NONCE)
        token = _VERSION + nonce + self._cipher(secret).encrypt(nonce, body, name.encode())
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def open(self, value: str, name: str, secrets: t.Sequence[str | bytes]) -> Sealed | None:
        """The sealed session, or None when the value is not one of ours (tampered, foreign, truncated)."""
        try:
            token = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(token) < 1 + _NONCE + 16 or token[:1] != _VERSION:
            return None
        nonce, ciphertext = token[1 : 1 + _NONCE], token[1 + _NONCE :]
        for secret in secrets:
            try:
                body = self._cipher(secret).decrypt(nonce, ciphertext, name.encode())
            except InvalidTag:
                continue
            try:
                kind = body[:1]
                if kind == _DEFLATED:
                    plain = zlib.decompress(body[1:], _WBITS)
                elif kind == _PLAIN:
                    plain = body[1:]
                else:
                    return None  # authentic, but in no format this version writes
                return _decode(plain)
            except (zlib.error, msgspec.DecodeError):
                return None  # authentic but unreadable: an older format
        return None
