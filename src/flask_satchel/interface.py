"""Flask's ``SessionInterface`` for every server-side store.

This module owns everything a store should not have to know: cookies, ids,
expiry, refresh, and what a request changed. At the end of a request the
session's values are encoded and compared with the bytes that were loaded;
only keys whose bytes differ are sent to the store, which merges them into
the record as it is *then*. Two overlapping requests of one user that change
different keys therefore both survive, which is not true of a session that
is written back whole.

Concurrency contract, in plain words: changes to different keys merge;
changes to the same key are last-writer-wins; a request that started before
``destroy()``, ``regenerate()`` or a revoke can never write the old session
back, because stores refuse to apply a change to a record that is gone.
"""

from __future__ import annotations

import itertools
import logging
import typing as t

import msgspec

from . import ids, signals
from .base_interface import BaseSessionInterface, security_log
from .cookies import cookie_value
from .errors import StoreUnavailable
from .legacy.flask_cookies import read_flask_cookie
from .locking import SessionLocks
from .policy import UserCap
from .rotation import Rotation
from .session import ServerSession
from .stores.base import Change, LockingStore, Record

if t.TYPE_CHECKING:
    from flask import Flask, Response

    from .legacy import Importer
    from .settings import Settings
    from .stores.base import Store

log = logging.getLogger("flask_satchel")


class SatchelSessionInterface(BaseSessionInterface):
    """Sessions kept in a :class:`~flask_satchel.stores.base.Store`."""

    def __init__(self, settings: Settings, store: Store) -> None:
        super().__init__(settings)
        self.store = store
        #: How a sid travels in the cookie (signed or not).
        self.sids = ids.SidCookie(settings.id_length, settings.use_signer)
        #: Sessions need ``app.secret_key``: to sign ids (``SESSION_USE_SIGNER``), or to seal cookies.
        self.needs_secret = self.sids.signed
        self._saves = itertools.count(1)
        #: Automatic id rotation (``SESSION_ROTATE_INTERVAL``), if on.
        self.rotation = (
            None
            if settings.rotate_interval is None
            else Rotation(store, settings.rotate_interval, settings.rotation_grace)
        )
        #: Session locks (``SESSION_LOCKING``), if on.
        self.locks = (
            SessionLocks(t.cast(LockingStore, store), settings.lock_timeout, settings.lock_lease)
            if settings.store.locking
            else None
        )
        #: The per-user cap (``SESSION_MAX_PER_USER``), if set.
        self.cap = (
            None
            if settings.max_per_user is None
            else UserCap(store, settings.max_per_user, settings.max_per_user_policy)
        )
        #: Reads Flask-Session's records (``SESSION_MIGRATE_FLASK_SESSION``); set by ``init_app``.
        self.importer: Importer | None = None

    # Ids ------------------------------------------------------------------

    def sid_for(self, session: ServerSession) -> str | None:
        return self._sid(session)

    def handle_for(self, session: ServerSession) -> str:
        return session._key or ids.key_of(self._sid(session))

    def _sid(self, session: ServerSession) -> str:
        """The session's id, made when first needed (a new session may never need one)."""
        sid = session._sid
        if sid is None:
            sid = self.sids.new()
            session._assign(sid=sid)
        return sid

    # Loading --------------------------------------------------------------

    def load(self, session: ServerSession) -> bool:
        """Fill ``session`` from its cookie and the store (called on first use); True if there was a cookie."""
        app, request = session._app, session._request
        value = cookie_value(request, self.get_cookie_name(app)) if request is not None else None
        if value is None:
            return False
        sid = self.sids.read(app, value)
        if sid is None:
            if self.settings.migrate_flask_cookies and self._take_over(
                session, read_flask_cookie(app, value, self.settings.permanent), "Flask cookie"
            ):
                return True
            if self.importer is not None and self._take_over(
                session, self._guard(session, self.importer.take, app, value), "Flask-Session"
            ):
                return True
            security_log.warning(
                "Rejected a malformed or tampered session cookie from %s",
                request.remote_addr if request is not None else "?",
            )
            return True
        key = ids.key_of(sid)
        if self.locks is not None:
            session._hold(self._guard(session, self.locks.acquire, key))
        try:
            record = self.store.load(key)  # not through _guard: this is every request's one call
        except StoreUnavailable:
            session._fail()
            raise
        except (ValueError, TypeError) as e:  # msgspec.DecodeError is a ValueError
            security_log.warning("Unreadable session record %s, starting a new session: %s", key, e)
            return True
        rotation = self.rotation
        if record is None and rotation is not None:
            forwarded = self._guard(session, rotation.follow, key, self.now())
            if forwarded is not None:  # a sid rotated moments ago, still in its grace window
                key, record = forwarded
                session._follow(key)
        if record is None:
            if self.importer is not None:
                self._take_over(session, self._guard(session, self.importer.take, app, value), "Flask-Session")
            return True  # unknown, expired or revoked: never adopted
        now = self.now()
        if now >= min(record.expires_at, self.changes.deadline(app, record.created_at, record.last_seen)):
            self._guard(session, self.store.delete, key)
            signals.session_expired.send(app, handle=key)
            return True
        session._restore(record, sid)
        if rotation is not None and session._key is None and rotation.due(record, now):
            self._guard(session, self._rotate, session, rotation, key, record, now)
        return True

    # Rotation and locking ---------------------------------------------------

    def _rotate(self, session: ServerSession, rotation: Rotation, key: str, record: Record, now: float) -> None:
        """Give a long-lived session a new sid; the old one forwards to it for a grace window."""
        sid = self.sids.new()
        new_key = ids.key_of(sid)
        renewed = msgspec.structs.replace(
            record, last_seen=now, expires_at=self.changes.deadline(session._app, record.created_at, now)
        )
        if rotation.rotate(key, new_key, renewed, now):
            session._rotate(sid, renewed)
            signals.session_regenerated.send(session._app, handle=new_key, old_handle=key)

    def _apply(self, session: ServerSession, change: Change) -> int | None:
        """``store.apply``, following a rotation that happened while the request ran."""
        if self.rotation is None:
            return self.store.apply(self.handle_for(session), change)
        handle = self.handle_for(session)
        key, remaining = self.rotation.apply(handle, change, self.now())
        if key != handle:  # the session was rotated: the rest of the request writes to the new record
            session._follow(key)
        return remaining

    def _touch(self, session: ServerSession, change: Change) -> bool:
        """``store.touch``, following a rotation like ``_apply``."""
        if self.rotation is None:
            return self.store.touch(self.handle_for(session), change.last_seen, change.expires_at)
        handle = self.handle_for(session)
        key, alive = self.rotation.touch(handle, change, self.now())
        if key != handle:
            session._follow(key)
        return alive

    def release(self, session: ServerSession) -> None:
        """Give the session's lock back, if this request holds one."""
        held = session._unlock()
        if held is not None and self.locks is not None:
            self.locks.release(held)

    # Explicit lifecycle ----------------------------------------------------

    def regenerate(self, session: ServerSession) -> None:
        old = self.handle_for(session) if session._stored else None
        if session._stored:
            self._guard(session, self.store.delete, old)
        session._renew(old, sid=self.sids.new())

    def destroy(self, session: ServerSession) -> None:
        if session._stored:
            handle = self.handle_for(session)
            self._guard(session, self.store.delete, handle)
            signals.session_destroyed.send(session._app, handle=handle)
        session._forget(self.settings.permanent)

    def admit_user(self, session: ServerSession, user: t.Any) -> None:
        """Refuse a login past ``SESSION_MAX_PER_USER`` when the policy is "refuse"."""
        if self.cap is None or user is None:
            return
        own = self.handle_for(session) if session._stored else None
        self._guard(session, self.cap.admit, str(user), own, self.now())

    def _enforce_cap(self, app: Flask, user: str | None, own: str) -> None:
        """Revoke a user's least recently seen sessions past ``SESSION_MAX_PER_USER``."""
        if self.cap is not None and user is not None:
            self.cap.enforce(app, user, own, self.now())

    # Saving ---------------------------------------------------------------

    def _saved_one(self) -> None:
        n = self.settings.cleanup_n_requests
        if n is not None and next(self._saves) % n == 0:
            self._periodic_cleanup()

    def _periodic_cleanup(self) -> None:
        """``SESSION_CLEANUP_N_REQUESTS``: purge expired records on the back of a user's request.

        The request has its answer already; whatever goes wrong here is the
        operator's to see in the log, never the user's to see as an error page.
        """
        try:
            self.store.cleanup(self.now())
        except Exception:
            log.exception("Periodic session cleanup failed")

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        store = self.store
        now = self.now()
        if not dict.__len__(session):
            # Only this request's deletions: keys other requests added survive.
            if session._stored and self._apply(session, self.changes.change(app, session, now)):
                return
            if session._destroyed or (session._had_cookie and not self._keeps_unknown_cookie(session)):
                self.cookies.delete(app, session._request, response, destroyed=session._destroyed)
            return

        if not session._stored:
            record = self.changes.new_record(app, session, now)
            handle = self.handle_for(session)
            store.create(handle, record)
            try:
                self.cookies.set(app, session._request, response, self.sids.value(app, self._sid(session)), record)
                self._announce(app, session, handle)
            except BaseException:
                # Flask answers with its error page, not this response: no
                # cookie will carry the new id, so nobody could reach the record.
                self._discard(handle)
                raise
            session._created()
            self._enforce_cap(app, record.user, handle)
            return

        stored = session._record
        assert stored is not None
        change = self.changes.pending(app, session, stored, now)
        if change is None:
            if session._rotated:
                self.cookies.set(app, session._request, response, self.sids.value(app, self._sid(session)), stored)
            return  # read-only, inside the refresh interval: the common case, and nothing to do
        refresh = change.last_seen != stored.last_seen
        if change.set or change.removed or session._permanent_changed or change.client is not None:
            if not self._apply(session, change):  # gone (revoked, destroyed elsewhere) or emptied
                self.cookies.delete(app, session._request, response, destroyed=session._destroyed)
                return
            if change.user_changed:
                self._enforce_cap(app, change.user, self.handle_for(session))
        elif refresh and not self._refresh(session, change):
            self.cookies.delete(app, session._request, response, destroyed=session._destroyed)
            return
        if (
            session._rotated
            or session._permanent_changed
            or (refresh and session._permanent)
            or self._signed_with_old_key(app, session)
        ):
            self.cookies.set(app, session._request, response, self.sids.value(app, self._sid(session)), change)

    def _signed_with_old_key(self, app: Flask, session: ServerSession) -> bool:
        """A written session whose cookie was signed with a fallback key: it is signed anew, as Flask does.

        Otherwise removing the old key from ``SECRET_KEY_FALLBACKS`` later
        would log out every user whose session was never re-sent.
        """
        if not self.sids.signed or session._request is None:
            return False
        return self.sids.stale(app, cookie_value(session._request, self.get_cookie_name(app)), self._sid(session))

    def _refresh(self, session: ServerSession, change: Change) -> bool:
        """Extend a read-only request's session; False when it is gone.

        The read worked, so the page is right: a store that can read but
        not write just now (full, read-only, a replica mid-failover) costs
        the session its extension, logged, not the user their page.
        """
        try:
            return self._touch(session, change)
        except StoreUnavailable as e:
            self.outages.report(e)
            return True

    def _keeps_unknown_cookie(self, session: ServerSession) -> bool:
        """While Flask-Session sessions are imported, a cookie that named nothing is left alone.

        It may be an old cookie that another request of the same browser is
        importing at this moment; deleting it here could arrive after, and
        so delete, the new cookie that request sends.
        """
        return self.importer is not None and not session._stored and not session.modified

    def _discard(self, handle: str) -> None:
        """Delete a record this request created but could not hand out, if the store lets us."""
        try:
            self.store.delete(handle)
        except StoreUnavailable as e:
            log.warning("Could not delete session %s after a failed save (it will expire): %s", handle, e)
