"""The encrypted cookie store: the session travels in the cookie, sealed.

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

A stateless session cannot be deleted on the server. What can be done is a
per-user "valid after" mark, kept in a small server store
(``SESSION_COOKIE_REVOCATION_URL``): cookies sealed before it are refused.
That is :class:`CookieStore`'s whole server side; everything else here is
cryptography and needs no Flask.
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

from ..errors import NotSupported
from .base import Change, Record, user_hash

if t.TYPE_CHECKING:
    from ..settings import Settings
    from .base import Store

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


def _mark_key(user: str) -> str:
    return user_hash(user, b"revoked-user:")


class CookieStore:
    """The server side of the cookie store: only per-user revocation marks.

    A mark is kept as a :class:`Record` in any other store (SQLite, Redis, …):
    ``created_at`` is the time before which this user's cookies are refused,
    ``data`` may name one handle that is spared ("log out other devices").
    """

    def __init__(self, revocations: Store | None = None) -> None:
        self.revocations = revocations
        self.sealer = Sealer()

    @classmethod
    def from_settings(cls, settings: Settings) -> CookieStore:
        revocations = None
        if settings.revocation_settings is not None:
            from . import open_store

            revocations = open_store(settings.revocation_settings)
        return cls(revocations)

    def _no(self, what: str) -> NotSupported:
        return NotSupported(f"the cookie store keeps sessions in browsers; it cannot {what}")

    # Revocation marks --------------------------------------------------------

    def valid_after(self, user: str) -> tuple[float, str | None]:
        """(time before which ``user``'s cookies are refused, handle spared); (0, None) when unmarked."""
        if self.revocations is None:
            return 0.0, None
        mark = self.revocations.load(_mark_key(user))
        if mark is None:
            return 0.0, None
        kept = mark.data.get("keep")
        return mark.created_at, None if kept is None else kept.decode()

    def revoke_user(self, user: str, keep: str | None, now: float, lifetime: float) -> None:
        """Refuse every cookie of ``user`` sealed before ``now`` but ``keep``'s."""
        if self.revocations is None:
            raise NotSupported(
                "revoking cookie sessions needs a server store for revocation marks:"
                " set SESSION_COOKIE_REVOCATION_URL (for example 'sqlite:///revocations.sqlite3')"
            )
        key = _mark_key(user)
        self.revocations.delete(key)
        # The mark lives as long as a cookie could: nothing older than the absolute lifetime is accepted.
        data = {} if keep is None else {"keep": keep.encode()}
        self.revocations.create(
            key, Record(data=data, created_at=now, last_seen=now, expires_at=now + lifetime, user=None)
        )

    # The Store protocol: what a stateless store can and cannot do -------------

    def load(self, key: str) -> Record | None:
        raise self._no("load a session by key")

    def create(self, key: str, record: Record) -> None:
        raise self._no("create a session on the server")

    def apply(self, key: str, change: Change) -> int | None:
        raise self._no("change a session on the server")

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        raise self._no("refresh a session on the server")

    def delete(self, key: str) -> bool:
        raise self._no("revoke one session; use revoke_user(user), which needs SESSION_COOKIE_REVOCATION_URL")

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        raise self._no("list sessions")

    def cleanup(self, now: float) -> int:
        if self.revocations is not None:
            return self.revocations.cleanup(now)
        return 0

    def count(self, now: float) -> int:
        raise self._no("count sessions")

    def close(self) -> None:
        if self.revocations is not None:
            self.revocations.close()
