"""The cookie mode's server side: per-user "valid after" marks (``SESSION_COOKIE_REVOCATION_URL``).

A stateless session cannot be deleted on the server. What can be done is a
mark per user, kept in a small server store (SQLite, Redis, …): cookies of
that user sealed before it are refused, but for one handle that may be
spared ("log out other devices"). Without such a store, revoking a user is
``NotSupported``.
"""

from __future__ import annotations

import typing as t

from ..errors import NotSupported
from ..stores.base import Record, user_hash

if t.TYPE_CHECKING:
    from ..stores.base import Store


def _mark_key(user: str) -> str:
    return user_hash(user, b"revoked-user:")


class Revocations:
    """Per-user revocation marks, kept as records in ``store``.

    A mark's ``created_at`` is the time before which this user's cookies are
    refused; its ``data`` may name one handle that is spared.
    """

    def __init__(self, store: Store | None) -> None:
        #: Where the marks are kept; None when ``SESSION_COOKIE_REVOCATION_URL`` is not set.
        self.store = store

    def valid_after(self, user: str) -> tuple[float, str | None]:
        """(time before which ``user``'s cookies are refused, handle spared); (0, None) when unmarked."""
        if self.store is None:
            return 0.0, None
        mark = self.store.load(_mark_key(user))
        if mark is None:
            return 0.0, None
        kept = mark.data.get("keep")
        return mark.created_at, None if kept is None else kept.decode()

    def revoke_user(self, user: str, keep: str | None, now: float, lifetime: float) -> None:
        """Refuse every cookie of ``user`` sealed before ``now`` but ``keep``'s."""
        if self.store is None:
            raise NotSupported(
                "revoking cookie sessions needs a server store for revocation marks:"
                " set SESSION_COOKIE_REVOCATION_URL (for example 'sqlite:///revocations.sqlite3')"
            )
        key = _mark_key(user)
        self.store.delete(key)
        # The mark lives as long as a cookie could: nothing older than the absolute lifetime is accepted.
        data = {} if keep is None else {"keep": keep.encode()}
        self.store.create(key, Record(data=data, created_at=now, last_seen=now, expires_at=now + lifetime, user=None))

    def cleanup(self, now: float) -> int:
        """Delete marks that outlived every cookie they could refuse."""
        return 0 if self.store is None else self.store.cleanup(now)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
