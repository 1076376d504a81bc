"""``app.extensions["satchel"]``: the sessions of an app, seen from the server side.

What a user needs to see and end their sessions ("log out other devices"),
and what an operator needs to count and clean them up. It works with
handles, the public ids of sessions; a handle never works as a cookie.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing as t

from .stores.cookie import CookieStore

if t.TYPE_CHECKING:
    from .interface import SatchelSessionInterface
    from .settings import Settings
    from .stores.base import Record, Store

_HANDLE = re.compile(r"[0-9a-f]{32}")


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """One live session, without its data or its secret id."""

    handle: str
    user: str | None
    created_at: dt.datetime
    last_seen: dt.datetime
    expires_at: dt.datetime
    permanent: bool
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def from_record(cls, handle: str, record: Record) -> SessionInfo:
        client = record.client or {}
        return cls(
            handle=handle,
            user=record.user,
            created_at=_utc(record.created_at),
            last_seen=_utc(record.last_seen),
            expires_at=_utc(record.expires_at),
            permanent=record.permanent,
            ip=client.get("ip"),
            user_agent=client.get("user_agent"),
        )


class SessionManager:
    """List, revoke, count and clean up the sessions of one app."""

    def __init__(self, settings: Settings, store: Store, interface: SatchelSessionInterface) -> None:
        self.settings = settings
        self.store = store
        self.interface = interface

    def _now(self) -> float:
        return self.interface.now()

    def sessions(self, user: t.Any = None) -> list[SessionInfo]:
        """Live sessions, most recently seen first: one user's, or everyone's when ``user`` is None."""
        records = self.store.sessions(self._now(), None if user is None else str(user))
        infos = [SessionInfo.from_record(handle, record) for handle, record in records]
        return sorted(infos, key=lambda info: info.last_seen, reverse=True)

    def sessions_of(self, user: t.Any) -> list[SessionInfo]:
        """The live sessions of ``user`` (the value kept under ``SESSION_USER_KEY``)."""
        return self.sessions(user)

    def revoke(self, handle: str) -> bool:
        """End one session; True when it existed."""
        if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
            return False
        return self.store.delete(handle)

    def revoke_user(self, user: t.Any, keep: str | None = None) -> int:
        """End every session of ``user`` but ``keep``; returns how many ended.

        With the cookie store, sessions live in browsers and cannot be
        counted: every cookie of the user sealed before now (but ``keep``'s)
        is refused from now on, and the count returned is 0.
        """
        if isinstance(self.store, CookieStore):
            self.store.revoke_user(str(user), keep, self._now(), self.settings.absolute_lifetime)
            return 0
        return sum(self.store.delete(info.handle) for info in self.sessions_of(user) if info.handle != keep)

    def cleanup(self) -> int:
        """Delete expired records; 0 for stores whose records expire by themselves."""
        return self.store.cleanup(self._now())

    def count(self) -> int:
        """How many live sessions there are."""
        return self.store.count(self._now())
