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

Ints of any size are kept exactly, as Flask's cookie session keeps them:
msgpack holds 64 bits, and an int outside that range is an extension of its
own. Finding one costs ordinary values nothing: msgspec refuses the int, and
only then is the value prepared again by a walk that looks for them. The
same walk lets any hashable value of the types above be a dict key (a
tuple, a UUID, a big int), not only strings and numbers.

Values are at most ``MAX_DEPTH`` (100) containers deep: lists, dicts and
tuples nested in one another. That is far more than a session holds, and it
keeps encoding and decoding well inside Python's recursion limit (1,000 by
default) wherever the app calls them from: encoding spends two frames per
level, and so does decoding a tuple, on top of the frames of the server,
Flask and the app already below the call. A deeper value is refused when it
is stored (``SerializationError``), and is unreadable when it is loaded, as
any stored value is that does not decode -- crafted bytes included: an int
that overflows a date, an unknown extension, a payload of the wrong shape,
nesting that would exhaust the stack, a truncated value. ``decode_value``
raises ``msgspec.DecodeError`` for all of them, and the session drops such a
key with a warning instead of failing the request.
"""

from __future__ import annotations

import datetime as dt
import typing as t
import uuid

import msgspec
from markupsafe import Markup

from .errors import SerializationError

__all__ = ["MAX_DEPTH", "SerializationError", "decode", "decode_value", "encode", "encode_value"]

#: The deepest nesting of lists, dicts and tuples a value may have (see the module docstring).
MAX_DEPTH = 100

# Extension codes: stable on disk, never renumber.
_TUPLE = 1
_MARKUP = 2
_UUID = 3
_DATETIME = 4
_DATE = 5
_TIME = 6
_TIMEDELTA = 7
#: An int outside msgpack's range: two's complement, big-endian, in the fewest bytes.
_BIGINT = 8

_MICRO = dt.timedelta(microseconds=1)
_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_Ext = msgspec.msgpack.Ext
_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
_BASES: tuple[type[t.Any], ...] = (bool, int, float, str, bytes, dict, list, tuple)
#: The types ``_prepare`` stores as an extension of their own, matched exactly as it matches them.
_LEAVES = frozenset({uuid.UUID, dt.datetime, dt.date, dt.time, dt.timedelta})
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_TYPES = (
    "store dict, list, tuple, str, int, float, bool, None, bytes, Markup, UUID, date, time, datetime"
    " or timedelta values"
)


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
    raise SerializationError(f"Object of type {cls.__name__} cannot be stored in the session; {_TYPES}")


class _Key:
    """An extension used as a dict key: ``Ext`` cannot be one, as it is not hashable.

    Each is its own key (hashed by identity), so the dict keeps every key of
    the dict it stands for, in order; ``_enc_hook`` writes out the ``Ext``.
    """

    __slots__ = ("ext",)

    def __init__(self, ext: msgspec.msgpack.Ext) -> None:
        self.ext = ext


def _enc_hook(obj: t.Any) -> t.Any:
    if type(obj) is _Key:
        return obj.ext
    raise NotImplementedError  # never reached: _prepare_wide leaves nothing else unknown


_wide_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode


def _int_bytes(value: int) -> bytes:
    """``value`` as two's complement in the fewest bytes that hold its sign: one encoding per int."""
    return value.to_bytes(((value if value >= 0 else ~value).bit_length() + 8) // 8, "big", signed=True)


def _prepare_wide(value: t.Any) -> t.Any:
    """``_prepare`` for the values msgspec refused: ints of any size, and keys that are extensions.

    The same type table, in the same order; the types with no ints inside
    (strings, Markup, UUID, dates) are left to ``_prepare``.
    """
    cls = type(value)
    if cls is int:
        return value if _INT_MIN <= value <= _INT_MAX else _Ext(_BIGINT, _int_bytes(value))
    if cls is list:
        return [_prepare_wide(item) for item in value]
    if cls is dict:
        return {_wide_key(k): _prepare_wide(v) for k, v in value.items()}
    if cls is tuple:
        return _Ext(_TUPLE, _wide_encode([_prepare_wide(item) for item in value]))
    if cls in _PLAIN or cls in _LEAVES or isinstance(value, Markup) or hasattr(value, "__html__"):
        return _prepare(value)
    for base in _BASES:
        if isinstance(value, base):
            return _prepare_wide(base(value))
    return _prepare(value)  # refuses the type


def _wide_key(key: t.Any) -> t.Any:
    prepared = _prepare_wide(key)
    return _Key(prepared) if type(prepared) is _Ext else prepared


def _too_deep(value: t.Any) -> SerializationError:
    return SerializationError(
        f"Object of type {type(value).__name__} is nested more than {MAX_DEPTH} lists, dicts or tuples deep"
        " and cannot be stored in the session"
    )


def encode_value(value: t.Any) -> bytes:
    """Encode one session value; ``SerializationError`` names the type of a value that cannot be stored."""
    try:
        data = _encode(_prepare(value))
    except SerializationError:
        raise
    except (OverflowError, TypeError):
        # An int beyond 64 bits (msgspec's OverflowError), or a tuple, UUID or
        # date as a dict key (TypeError: an Ext is unhashable): both rare, so
        # looked for only once the fast walk has failed.
        try:
            data = _wide_encode(_prepare_wide(value))
        except RecursionError:
            raise _too_deep(value) from None
    except RecursionError:
        raise _too_deep(value) from None
    # The depth is checked on the bytes, not counted during the walk: a count
    # passed down the walk cost more than this, for every nested container.
    # A value of MAX_DEPTH bytes or fewer cannot be that deep (each container
    # takes a byte), nor can one with as few bytes that may start a container.
    if len(data) > MAX_DEPTH and type(value) not in _PLAIN and data.translate(_HEADER_TABLE).count(1) > MAX_DEPTH:
        try:
            check_depth(data, _decode(data))
        except (RecursionError, msgspec.DecodeError):
            raise _too_deep(value) from None
    return data


def encode(data: t.Mapping[str, t.Any]) -> dict[str, bytes]:
    """Encode each value of a session on its own; ``SerializationError`` names the key and the type."""
    encoded: dict[str, bytes] = {}
    for key, value in data.items():
        try:
            encoded[key] = encode_value(value)
        except SerializationError as e:
            raise SerializationError(f"session key {key!r}: {e}") from e
    return encoded


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
    if code == _BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise msgspec.DecodeError(f"unknown extension type {code}")


_decode = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode
#: Decode one value, unchecked: what a store holds may be crafted, and this
#: raises whatever a bad payload makes it raise (``OverflowError``,
#: ``RecursionError``, ``ValueError`` …) and does not check the depth. The
#: decoder itself, not a function around it: the session calls it for each
#: value a view reads, and checks the depth of long values itself.
decode_unchecked: t.Callable[[bytes], t.Any] = _decode
#: Builds the tuple itself, with no list to build and copy in between.
_decode_tuple = msgspec.msgpack.Decoder(tuple, ext_hook=_ext_hook).decode

_CONTAINERS = frozenset({list, dict, tuple})
#: 1 for each byte that can start a msgpack array, map or extension, 0 for the others:
#: ``data.translate(_HEADER_TABLE).count(1)`` is at least the deepest nesting in ``data``.
_HEADER_TABLE = bytes(
    int(0x80 <= b <= 0x9F or 0xC7 <= b <= 0xC9 or 0xD4 <= b <= 0xD8 or 0xDC <= b <= 0xDF) for b in range(256)
)


def check_depth(data: bytes, value: t.Any) -> None:
    """Raise ``msgspec.DecodeError`` if ``value``, decoded from ``data``, is nested deeper than ``MAX_DEPTH``.

    Each container starts with a header byte, so a value whose bytes hold
    ``MAX_DEPTH`` header-like bytes or fewer passes at C speed; only the
    others are walked, a level at a time, with no recursion.
    """
    if type(value) not in _CONTAINERS:
        return
    if type(data) is not bytes:
        data = bytes(data)  # a third-party store may hand out a memoryview, which has no translate
    if data.translate(_HEADER_TABLE).count(1) <= MAX_DEPTH:
        return
    containers = _CONTAINERS
    level = [value]
    for _ in range(MAX_DEPTH):
        below: list[t.Any] = []
        for container in level:
            if type(container) is dict:
                below += [k for k in container if type(k) is tuple]
                below += [v for v in container.values() if type(v) in containers]
            else:
                below += [item for item in container if type(item) in containers]
        if not below:
            return
        level = below
    raise msgspec.DecodeError(f"value nested more than {MAX_DEPTH} lists, dicts or tuples deep")


def decode_value(data: bytes) -> t.Any:
    """Decode one session value; ``msgspec.DecodeError`` (a ``ValueError``) for anything unreadable."""
    try:
        value = _decode(data)
        if len(data) > MAX_DEPTH:
            check_depth(data, value)
    except msgspec.DecodeError:
        raise
    except Exception as e:
        raise msgspec.DecodeError(f"unreadable value: {type(e).__name__}: {e}") from e
    return value


def decode(raw: t.Mapping[str, bytes]) -> dict[str, t.Any]:
    """Decode the per-key values of a stored session."""
    return {key: decode_value(value) for key, value in raw.items()}


#: Whole records (the per-key map plus metadata) travel as one msgpack blob in
#: the stores that keep a single value per session.
pack = _encode
unpack_map = msgspec.msgpack.Decoder(dict[str, bytes]).decode
