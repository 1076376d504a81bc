"""The object behind ``flask.session``: a dict that loads itself on first use.

Flask opens the session for every request, before the view runs. Loading it
there would cost a store round trip on every request, including the ones
that never look at the session (static files, health checks, JSON APIs). So
the session starts empty and unloaded, and the first dict operation loads it.
``save_session`` skips a session that was never loaded: no store I/O, no
``Set-Cookie``, no ``Vary: Cookie``.

Values are decoded when the view first reads them, not when the record
loads: a request that reads the user id out of a session of twenty keys
decodes one. Keys still in their stored form (``_pending``) cannot have
changed, so they cost nothing at the end of the request either.

What changed is found by value, not by trusting ``session.modified``: at the
end of the request the interface encodes each value that *may* have changed
and compares it with the bytes it loaded, which catches in-place changes to
nested lists and dicts too. A value may have changed if it was written, or if
a mutable value (a list, a dict) was handed to the view; a view that only
reads strings and numbers costs no encoding at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import marshal
import typing as t
import uuid

from flask.sessions import SessionMixin
from markupsafe import Markup

from . import serialization
from .errors import SerializationError

if t.TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem
    from flask import Flask, Request

    from .interface import SatchelSessionInterface
    from .stores.base import Record

_MISSING: t.Any = object()
security_log = logging.getLogger("flask_satchel.security")
_decode_value = serialization.decode_unchecked
_check_depth = serialization.check_depth
_MAX_DEPTH = serialization.MAX_DEPTH

#: Values a view cannot change in place: handing them out marks nothing.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, Markup, uuid.UUID, dt.datetime, dt.date, dt.time})


class ServerSession(dict[str, t.Any], SessionMixin):
    """A session kept in a store, sent to the browser as an opaque id."""

    #: Set by any change made through the dict interface; nested changes are
    #: found at the end of the request even when this stays False.
    modified: bool = False

    # Per-request state. Defaults live on the class, so opening a session (on
    # every request, used or not) sets three attributes, not twenty.
    _loaded = False
    #: True once the view touched ``flask.session`` at all: the response then
    #: varies by cookie. Flask sets it on every use of the proxy, even to read
    #: ``session.modified``, which is no reason to load from the store; a plain
    #: attribute, because a property here cost a call on each of those uses.
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
    #: Encoded values as loaded: the baseline the end-of-request diff uses (replaced, never mutated).
    _original: dict[str, bytes] = {}
    #: Keys whose dict value is still the stored bytes, decoded on first read.
    #: Shared and immutable until a record loads, so test membership before discarding.
    _pending: set[str] = t.cast("set[str]", frozenset())
    #: Keys whose values may differ from ``_original``; None means any key. A
    #: stored session gets its own set when it loads; a new one is encoded whole.
    _touched: set[str] | None = None
    #: A cheap exact image (see ``snapshot``) of each mutable value as it was
    #: first handed out, before the view could change it in place. Filled only
    #: while ``_touched`` is a set, which ``_fill`` gives each session with its own dict.
    _snapshots: dict[str, bytes] = {}
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

    def __init__(self, interface: SatchelSessionInterface, app: Flask, request: Request | None) -> None:
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
            self._interface.load(self)

    def _fill(self, encoded: dict[str, bytes]) -> None:
        """Take a stored record's values, still encoded: each is decoded when first read."""
        dict.update(self, encoded)
        self._original = encoded
        self._pending = set(encoded)
        self._touched = set()
        self._snapshots = {}

    def _decode(self, key: str) -> t.Any:
        """Replace the stored bytes of ``key`` with its value, and return it (``_MISSING`` if dropped).

        Called only for keys in ``_pending``. A value that will not decode (a
        store written by hand, a bug, bytes crafted to overflow a date or
        exhaust the stack) is dropped with a warning: the view sees the key
        as missing, the other keys are unharmed, and the next save deletes
        the unreadable bytes. Whatever decoding raises counts: a crafted
        extension can make it raise nearly anything.
        """
        self._pending.discard(key)
        raw = dict.__getitem__(self, key)
        try:
            value = _decode_value(raw)
            if len(raw) > _MAX_DEPTH:  # shorter bytes cannot nest that deep (see serialization.check_depth)
                _check_depth(raw, value)
        except Exception as e:
            security_log.warning("Unreadable value of session key %r, dropped: %s: %s", key, type(e).__name__, e)
            dict.__delitem__(self, key)
            if self._touched is not None:
                self._touched.add(key)  # so the save deletes it from the store
            return _MISSING
        dict.__setitem__(self, key, value)
        return value

    def _decode_all(self) -> None:
        for key in list(self._pending):
            self._decode(key)

    def _peek(self, key: str) -> t.Any:
        """The value of ``key`` for the interface's own use: decoded, not marked as handed out.

        None when the stored bytes were unreadable, and so dropped.
        """
        if key in self._pending:
            value = self._decode(key)
            return None if value is _MISSING else value
        return dict.__getitem__(self, key)

    def _encoded(self) -> dict[str, bytes]:
        """Every value encoded, for a whole new record: undecoded ones as stored.

        ``SerializationError`` names the key whose value cannot be stored.
        """
        pending, original = self._pending, self._original
        try:
            return {
                key: original[key] if key in pending else serialization.encode_value(value)
                for key, value in dict.items(self)
            }
        except SerializationError as e:
            error = e  # found again below, key by key: the comprehension cannot say which key failed
        for key, value in dict.items(self):
            if key not in pending:
                try:
                    serialization.encode_value(value)
                except SerializationError as e:
                    raise SerializationError(f"session key {key!r}: {e}") from e
        raise error

    def _delta(self) -> tuple[dict[str, bytes], list[str]]:
        """The keys the request set (with their new bytes) and removed, by comparing encoded bytes.

        Only keys written or handed out as mutable values are encoded; a
        request that read strings and numbers costs nothing here.
        """
        touched = self._touched
        if not touched and touched is not None:
            return {}, []
        original = self._original
        candidates: t.Iterable[str] = original.keys() | dict.keys(self) if touched is None else touched
        changed: dict[str, bytes] = {}
        removed: list[str] = []
        pending, snapshots = self._pending, self._snapshots
        for key in candidates:
            if key in pending:
                continue  # never read, so unchanged
            if dict.__contains__(self, key):
                value = dict.__getitem__(self, key)
                image = snapshots.get(key)
                if image is not None and snapshot(value) == image:
                    continue  # handed out, and still what it was
                try:
                    encoded = serialization.encode_value(value)
                except SerializationError as e:
                    raise SerializationError(f"session key {key!r}: {e}") from e
                if original.get(key) != encoded:
                    changed[key] = encoded
            elif key in original:
                removed.append(key)
        return changed, removed

    # Lifecycle: the state regenerate, destroy and an import leave behind -------

    def _renew(self, sid: str, old_handle: str | None) -> None:
        """A new id for the same data (``regenerate()``): stored anew at the end of the request."""
        self._regenerated_from = self._regenerated_from or old_handle
        self._key = None
        self._sid = sid
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

    def _hand_out(self, key: str, value: t.Any) -> t.Any:
        """Note that a mutable ``value`` of ``key`` reached the view, which may change it in place."""
        touched = self._touched
        if type(value) not in _IMMUTABLE and touched is not None and key not in touched:
            touched.add(key)
            # A stored key that was not written, deleted or handed out before
            # still holds the value as loaded (not a default from ``get``).
            if key in self._original:
                image = snapshot(value)
                if image is not None:
                    self._snapshots[key] = image
        return value

    def _touch(self, key: str | None = None) -> None:
        """Note a write: to ``key``, or to anything when ``key`` is None."""
        self.modified = True
        if key is None:
            self._touched = None
        elif self._touched is not None:
            self._touched.add(key)

    # The two readers views call most: a value that cannot change in place
    # (a string, a number) is returned without a call to ``_hand_out``.

    def __getitem__(self, key: str) -> t.Any:
        if not self._loaded:
            self._load()
        if key in self._pending:
            value = self._decode(key)
            if value is _MISSING:
                raise KeyError(key)
        else:
            value = dict.__getitem__(self, key)
        return value if type(value) in _IMMUTABLE else self._hand_out(key, value)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        if not self._loaded:
            self._load()
        if key in self._pending:
            value = self._decode(key)
            if value is _MISSING:
                return default
        else:
            value = dict.get(self, key, _MISSING)
            if value is _MISSING:
                return default
        return value if type(value) in _IMMUTABLE else self._hand_out(key, value)

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

    def pop(self, key: str, default: t.Any = _MISSING) -> t.Any:
        self._load()
        if key in self._pending:
            self._decode(key)
        if super().__contains__(key):
            self._touch(key)
        return super().pop(key) if default is _MISSING else super().pop(key, default)

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

    def __ior__(self, other: SupportsKeysAndGetItem[str, t.Any]) -> t.Self:  # type: ignore[override,misc]
        self.update(other)
        return self


def snapshot(value: t.Any) -> bytes | None:
    """An image of ``value`` that is equal for two values only if they encode the same.

    A mutable value handed to the view may have been changed in place, and
    re-encoding it to find out walks it in Python. ``marshal`` walks it in C,
    several times faster, and is exact about types: it tells a tuple from a
    list and ``1`` from ``True`` or ``1.0``, and refuses the types it does not
    know exactly (``Markup``, ``UUID``, dates, subclasses), which then go the
    slow way (None here). Version 2 writes no back-references, so the image
    depends on the value alone. The one looseness: any buffer (a bytearray)
    images as the ``bytes`` it holds, so putting an equal bytearray in place
    of stored bytes is seen as no change rather than refused.
    """
    try:
        return marshal.dumps(value, 2)
    except ValueError:  # a type marshal does not take, or nesting too deep
        return None
