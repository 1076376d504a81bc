"""What every Flask-Satchel ``SessionInterface`` shares, wherever its sessions live.

Opening is free: the session loads itself on first use, so a request that
never touches it costs nothing. Saving is the same skeleton for the server
stores (``interface.py``) and the encrypted cookie (``cookie/``): a session
never loaded is skipped, one that was is varied by cookie, a store that
fails is a 503 with ``Retry-After`` made on the response itself, and Flask's
second call on its error path does nothing. The subclasses say how a
session is loaded and written.
"""

from __future__ import annotations

import logging
import time
import typing as t

from flask.sessions import SessionInterface

from . import signals
from .changes import Changes
from .cookies import Cookies, vary_cookie
from .errors import StoreUnavailable
from .outages import OutageLog
from .session import Backend, ServerSession

if t.TYPE_CHECKING:
    from flask import Flask, Request, Response
    from flask.sessions import SessionMixin

    from .legacy import Imported
    from .settings import Settings

#: Tampered or malformed cookies and unreadable records are reported here.
security_log = logging.getLogger("flask_satchel.security")
log = logging.getLogger("flask_satchel")


class BaseSessionInterface(SessionInterface, Backend):
    """The shared part of Flask-Satchel's interfaces; subclasses load and write sessions.

    What a session asks of it is :class:`~flask_satchel.session.Backend`;
    the subclasses answer ``load``, ``sid_for``, ``handle_for``,
    ``regenerate`` and ``destroy``, and write in ``_save``.
    """

    #: The clock; tests replace it instead of sleeping.
    now: t.Callable[[], float] = staticmethod(time.time)
    #: Sessions need ``app.secret_key`` (to sign ids, or to seal cookies); without it they are Flask's null session.
    needs_secret = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Builds records and changes, with their expiry.
        self.changes = Changes(settings)
        #: Sets and deletes the cookie, with Flask's attributes read per request.
        self.cookies = Cookies(self, settings)
        #: Where this store's outages are reported: one log line every few seconds at most.
        self.outages = OutageLog(settings.type)

    # What a session asks of its interface ----------------------------------

    def admit_user(self, session: ServerSession, user: t.Any) -> None:
        """Called as the view sets ``SESSION_USER_KEY``; may refuse the login (``TooManySessions``)."""

    def release(self, session: ServerSession) -> None:
        """Give back the session's lock, where the interface takes locks."""

    # Flask's SessionInterface ---------------------------------------------

    def open_session(self, app: Flask, request: Request) -> ServerSession | None:
        # Nothing is read here: the session loads itself when first used.
        if self.needs_secret and not app.secret_key:
            # As Flask does without a key: its NullSession reads as empty and
            # refuses writes with Flask's own "session is unavailable" error.
            return None
        return ServerSession(self, app, request)

    def is_null_session(self, obj: object) -> bool:
        # Flask asks this after every request; NullSession is an ABC, and
        # isinstance on an ABC is slow for what is nearly always our own session.
        return type(obj) is not ServerSession and isinstance(obj, self.null_session_class)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        # type() first: SessionMixin is an ABC, and isinstance on it is slow.
        if not (type(session) is ServerSession or isinstance(session, ServerSession)):
            return
        if not session._first_save():
            # Flask calls this again on its error path when the first call
            # raised; what could be written was written (or undone) then.
            return
        if not session._loaded:
            if session.accessed:  # the proxy was used, the data never was: nothing to write
                vary_cookie(response)
            return  # never touched: no store I/O, no cookie, no Vary
        vary_cookie(response)
        try:
            if not session._broken:
                self._save(app, session, response)
        except StoreUnavailable as e:
            self.outages.answer(response, e)
            return
        finally:
            if session._lock is not None:
                self.release(session)
        self._saved_one()

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Write what the request changed, and set or delete the cookie."""
        raise NotImplementedError

    def _saved_one(self) -> None:
        """Called after each request whose session was saved (for periodic work)."""

    # Helpers for the subclasses -------------------------------------------

    def _take_over(self, session: ServerSession, imported: Imported | None, what: str) -> bool:
        """Fill ``session`` with a session another library kept, if there is one still alive."""
        if imported is None or imported.expires_at <= self.now():
            return False
        session._adopt(imported.data, imported.permanent, imported.expires_at)
        log.info("Moved a %s session into Flask-Satchel", what)
        return True

    def _guard(self, session: ServerSession, op: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """Run a store operation; if the store is down, mark the session broken so nothing is written."""
        try:
            return op(*args)
        except StoreUnavailable:
            session._fail()
            raise

    def _announce(self, app: Flask, session: ServerSession, handle: str) -> None:
        """``session_created``, or ``session_regenerated`` for a session that got a new id."""
        old = session._announced()
        if old is None:
            signals.session_created.send(app, handle=handle)
        else:
            signals.session_regenerated.send(app, handle=handle, old_handle=old)
