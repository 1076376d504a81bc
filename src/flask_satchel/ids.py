"""Session ids: how they are made, checked, signed and hashed.

A sid is 256 random bits from :mod:`secrets`, URL-safe base64 without
padding. The store never sees it: records are kept under ``key_of(sid)``, a
hash, so whoever can read the store (a backup, a replica, ``KEYS *``) still
cannot present a valid cookie. The same hash is the session's public
*handle*, safe to show in a "your sessions" page: a handle sent as a cookie is
hashed again and names no record.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import typing as t

from itsdangerous import BadSignature, Signer

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["SidCookie", "SidSigner", "key_of", "new_sid", "sid_pattern"]


def new_sid(nbytes: int) -> str:
    """A fresh session id of ``nbytes`` random bytes."""
    return secrets.token_urlsafe(nbytes)


def sid_pattern(nbytes: int) -> re.Pattern[str]:
    """The exact shape of an id made by ``new_sid(nbytes)``; nothing else is looked up."""
    length = -(-nbytes * 4 // 3)  # base64 without padding
    return re.compile(rf"[A-Za-z0-9_-]{{{length}}}")


def key_of(sid: str) -> str:
    """The store key and public handle of a session id: 128 bits of SHA-256, hex."""
    return hashlib.sha256(sid.encode()).hexdigest()[:32]


class SidSigner:
    """Signs sids in the cookie when ``SESSION_USE_SIGNER`` is on.

    Keys rotate as in Flask: ``SECRET_KEY`` signs, it and every key in
    ``SECRET_KEY_FALLBACKS`` verify.
    """

    salt = b"flask-satchel.sid"

    def __init__(self) -> None:
        self._cached: tuple[tuple[t.Any, ...], Signer] | None = None

    def _signer(self, secret: t.Any, fallbacks: t.Sequence[t.Any]) -> Signer:
        ident = (secret, *fallbacks)
        if self._cached is None or self._cached[0] != ident:
            keys = [*fallbacks, secret]  # itsdangerous signs with the last
            self._cached = (ident, Signer(keys, salt=self.salt, digest_method=hashlib.sha256))
        return self._cached[1]

    def sign(self, sid: str, secret: t.Any, fallbacks: t.Sequence[t.Any]) -> str:
        return self._signer(secret, fallbacks).sign(sid).decode()

    def unsign(self, value: str, secret: t.Any, fallbacks: t.Sequence[t.Any]) -> str | None:
        try:
            return self._signer(secret, fallbacks).unsign(value).decode()
        except (BadSignature, UnicodeError):
            return None


class SidCookie:
    """How a session id travels in the cookie: as it is, or signed (``SESSION_USE_SIGNER``).

    The secret is read from the app on each use, as Flask reads it, so an
    app may set or rotate it after ``init_app``.
    """

    def __init__(self, nbytes: int, signed: bool) -> None:
        #: Bytes of randomness in an id (``SESSION_ID_LENGTH``).
        self.nbytes = nbytes
        self._pattern = sid_pattern(nbytes)
        self._signer = SidSigner() if signed else None

    @property
    def signed(self) -> bool:
        return self._signer is not None

    def new(self) -> str:
        return new_sid(self.nbytes)

    def read(self, app: Flask, value: str) -> str | None:
        """The sid a cookie value carries; None for anything but an id of ours (a bad signature, a wrong shape)."""
        sid: str | None = value
        if self._signer is not None:
            sid = self._signer.unsign(value, app.secret_key, app.config.get("SECRET_KEY_FALLBACKS") or ())
        if sid is None or not self._pattern.fullmatch(sid):
            return None
        return sid

    def value(self, app: Flask, sid: str) -> str:
        """The cookie value for ``sid``: signed with the newest key when signing is on."""
        if self._signer is None:
            return sid
        return self._signer.sign(sid, app.secret_key, app.config.get("SECRET_KEY_FALLBACKS") or ())

    def stale(self, app: Flask, sent: str | None, sid: str) -> bool:
        """Whether ``sent`` was signed with an older key than the newest, so the cookie should be signed anew."""
        return self._signer is not None and sent != self.value(app, sid)
