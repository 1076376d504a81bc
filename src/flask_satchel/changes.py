"""What a request writes: a whole record for a new session, a ``Change`` for a stored one, and when.

Expiry is computed here because every write carries it: a session dies at
the idle timeout (``PERMANENT_SESSION_LIFETIME``, read from the config on
every request as Flask does) or at the absolute one, whichever is first, and
a read-only request moves the idle deadline only once the refresh interval
has passed.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from .stores.base import Change, Record

if t.TYPE_CHECKING:
    from flask import Flask

    from .session import ServerSession
    from .settings import Settings


class Changes:
    """Builds the records and changes of one app's sessions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def deadline(self, app: Flask, created_at: float, last_seen: float) -> float:
        """When a session seen at ``last_seen`` dies: idle or absolute timeout, whichever is first."""
        return min(last_seen + idle_seconds(app), created_at + self.settings.store.absolute_lifetime)

    def refresh_due(self, app: Flask, record: Record, now: float) -> bool:
        # A tenth of the idle timeout at most, so a short lifetime stays accurate.
        return now - record.last_seen >= min(self.settings.refresh_interval, idle_seconds(app) / 10)

    def new_record(self, app: Flask, session: ServerSession, now: float) -> Record:
        """A whole record for a session that is not stored yet (new, regenerated or imported)."""
        previous = session._record
        created = previous.created_at if previous is not None else now
        encoded = session._encoded()
        expires_at = self.deadline(app, created, now)
        if session._import_deadline is not None:
            # An imported session keeps what was left of its life, never more.
            expires_at = min(expires_at, session._import_deadline)
        return Record(
            data=encoded,
            created_at=created,
            last_seen=now,
            expires_at=expires_at,
            permanent=session._permanent,
            user=self.user_of(encoded, session),
            client=self.client_of(session),
        )

    def pending(self, app: Flask, session: ServerSession, record: Record, now: float) -> Change | None:
        """What a stored session's request has to write, or None when it has nothing to write.

        None is the common case, a read-only request inside the refresh
        interval, and it is told apart without building a ``Change``.
        """
        refresh_due = self.refresh_due(app, record, now)
        delta = session._delta()
        if not (delta[0] or delta[1] or session._permanent_changed or refresh_due):
            return None
        return self.change(app, session, now if refresh_due else None, delta)

    def change(
        self,
        app: Flask,
        session: ServerSession,
        now: float | None,
        delta: tuple[dict[str, bytes], list[str]] | None = None,
    ) -> Change:
        """What the request changed, as a ``Change`` for the store.

        ``now`` set means the refresh interval has passed: the expiry moves
        (when the request changed something or the app refreshes on every
        request), and tracked client details are updated if they differ.
        """
        record = session._record
        assert record is not None
        changed, removed = session._delta() if delta is None else delta
        refresh_on_read = app.config["SESSION_REFRESH_EACH_REQUEST"]
        if now is not None and not (changed or removed or session._permanent_changed or refresh_on_read):
            now = None  # activity alone does not extend the session
        client = None
        if now is not None:
            client = self.client_of(session)
            if client == record.client:
                client = None
        user_key = self.settings.user_key
        return Change(
            set=changed,
            removed=removed,
            last_seen=record.last_seen if now is None else now,
            expires_at=record.expires_at if now is None else self.deadline(app, record.created_at, now),
            permanent=session._permanent,
            user_changed=user_key in changed or user_key in removed,
            user=self.user_of(changed, session),
            client=client,
        )

    def user_of(self, encoded: t.Mapping[str, bytes], session: ServerSession) -> str | None:
        """``str(session[SESSION_USER_KEY])`` when ``encoded`` holds that key, for the per-user index."""
        key = self.settings.user_key
        if key not in encoded:
            return None
        user = session._peek(key)
        return None if user is None else str(user)  # None: its stored bytes were unreadable, and dropped

    def client_of(self, session: ServerSession) -> dict[str, str] | None:
        """The ip and user agent for session lists, when ``SESSION_TRACK_CLIENT`` is on.

        ``remote_addr`` is what Werkzeug's ``ProxyFix`` rewrites, so behind a
        proxy configured with it this is the client's address.
        """
        request = session._request
        if not self.settings.track_client or request is None:
            return None
        return {"ip": request.remote_addr or "", "user_agent": request.user_agent.string[:256]}


def idle_seconds(app: Flask) -> float:
    """``PERMANENT_SESSION_LIFETIME`` in seconds, read from the config on each request as Flask does.

    The conversion is remembered for the value it was made from: timedeltas
    and numbers are immutable, so the same object means the same seconds.
    """
    global _idle_memo
    lifetime = app.config["PERMANENT_SESSION_LIFETIME"]
    memo = _idle_memo
    if memo[0] is lifetime:
        return memo[1]
    seconds = lifetime.total_seconds() if isinstance(lifetime, dt.timedelta) else float(lifetime)
    _idle_memo = (lifetime, seconds)
    return seconds


_idle_memo: tuple[object, float] = (object(), 0.0)
