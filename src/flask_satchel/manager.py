"""``app.extensions["satchel"]``: the sessions of an app, seen from the server side.

What a user needs to see and end their sessions ("log out other devices"),
and what an operator needs to count, inspect, clean up and move them. It
works with handles, the public ids of sessions; a handle never works as a
cookie. Every method is a few calls of the Store protocol, so it works on
every store that can answer; the others raise ``NotSupported``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import re
import typing as t

from . import signals
from .errors import NotSupported

if t.TYPE_CHECKING:
    from flask import Flask

    from .base_interface import BaseSessionInterface
    from .cookie import Revocations
    from .settings import Settings
    from .stores.base import Record, Store

#: What a session handle looks like: the hex digest ``session.handle`` and ``flask session list`` show.
HANDLE = re.compile(r"[0-9a-f]{32}")

#: ``progress(done, total)``: called as a long operation advances, for a progress bar.
Progress = t.Callable[[int, int], None]

#: A cleanup with a progress bar runs in at most this many slices (each one a store cleanup).
_CLEANUP_SLICES = 10


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """One live session, without its data or its secret id."""

    #: The session's public id: safe to show, list and revoke, and never usable as a cookie.
    handle: str
    #: What the session holds under ``SESSION_USER_KEY``, as a string; None when nobody is logged in.
    user: str | None
    #: When the session was first stored (UTC).
    created_at: dt.datetime
    #: When a request last used it (UTC), as of the last refresh: it moves once
    #: per ``SESSION_REFRESH_INTERVAL``, not on every request.
    last_seen: dt.datetime
    #: When it ends unless it is used again (UTC): the idle or the absolute deadline, whichever comes first.
    expires_at: dt.datetime
    #: Flask's permanent flag: a dated cookie rather than a browser-session one.
    permanent: bool
    #: The client's address (``request.remote_addr``) with ``SESSION_TRACK_CLIENT``, else None.
    ip: str | None = None
    #: The client's ``User-Agent`` (its first 256 characters) with ``SESSION_TRACK_CLIENT``, else None.
    user_agent: str | None = None
    #: The names of the keys the session holds, sorted, and never their values
    #: (which may be secrets): what ``flask session show`` prints. Only
    #: :meth:`SessionManager.info` fills it in; in listings (``sessions()``,
    #: ``sessions_of()``) it is None, not an empty tuple, because a store lists
    #: sessions from their metadata without reading their data. ``()`` is a
    #: session that holds no keys.
    keys: tuple[str, ...] | None = None

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


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of the live sessions, for an operator's overview."""

    #: When the snapshot was taken (the interface's clock).
    as_of: dt.datetime
    #: Live sessions.
    count: int
    #: How many of them are permanent (a dated cookie rather than a browser-session one).
    permanent: int
    #: How many have no user (not logged in).
    anonymous: int
    #: How many distinct users have a session.
    users: int
    #: The users with the most sessions, most first, as ``(user, sessions)``.
    top_users: tuple[tuple[str, int], ...]
    #: When the oldest live session was created; None when there are none.
    oldest_created_at: dt.datetime | None

    @property
    def oldest_age(self) -> dt.timedelta | None:
        """How old the oldest live session is."""
        return None if self.oldest_created_at is None else self.as_of - self.oldest_created_at


class SessionManager:
    """List, inspect, revoke, count, clean up and migrate the sessions of one app."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        interface: BaseSessionInterface,
        app: Flask | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.settings = settings
        #: Where the sessions are; None in the cookie mode, whose sessions live in browsers.
        self.store = store
        self.interface = interface
        #: The app, as the sender of ``session_revoked``.
        self.app = app
        #: The cookie mode's per-user revocation marks.
        self.revocations = revocations

    def _records(self, what: str) -> Store:
        """The store, for an operation that needs one; ``NotSupported`` saying ``what`` in the cookie mode."""
        if self.store is None:
            raise NotSupported(f"the cookie store keeps sessions in browsers; it cannot {what}")
        return self.store

    def close(self) -> None:
        """Release the store's (and the revocation marks') connections and files."""
        if self.store is not None:
            self.store.close()
        if self.revocations is not None:
            self.revocations.close()

    def _now(self) -> float:
        return self.interface.now()

    def now(self) -> dt.datetime:
        """The current time by the interface's clock (which tests freeze), in UTC."""
        return _utc(self._now())

    def sessions(self, user: t.Any = None) -> list[SessionInfo]:
        """Live sessions, most recently seen first: one user's, or everyone's when ``user`` is None."""
        records = self._records("list sessions").sessions(self._now(), None if user is None else str(user))
        infos = [SessionInfo.from_record(handle, record) for handle, record in records]
        return sorted(infos, key=lambda info: info.last_seen, reverse=True)

    def sessions_of(self, user: t.Any) -> list[SessionInfo]:
        """The live sessions of ``user`` (the value kept under ``SESSION_USER_KEY``)."""
        return self.sessions(user)

    def info(self, handle: str) -> SessionInfo | None:
        """One live session's metadata and the names of its keys; None when there is no such session."""
        if not isinstance(handle, str) or not HANDLE.fullmatch(handle):
            return None
        record = self._records("look a session up").load(handle)
        if record is None or record.expires_at <= self._now():
            return None
        return dataclasses.replace(SessionInfo.from_record(handle, record), keys=tuple(sorted(record.data)))

    def stats(self, top: int = 10) -> Stats:
        """Counts over the live sessions, with the ``top`` users who hold the most."""
        now = self._now()
        records = [record for _, record in self._records("list sessions").sessions(now)]
        per_user = collections.Counter(r.user for r in records if r.user is not None)
        # Most sessions first; ties by name, so the output is stable.
        ranked = sorted(per_user.items(), key=lambda item: (-item[1], item[0]))
        oldest = min((r.created_at for r in records), default=None)
        return Stats(
            as_of=_utc(now),
            count=len(records),
            permanent=sum(r.permanent for r in records),
            anonymous=sum(r.user is None for r in records),
            users=len(per_user),
            top_users=tuple(ranked[:top]),
            oldest_created_at=None if oldest is None else _utc(oldest),
        )

    def revoke(self, handle: str) -> bool:
        """End one session; True when it existed."""
        if not isinstance(handle, str) or not HANDLE.fullmatch(handle):
            return False
        if not self._records(
            "revoke one session; use revoke_user(user), which needs SESSION_COOKIE_REVOCATION_URL"
        ).delete(handle):
            return False
        signals.session_revoked.send(self.app, handle=handle)
        return True

    def revoke_user(self, user: t.Any, keep: str | None = None) -> int:
        """End every session of ``user`` but ``keep``; returns how many ended.

        With the cookie store, sessions live in browsers and cannot be
        counted: every cookie of the user sealed before now (but ``keep``'s)
        is refused from now on, and the count returned is 0.
        """
        if self.revocations is not None:
            self.revocations.revoke_user(str(user), keep, self._now(), self.settings.store.absolute_lifetime)
            return 0
        return sum(self.revoke(info.handle) for info in self.sessions_of(user) if info.handle != keep)

    def cleanup(self, progress: Progress | None = None) -> int:
        """Delete expired records; 0 for stores whose records expire by themselves.

        With ``progress``, the expired records are first listed and then
        removed oldest first in a few slices, each one the store's own
        ``cleanup`` with an earlier cut-off, so a bar can advance between
        them. That costs a listing and a few extra passes, which is why it is
        only done when someone is watching; the result is the same.
        """
        now = self._now()
        if self.revocations is not None:
            return self.revocations.cleanup(now)
        if progress is None:
            return self._records("clean up").cleanup(now)
        try:
            # Everything since the epoch: the expired records too, metadata only.
            expiries = sorted(r.expires_at for _, r in self._records("clean up").sessions(0.0) if r.expires_at <= now)
        except NotSupported:
            expiries = []
        total = len(expiries)
        step = max(1, -(-total // _CLEANUP_SLICES))
        cutoffs = [expiries[i] for i in range(step - 1, total - 1, step)]
        removed = 0
        progress(0, total)
        for cutoff in [*cutoffs, now]:
            removed += self._records("clean up").cleanup(cutoff)
            progress(removed, total)
        return removed

    def count(self) -> int:
        """How many live sessions there are."""
        return self._records("count sessions").count(self._now())

    def migrate_to(self, store: Store, progress: Progress | None = None) -> int:
        """Copy every live session into ``store`` under the same handle; returns how many were written.

        Cookies name sessions by id and records are keyed by the id's hash,
        the same in every store, so a copied session carries on where it was:
        nobody is logged out once the app is pointed at ``store``. Running it
        again brings ``store`` up to date: a record it already holds
        unchanged is skipped, one that differs is overwritten with this
        store's version. Sessions that ended here after an earlier run are
        still in ``store``; :meth:`prune_copy` removes them.
        """
        now = self._now()
        handles = [handle for handle, _ in self._records("migrate sessions").sessions(now)]
        written = 0
        if progress is not None:
            progress(0, len(handles))
        for done, handle in enumerate(handles, 1):
            record = self._records("migrate sessions").load(handle)
            if record is not None and record.expires_at > now:
                existing = store.load(handle)
                if existing != record:
                    if existing is not None:
                        store.delete(handle)  # ``create`` is for new keys only
                    store.create(handle, record)
                    written += 1
            if progress is not None:
                progress(done, len(handles))
        return written

    def prune_copy(self, store: Store) -> int:
        """Delete the sessions ``store`` holds that are not live here; returns how many.

        After :meth:`migrate_to` has run more than once, a session logged out
        or revoked here in between would otherwise come back to life in the
        copy. Only for a ``store`` that holds nothing but this app's copy.
        """
        now = self._now()
        live = {handle for handle, _ in self._records("list sessions").sessions(now)}
        return sum(store.delete(handle) for handle, _ in store.sessions(now) if handle not in live)
