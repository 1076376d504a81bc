"""Which values of a session may have changed, and what changed by the end of the request.

What changed is found by value, not by trusting ``session.modified``: at the
end of the request each value that *may* have changed is encoded and
compared with the bytes that were loaded, which catches in-place changes to
nested lists and dicts too. A value may have changed if it was written, or if
a mutable value (a list, a dict) was handed to the view; a view that only
reads strings and numbers costs no encoding at all.

Values are decoded when the view first reads them, not when the record
loads: a request that reads the user id out of a session of twenty keys
decodes one. Keys still in their stored form (``_pending``) cannot have
changed, so they cost nothing at the end of the request either.
"""

from __future__ import annotations

import datetime as dt
import logging
import marshal
import typing as t
import uuid

from markupsafe import Markup

from . import serialization
from .errors import SerializationError

MISSING: t.Any = object()
security_log = logging.getLogger("flask_satchel.security")
_decode_value = serialization.decode_unchecked
_check_depth = serialization.check_depth
_MAX_DEPTH = serialization.MAX_DEPTH

#: Values a view cannot change in place: handing them out marks nothing.
IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, Markup, uuid.UUID, dt.datetime, dt.date, dt.time})


class TrackedDict(dict[str, t.Any]):
    """A dict that knows which of its values may differ from the bytes it was filled with.

    Its state is per request; the defaults live on the class, so a session
    that is never filled sets none of them.
    """

    #: Set by any change made through the dict interface; nested changes are
    #: found at the end of the request even when this stays False.
    modified: bool = False

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

    def _fill(self, encoded: dict[str, bytes]) -> None:
        """Take a stored record's values, still encoded: each is decoded when first read."""
        dict.update(self, encoded)
        self._original = encoded
        self._pending = set(encoded)
        self._touched = set()
        self._snapshots = {}

    def _decode(self, key: str) -> t.Any:
        """Replace the stored bytes of ``key`` with its value, and return it (``MISSING`` if dropped).

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
            return MISSING
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
            return None if value is MISSING else value
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

    def _hand_out(self, key: str, value: t.Any) -> t.Any:
        """Note that a mutable ``value`` of ``key`` reached the view, which may change it in place."""
        touched = self._touched
        if type(value) not in IMMUTABLE and touched is not None and key not in touched:
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
