"""Typed values in msgpack, with msgspec, and never pickle.

Flask's cookie session round-trips a handful of types that JSON cannot hold
(tuple, bytes, Markup, UUID, datetime). Flask-Satchel keeps the same promise
on every store with msgpack extension types, so a value comes back as the
type it went in as. Anything else is refused when it is stored, the way
Flask's serializer refuses it, instead of being pickled: unpickling data from
a store is code execution for whoever can write to the store.

Each top-level session key is encoded on its own. That is what lets stores
merge concurrent requests key by key, and lets the interface find what a
request changed by comparing bytes, nested mutations included.
"""

from __future__ import annotations

import datetime as dt
import typing as t
import uuid

import msgspec
from markupsafe import Markup

from .errors import SerializationError

__all__ = ["SerializationError", "decode", "decode_value", "encode", "encode_value"]

# Extension codes: stable on disk, never renumber.
_TUPLE = 1
_MARKUP = 2
_UUID = 3
_DATETIME = 4
_DATE = 5
_TIME = 6
_TIMEDELTA = 7

_MICRO = dt.timedelta(microseconds=1)
_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_Ext = msgspec.msgpack.Ext
_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
_BASES: tuple[type[t.Any], ...] = (bool, int, float, str, bytes, dict, list, tuple)


def _prepare(value: t.Any) -> t.Any:
    """Return ``value`` with every non-msgpack type replaced by an ``Ext``."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    # Plain items are tested inline: most of a session's leaves are plain, and
    # a call per leaf was most of the cost of encoding a list of tuples.
    if cls is list:
        return [item if type(item) in _PLAIN else _prepare(item) for item in value]
    if cls is dict:
        return {
            k if type(k) in _PLAIN else _prepare(k): v if type(v) in _PLAIN else _prepare(v) for k, v in value.items()
        }
    if cls is tuple:
        return _Ext(_TUPLE, _encode([item if type(item) in _PLAIN else _prepare(item) for item in value]))
    if isinstance(value, Markup) or hasattr(value, "__html__"):
        # Anything with __html__ comes back as Markup, as in Flask.
        return _Ext(_MARKUP, str(value.__html__()).encode())
    if cls is uuid.UUID:
        return _Ext(_UUID, value.bytes)
    if cls is dt.datetime or cls is dt.time:
        # The local part as ISO text and the UTC offset in microseconds: exact
        # for any offset, which ISO text with an offset is not.
        offset = value.utcoffset()
        payload = [value.replace(tzinfo=None).isoformat(), None if offset is None else offset // _MICRO]
        return _Ext(_DATETIME if cls is dt.datetime else _TIME, _encode(payload))
    if cls is dt.date:
        return _Ext(_DATE, value.isoformat().encode())
    if cls is dt.timedelta:
        return _Ext(_TIMEDELTA, _encode([value.days, value.seconds, value.microseconds]))
    # Subclasses of the plain types (an IntEnum, an OrderedDict) are stored as
    # their base type, as JSON would store them.
    for base in _BASES:
        if isinstance(value, base):
            return _prepare(base(value))
    raise SerializationError(
        f"Object of type {cls.__name__} cannot be stored in the session;"
        " store dict, list, tuple, str, int, float, bool, None, bytes,"
        " Markup, UUID, date, time, datetime or timedelta values"
    )


def _ext_hook(code: int, data: memoryview) -> t.Any:
    if code == _TUPLE:
        return _decode_tuple(data)
    if code == _MARKUP:
        return Markup(bytes(data).decode())
    if code == _UUID:
        return uuid.UUID(bytes=bytes(data))
    if code in (_DATETIME, _TIME):
        text, offset = _decode(data)
        parsed = (dt.datetime if code == _DATETIME else dt.time).fromisoformat(text)
        return parsed if offset is None else parsed.replace(tzinfo=dt.timezone(offset * _MICRO))
    if code == _DATE:
        return dt.date.fromisoformat(bytes(data).decode())
    if code == _TIMEDELTA:
        days, seconds, micros = _decode(data)
        return dt.timedelta(days, seconds, micros)
    raise msgspec.DecodeError(f"unknown extension type {code}")


_decode = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode
#: Builds the tuple itself, with no list in between (a tenth of decoding a list of tuples).
_decode_tuple = msgspec.msgpack.Decoder(tuple, ext_hook=_ext_hook).decode


def encode_value(value: t.Any) -> bytes:
    """Encode one session value."""
    return _encode(_prepare(value))


#: Decode one session value; raises ``msgspec.DecodeError`` on bad data. The
#: decoder itself, not a function around it: it runs for each value a view reads.
decode_value: t.Callable[[bytes], t.Any] = _decode


def encode(data: t.Mapping[str, t.Any]) -> dict[str, bytes]:
    """Encode each value of a session on its own."""
    return {key: _encode(_prepare(value)) for key, value in data.items()}


def decode(raw: t.Mapping[str, bytes]) -> dict[str, t.Any]:
    """Decode the per-key values of a stored session."""
    return {key: _decode(value) for key, value in raw.items()}


#: Whole records (the per-key map plus metadata) travel as one msgpack blob in
#: the stores that keep a single value per session.
pack = _encode
unpack_map = msgspec.msgpack.Decoder(dict[str, bytes]).decode
