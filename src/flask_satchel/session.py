"""The object behind ``flask.session``: a dict that loads itself on first use.

Flask opens the session for every request, before the view runs. Loading it
there would cost a store round trip on every request, including the ones
that never look at the session (static files, health checks, JSON APIs). So
the session starts empty and unloaded, and the first dict operation loads it.
``save_session`` skips a session that was never loaded: no store I/O, no
``Set-Cookie``, no ``Vary: Cookie``.

What changed, and how values are decoded lazily, is ``tracking.py``'s job;
this class adds identity (sid, handle, permanent), the lifecycle
(``regenerate``, ``destroy``) and loading on first use to it. Its state
changes only here: the interfaces (:class:`Backend`) read it, and tell the
session what happened through the methods of the "What the interface tells
the session" section, each one transition.
"""

from __future__ import annotations

import typing as t

from flask.sessions import SessionMixin

from .tracking import IMMUTABLE, MISSING, TrackedDict

if t.TYPE_CHECKING:
    from flask import Flask, Request

    from .settings import Settings
    from .stores.base import Record


class Backend(t.Protocol):
    """What a session asks of the interface that opened it (the server one or the cookie one)."""

    settings: Settings

    def load(self, session: ServerSession) -> bool:
        """Fill ``session`` from its cookie (and the store); True when the request had a session cookie."""

    # What session.sid, .handle, .regenerate() and .destroy() answer and do;
    # sid_for is None where there is no secret id (the cookie mode).
    def sid_for(self, session: ServerSession) -> str | None: ...
    def handle_for(self, session: ServerSession) -> str: ...
    def regenerate(self, session: ServerSession) -> None: ...
    def destroy(self, session: ServerSession) -> None: ...

    def admit_user(self, session: ServerSession, user: t.Any) -> None:
        """Called before the user key is set: may refuse the login (``SESSION_MAX_PER_USER``)."""

    def release(self, session: ServerSession) -> None:
        """Give back the session lock the request holds."""


class ServerSession(TrackedDict, SessionMixin):
    """A session kept in a store, sent to the browser as an opaque id."""

    # Per-request state. Defaults live on the class, so opening a session (on
    # every request, used or not) sets three attributes, not twenty.
    _loaded = False
    # A plain attribute, not a property: Flask sets it even to read
    # ``session.modified``, and a property cost a call on each of those uses.
    #: True once the view used ``flask.session`` at all (Flask sets it on every
    #: use of the proxy): the response then carries ``Vary: Cookie``. It does
    #: not mean the session was loaded from the store.
    accessed = False
    _new = True
    #: The store failed during this request: nothing will be written.
    _broken = False
    #: The session id; None until one is needed.
    _sid: str | None = None
    #: The cookie store's handle (server stores derive it from the sid).
    _handle: str | None = None
    #: The record as loaded (for created_at, last_seen, expiry), if any.
    _record: Record | None = None
    #: A record exists in the store under the current sid.
    _stored = False
    #: The request came with a session cookie, valid or not.
    _had_cookie = False
    #: The handle this session had before ``regenerate()``, until the new record is stored.
    _regenerated_from: str | None = None
    #: ``destroy()`` was called during this request.
    _destroyed = False
    #: The record's key when it is not the hash of the sid: a request that
    #: came with a rotated sid during the grace window writes to the new record.
    _key: str | None = None
    #: The sid was rotated while loading: the new one must be sent.
    _rotated = False
    #: (key, token) of the session lock this request holds (``SESSION_LOCKING``).
    _lock: tuple[str, str] | None = None
    _permanent_changed = False
    #: ``save_session`` ran for this request (Flask calls it a second time when the first raised).
    _saved = False
    #: When an imported Flask-Session session would have died (``SESSION_MIGRATE_FLASK_SESSION``).
    _import_deadline: float | None = None

    def __init__(self, interface: Backend, app: Flask, request: Request | None) -> None:
        # No dict.__init__: with no arguments it does nothing, and this runs on every request.
        self._interface = interface
        self._app = app
        self._request = request
        self._permanent = interface.settings.permanent

    # Loading ---------------------------------------------------------------

    @property
    def new(self) -> bool:
        """True when the request came with no live session (answering needs a load)."""
        self._load()
        return self._new

    @new.setter
    def new(self, value: bool) -> None:
        self._new = value

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self.accessed = True  # a load without the proxy (the interface's own code) counts too
            if self._interface.load(self):
                self._had_cookie = True

    # What the interface tells the session: each method one transition --------

    def _restore(self, record: Record, sid: str | None, handle: str | None = None) -> None:
        """Become the stored session ``record``, found under ``sid`` (or, sealed in the cookie, ``handle``)."""
        self._fill(record.data)
        self._sid = sid
        if handle is not None:
            self._handle = handle
        self._record = record
        self._stored = True
        self._permanent = record.permanent
        self._new = False

    def _assign(self, sid: str | None = None, handle: str | None = None) -> None:
        """The id (or the cookie mode's handle) a new session gets when it first needs one."""
        self._sid = sid
        self._handle = handle

    def _follow(self, key: str) -> None:
        """Write to the record under ``key``: another request rotated the sid, this one has the old one."""
        self._key = key

    def _rotate(self, sid: str, record: Record) -> None:
        """Carry on under a new sid (``SESSION_ROTATE_INTERVAL``), whose cookie this response must send."""
        self._sid = sid
        self._record = record
        self._rotated = True

    def _created(self) -> None:
        """The new session's record is in the store."""
        self._stored = True

    def _announced(self) -> str | None:
        """The handle this session had before ``regenerate()``, once: its new record is stored now."""
        old, self._regenerated_from = self._regenerated_from, None
        return old

    def _fail(self) -> None:
        """The store failed during this request: nothing will be written."""
        self._broken = True

    def _hold(self, lock: tuple[str, str]) -> None:
        """This request holds the session lock ``lock`` (``SESSION_LOCKING``)."""
        self._lock = lock

    def _unlock(self) -> tuple[str, str] | None:
        """The lock this request held, if any, which it no longer holds."""
        held, self._lock = self._lock, None
        return held

    def _first_save(self) -> bool:
        """True the first time ``save_session`` runs for this request (Flask calls it again after an error)."""
        if self._saved:
            return False
        self._saved = True
        return True

    def _renew(self, old_handle: str | None, *, sid: str | None = None, handle: str | None = None) -> None:
        """A new id for the same data (``regenerate()``): stored anew at the end of the request."""
        self._regenerated_from = self._regenerated_from or old_handle
        self._key = None
        self._sid = sid
        if handle is not None:
            self._handle = handle
        self._stored = False
        self.modified = True

    def _forget(self, permanent: bool) -> None:
        """Become a new, empty session that deletes the cookie unless filled again (``destroy()``)."""
        dict.clear(self)
        self._pending = set()
        self._sid = None
        self._key = None
        self._handle = None
        self._record = None
        self._original = {}
        self._stored = False
        self._regenerated_from = None
        self._import_deadline = None
        self._destroyed = True
        self._permanent = permanent
        self.modified = True

    def _adopt(self, data: dict[str, t.Any], permanent: bool, deadline: float) -> None:
        """Take over another library's session: stored as a new one, living no longer than ``deadline``."""
        self._permanent = permanent
        dict.update(self, data)
        self._touched = None
        self._import_deadline = deadline
        self.modified = True
        self._new = False

    # Session identity ------------------------------------------------------

    @property
    def sid(self) -> str | None:
        """The secret session id (the cookie's value, before signing); None for the cookie store."""
        self._load()
        return self._interface.sid_for(self)

    @property
    def handle(self) -> str:
        """The public id of this session, safe to show, list and revoke."""
        self._load()
        return self._interface.handle_for(self)

    @property
    def permanent(self) -> bool:
        """Flask's permanent flag; kept as metadata, never as a key."""
        self._load()
        return self._permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self._load()
        if bool(value) != self._permanent:
            self._permanent = bool(value)
            self._permanent_changed = True
            self.modified = True

    def regenerate(self) -> None:
        """Give the session a new id, keep its data; the old id dies at once.

        Call it when the user logs in, so an id planted before the login
        (session fixation) is worthless.
        """
        self._load()
        self._interface.regenerate(self)

    def destroy(self) -> None:
        """Delete the session from the store and the cookie from the browser.

        Call it on logout. Requests still running with the old id cannot
        bring it back. Values set after ``destroy()`` start a new session.
        """
        self._load()
        self._interface.destroy(self)

    # The dict interface, loading first ------------------------------------

    # The two readers views call most: a value that cannot change in place
    # (a string, a number) is returned without a call to ``_hand_out``.

    def __getitem__(self, key: str) -> t.Any:
        if not self._loaded:
            self._load()
        if key in self._pending:
            value = self._decode(key)
            if value is MISSING:
                raise KeyError(key)
        else:
            value = dict.__getitem__(self, key)
        return value if type(value) in IMMUTABLE else self._hand_out(key, value)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        if not self._loaded:
            self._load()
        if key in self._pending:
            value = self._decode(key)
            if value is MISSING:
                return default
        else:
            value = dict.get(self, key, MISSING)
            if value is MISSING:
                return default
        return value if type(value) in IMMUTABLE else self._hand_out(key, value)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self) -> t.Iterator[str]:
        self._load()
        return super().__iter__()

    def __reversed__(self) -> t.Iterator[str]:
        self._load()
        return super().__reversed__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __eq__(self, other: object) -> bool:
        self._load()
        self._decode_all()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._load()
        self._decode_all()
        return f"<{type(self).__name__} {super().__repr__()}>"

    def keys(self) -> t.KeysView[str]:  # type: ignore[override]
        self._load()
        return super().keys()

    def values(self) -> t.ValuesView[t.Any]:  # type: ignore[override]
        self._load()
        self._decode_all()
        self._touched = None
        return super().values()

    def items(self) -> t.ItemsView[str, t.Any]:  # type: ignore[override]
        self._load()
        self._decode_all()
        self._touched = None
        return super().items()

    def copy(self) -> dict[str, t.Any]:
        self._load()
        self._decode_all()
        self._touched = None
        return dict(super().items())

    def __or__(self, other: t.Any) -> dict[str, t.Any]:  # type: ignore[override]
        merged: dict[str, t.Any] = self.copy() | other
        return merged

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._load()
        if key == self._interface.settings.user_key:
            self._interface.admit_user(self, value)
        self._touch(key)
        if key in self._pending:
            self._pending.discard(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._load()
        self._touch(key)
        if key in self._pending:
            self._pending.discard(key)
        super().__delitem__(key)

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        self._load()
        if key in self._pending:
            self._decode(key)
        if not super().__contains__(key):
            self._touch(key)
        return self._hand_out(key, super().setdefault(key, default))

    def pop(self, key: str, default: t.Any = MISSING) -> t.Any:
        self._load()
        if key in self._pending:
            self._decode(key)
        if super().__contains__(key):
            self._touch(key)
        return super().pop(key) if default is MISSING else super().pop(key, default)

    def popitem(self) -> tuple[str, t.Any]:
        self._load()
        self._decode_all()
        self._touch()
        return super().popitem()

    def clear(self) -> None:
        self._load()
        self._touch()
        self._pending = set()
        super().clear()

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._load()
        self._touch()
        new = dict(*args, **kwargs)
        if self._pending:
            self._pending.difference_update(new)
        super().update(new)

    def __ior__(self, other: t.Mapping[str, t.Any] | t.Iterable[tuple[str, t.Any]]) -> ServerSession:  # type: ignore[override,misc]
        self.update(other)
        return self
