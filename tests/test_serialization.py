"""The typed msgpack serializer: every supported type round-trips, nothing is pickled."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
import typing as t
import uuid

import msgspec
import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from flask_satchel import Session
from flask_satchel import current_session as session
from flask_satchel.serialization import MAX_DEPTH, SerializationError, decode, decode_value, encode, encode_value
from flask_satchel.stores.base import Change

offsets = st.builds(dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers()  # beyond 64 bits too
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
        | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=5)
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
        return bool(a == b) and a.utcoffset() == b.utcoffset()
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


@pytest.mark.parametrize("value", [{1, 2}, [2**70, {1}], {2**70: {1}}, (2**70, frozenset())])
def test_refusal_names_the_key_and_the_type(value: t.Any) -> None:
    """A value that cannot be stored, big ints beside it or not, is refused naming its key and its type."""
    with pytest.raises(SerializationError, match=r"^session key 'cart': Object of type (set|frozenset) cannot be"):
        encode({"ok": 1, "cart": value})


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, 2**70, -(2**100), 10**400, [1, 2**70], (2**70, (-(2**100),)), {"n": 2**70}, {2**70: "key"}],
)
def test_ints_of_any_size_round_trip(value: t.Any) -> None:
    """Ints beyond msgpack's 64 bits come back exact and as ints, nested in lists, tuples and dicts, and as keys."""
    assert same(decode_value(encode_value(value)), value)


class Huge(enum.IntEnum):
    BIG = 2**80


def test_big_int_subclasses_are_stored_as_int() -> None:
    """An IntEnum beyond 64 bits is stored as its int, as a small one is."""
    assert same(decode_value(encode_value([Huge.BIG])), [2**80])


def test_extension_values_work_as_dict_keys() -> None:
    """Tuples, UUIDs, dates and big ints are dict keys like strings are, in order."""
    value = {(1, "a"): 1, uuid.UUID(int=7): 2, dt.date(2026, 1, 2): 3, 2**70: 4, "plain": 5}
    back = decode_value(encode_value(value))
    assert list(back.items()) == list(value.items())
    assert encode_value(back) == encode_value(value)


def nested(kind: type, depth: int, value: t.Any = 1) -> t.Any:
    """``depth`` lists, tuples or dicts, each holding the next, around ``value``."""
    for _ in range(depth):
        value = {"k": value} if kind is dict else kind([value])
    return value


@pytest.mark.parametrize("kind", [list, tuple, dict])
def test_nesting_limit_is_exact(kind: type) -> None:
    """MAX_DEPTH containers deep is stored; one more, or 100,000, is refused naming the type (no RecursionError)."""
    value = nested(kind, MAX_DEPTH)
    assert decode_value(encode_value(value)) == value
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(SerializationError, match=f"type {kind.__name__} is nested more than {MAX_DEPTH}"):
            encode_value(nested(kind, depth))


def test_tuple_keys_count_toward_the_depth() -> None:
    """A tuple used as a dict key is one level deeper than the dict, when stored and when read."""
    keyed = {(1,): "x"}  # two levels: the dict and its key
    assert decode_value(encode_value(nested(list, MAX_DEPTH - 2, keyed))) == nested(list, MAX_DEPTH - 2, keyed)
    with pytest.raises(SerializationError, match="nested more than"):
        encode_value(nested(list, MAX_DEPTH - 1, keyed))
    stored = b"\x81\x91\x01\xa1x"  # the same dict as msgpack, with its key as an array
    assert decode_value(b"\x91" * (MAX_DEPTH - 2) + stored) == nested(list, MAX_DEPTH - 2, keyed)
    with pytest.raises(msgspec.DecodeError, match="nested more than"):
        decode_value(b"\x91" * (MAX_DEPTH - 1) + stored)


def nested_tuples_raw(depth: int) -> bytes:
    """The msgpack of ``depth`` tuples one in another, each an extension holding the next (built without recursion)."""
    headers = []
    size = 1  # the innermost item, the int 1
    for _ in range(depth):
        payload = 1 + size  # a one-item array header, then the tuple inside
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if payload in fixed:
            header = bytes([fixed[payload], 1])
        elif payload < 2**8:
            header = bytes([0xC7, payload, 1])
        elif payload < 2**16:
            header = b"\xc8" + payload.to_bytes(2, "big") + b"\x01"
        else:
            header = b"\xc9" + payload.to_bytes(4, "big") + b"\x01"
        headers.append(header)
        size = len(header) + payload
    return b"".join(header + b"\x91" for header in reversed(headers)) + b"\x01"


def ext(code: int, payload: t.Any) -> bytes:
    """An extension value with ``payload`` as it is given (bytes), or as msgpack."""
    data = payload if isinstance(payload, bytes) else msgspec.msgpack.encode(payload)
    return msgspec.msgpack.encode(msgspec.msgpack.Ext(code, data))


#: Bytes a store could hold after someone wrote to it: each must read as unreadable, never raise anything else.
CRAFTED = {
    "timedelta-overflow": ext(7, [10**12, 0, 0]),
    "timedelta-shape": ext(7, [1, 2]),
    "datetime-offset-range": ext(4, ["2026-01-01T00:00:00", 24 * 3600 * 10**6]),
    # An offset of 10**30 microseconds, as a big-int extension (code 8).
    "datetime-offset-overflow": ext(4, ["2026-01-01T00:00:00", msgspec.msgpack.Ext(8, (10**30).to_bytes(13, "big"))]),
    "datetime-text": ext(4, ["not a date", None]),
    "datetime-text-type": ext(4, [5, None]),
    "time-garbage": ext(6, b"\xc1"),
    "date-text": ext(5, b"2026-13-45"),
    "uuid-length": ext(3, b"short"),
    "markup-utf8": ext(2, b"\xff"),
    "tuple-payload": ext(1, "abc"),
    "unknown-ext": ext(99, b""),
    "deep-arrays": b"\x91" * 100_000 + b"\x01",
    "deep-maps": b"\x81\xa1k" * 100_000 + b"\x01",
    "deep-tuples": nested_tuples_raw(100_000),
    "past-the-limit": b"\x91" * (MAX_DEPTH + 1) + b"\x01",
    "truncated": encode_value([1, "abc", (2, 3)])[:-1],
    "trailing": encode_value(1) + b"\x01",
    "empty": b"",
}


@pytest.mark.parametrize("raw", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_bytes_are_a_decode_error(raw: bytes) -> None:
    """Whatever the stored bytes, decoding raises msgspec.DecodeError (a ValueError) and nothing else."""
    with pytest.raises(msgspec.DecodeError):
        decode_value(raw)


def test_crafted_values_read_as_missing_with_a_warning(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """A session holding every kind of crafted value answers 200: each reads as missing, with a warning per key."""
    app = Flask("serialization_test", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", SESSION_TYPE="memory")
    Session(app)

    @app.get("/fill")
    def fill() -> str:
        session["good"] = [1, (2, 2**70)]
        return session.handle

    @app.get("/read")
    def read() -> str:
        return repr({key: session.get(key, "missing") for key in ["good", *CRAFTED]})

    client = app.test_client()
    handle = client.get("/fill").text
    store = app.extensions["satchel"].store
    store.apply(handle, Change(set=CRAFTED, last_seen=time.time(), expires_at=time.time() + 3600))
    with caplog.at_level(logging.WARNING, "flask_satchel.security"):
        response = client.get("/read")
    assert response.status_code == 200
    assert response.text == repr({"good": [1, (2, 2**70)], **dict.fromkeys(CRAFTED, "missing")})
    warned = {r.getMessage().split("'")[1] for r in caplog.records if r.name == "flask_satchel.security"}
    assert warned == set(CRAFTED)


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
