"""The typed msgpack serializer: every supported type round-trips, nothing is pickled."""

from __future__ import annotations

import datetime as dt
import enum
import typing as t
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from flask_satchel.serialization import SerializationError, decode, decode_value, encode, encode_value

offsets = st.builds(dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.builds(Markup, st.text())
    | st.uuids()
    | st.datetimes()
    # Named zones are stored as their UTC offset at that moment (as Flask's
    # cookie session stores UTC), so the property is checked on fixed offsets.
    | st.datetimes(timezones=offsets)
    | st.dates()
    | st.times()
    | st.timedeltas()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def same(a: t.Any, b: t.Any) -> bool:
    """Equal and of exactly the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


@given(values)
def test_round_trip(value: t.Any) -> None:
    """Any nesting of supported types decodes to an equal value of the same types."""
    assert same(decode_value(encode_value(value)), value)


@given(st.dictionaries(st.text(max_size=20), values, max_size=8))
def test_session_round_trip(data: dict[str, t.Any]) -> None:
    """A whole session encodes key by key and comes back equal."""
    encoded = encode(data)
    assert set(encoded) == set(data)
    assert same(decode(encoded), data)


@given(values)
def test_encoding_is_deterministic(value: t.Any) -> None:
    """Re-encoding a decoded value gives the same bytes, so unchanged keys are never rewritten."""
    data = encode_value(value)
    assert encode_value(decode_value(data)) == data


class Color(enum.IntEnum):
    RED = 1


def test_subclasses_are_stored_as_their_base_type() -> None:
    """An IntEnum is stored as an int, as JSON would store it."""
    assert same(decode_value(encode_value(Color.RED)), 1)


def test_objects_with_html_come_back_as_markup() -> None:
    """Anything with __html__ is stored as Markup, as in Flask."""

    class Html:
        def __html__(self) -> str:
            return "<i>x</i>"

    assert decode_value(encode_value(Html())) == Markup("<i>x</i>")


@pytest.mark.parametrize("value", [object(), {1, 2}, lambda: None, [object()]])
def test_unsupported_types_are_refused(value: t.Any) -> None:
    """Values that would need pickle are refused with a message naming the type."""
    with pytest.raises(SerializationError, match="cannot be stored in the session"):
        encode_value(value)


def test_garbage_is_a_decode_error() -> None:
    """Bytes that are not our msgpack raise a ValueError, which the interface turns into an empty session."""
    with pytest.raises(msgspec.DecodeError):
        decode_value(b"\xc1")
    with pytest.raises(msgspec.DecodeError):
        decode_value(msgspec.msgpack.encode(msgspec.msgpack.Ext(99, b"")))
    # A tuple whose payload is not an array is refused, not spelled out character by character.
    with pytest.raises(msgspec.DecodeError):
        decode_value(msgspec.msgpack.encode(msgspec.msgpack.Ext(1, msgspec.msgpack.encode("abc"))))


def test_uuid_and_aware_datetime_types() -> None:
    """UUIDs and timezone-aware datetimes keep their type and offset."""
    moment = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    ident = uuid.uuid4()
    back = decode_value(encode_value([ident, moment]))
    assert back == [ident, moment]
    assert back[1].utcoffset() == dt.timedelta(hours=-5)
