"""The ``SessionInterface`` of the encrypted cookie mode (``SESSION_TYPE = "cookie"``).

Expiry, refresh, change detection and cookie attributes work as for the
server stores (``base_interface.py``); what differs is where the session
lives. It is sealed into the cookie (``sealer.py``), so there is no sid
(``session.sid`` is None), the handle is a random id sealed with the data,
and a change means a new cookie rather than a store write. Revoking a user
is a mark on a server (``revocations.py``).
"""

from __future__ import annotations

import secrets
import typing as t

from .. import signals
from ..base_interface import BaseSessionInterface, security_log
from ..cookies import cookie_value
from ..errors import SessionTooLarge
from ..legacy.flask_cookies import read_flask_cookie
from ..stores.base import merge
from .sealer import Sealed, Sealer

if t.TYPE_CHECKING:
    from flask import Flask, Response

    from ..session import ServerSession
    from ..settings import Settings
    from .revocations import Revocations

#: The largest Set-Cookie browsers are sure to keep, as Flask counts it.
MAX_COOKIE_SIZE = 4093


class CookieSessionInterface(BaseSessionInterface):
    """Sessions sealed into the cookie with AES-256-GCM."""

    needs_secret = True

    def __init__(self, settings: Settings, revocations: Revocations) -> None:
        super().__init__(settings)
        self.sealer = Sealer()
        self.revocations = revocations

    def sid_for(self, session: ServerSession) -> str | None:
        return None

    def handle_for(self, session: ServerSession) -> str:
        handle = session._handle
        if handle is None:
            handle = secrets.token_hex(16)
            session._assign(handle=handle)
        return handle

    def _secrets(self, app: Flask) -> list[str | bytes]:
        """Newest first: the current key, then the fallbacks from newest to oldest."""
        return [app.secret_key, *reversed(app.config.get("SECRET_KEY_FALLBACKS") or ())]

    def load(self, session: ServerSession) -> bool:
        app, request = session._app, session._request
        name = self.get_cookie_name(app)
        value = cookie_value(request, name) if request is not None else None
        if value is None:
            return False
        sealed = self.sealer.open(value, name, self._secrets(app))
        if sealed is None:
            if self.settings.migrate_flask_cookies and self._take_over(
                session, read_flask_cookie(app, value, self.settings.permanent), "Flask cookie"
            ):
                return True
            security_log.warning(
                "Rejected a tampered, truncated or foreign session cookie from %s",
                request.remote_addr if request is not None else "?",
            )
            return True
        now = self.now()
        if now >= min(sealed.expires_at, self.changes.deadline(app, sealed.created_at, sealed.last_seen)):
            security_log.info("Refused an expired session cookie (session %s)", sealed.handle)
            return True
        if sealed.user is not None:
            after, kept = self._guard(session, self.revocations.valid_after, sealed.user)
            if sealed.issued_at < after and sealed.handle != kept:
                security_log.info("Refused a revoked session cookie (session %s)", sealed.handle)
                return True
        session._restore(sealed.record(), None, sealed.handle)
        return True

    def regenerate(self, session: ServerSession) -> None:
        # A sealed cookie cannot be recalled; a new handle and a fresh seal
        # are what regenerate can honestly do (revoke_user refuses old seals).
        session._renew(session._handle if session._stored else None, handle=secrets.token_hex(16))

    def destroy(self, session: ServerSession) -> None:
        if session._stored:
            signals.session_destroyed.send(session._app, handle=self.handle_for(session))
        session._forget(self.settings.permanent)

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        now = self.now()
        if not dict.__len__(session):
            if session._had_cookie or session._destroyed:
                self.cookies.delete(app, session._request, response, destroyed=session._destroyed)
            return
        record = session._record
        if not session._stored or record is None:
            record = self.changes.new_record(app, session, now)
            self._announce(app, session, self.handle_for(session))
        else:
            change = self.changes.pending(app, session, record, now)
            if change is None:
                return  # read-only inside the refresh interval: the cookie the browser has is still right
            changed = change.set or change.removed or session._permanent_changed
            if not changed and change.last_seen == record.last_seen:
                return
            record = merge(record, change)
        sealed = Sealed.of(record, self.handle_for(session), now)
        value = self.sealer.seal(sealed, self.get_cookie_name(app), app.secret_key)  # type: ignore[arg-type]
        # Built once and measured, not built again by set_cookie: Werkzeug
        # checks a 2 KB value character by character with a regex.
        header = self.cookies.header(app, session._request, value, record, 0)
        self._check_size(app, header)
        self.cookies.send(response, header)

    def _check_size(self, app: Flask, header: str) -> None:
        size = len(header)
        limit = app.config.get("MAX_COOKIE_SIZE") or MAX_COOKIE_SIZE
        if size > limit:
            raise SessionTooLarge(
                f"The session cookie would be {size} bytes, over the {limit}-byte limit browsers keep;"
                " store less in the session, or move to a server-side store (SESSION_TYPE='sqlite',"
                " the default, or 'redis'), which has no such limit",
                size=size,
                limit=limit,
            )
