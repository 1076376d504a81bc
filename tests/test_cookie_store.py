"""The encrypted cookie store, key rotation, revocation, and moving off Flask's cookie session."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import typing as t
import zlib

import msgspec
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from flask_satchel import NotSupported
from flask_satchel import current_session as session
from flask_satchel.cookie import Sealed, Sealer
from flask_satchel.errors import SessionTooLarge
from flask_satchel.testing import make_app as contract_app
from flask_satchel.testing.contract import SessionContract


class TestCookieApp(SessionContract):
    @pytest.fixture
    def config(self) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "cookie"}


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    app = contract_app({"SECRET_KEY": "cookie-secret", "SESSION_TYPE": "cookie", **config}, tmp_path)

    @app.get("/ids")
    def ids() -> str:
        return f"{session.sid} {session.handle}"

    return app


def cookie_of(client: t.Any, name: str = "session") -> str:
    cookie = client.get_cookie(name)
    assert cookie is not None
    return str(cookie.value)


def test_contents_are_encrypted(tmp_path: t.Any) -> None:
    """The cookie does not reveal what the app stored, unlike Flask's signed cookie."""
    client = make_app(tmp_path).test_client()
    client.get("/set/card/4111-1111-secret")
    raw = base64.urlsafe_b64decode(cookie_of(client) + "==")
    assert b"secret" not in raw
    assert b"card" not in raw
    assert client.get("/get/card").text == "'4111-1111-secret'"


def test_sid_is_none_and_handle_is_stable(tmp_path: t.Any) -> None:
    """The cookie store has no sid; its handle stays the same across requests."""
    client = make_app(tmp_path).test_client()
    client.get("/set/a/1")
    first = client.get("/ids").text
    assert first.startswith("None ")
    assert client.get("/ids").text == first


@pytest.mark.parametrize("position", [0, 5, 20, -3])
def test_tampered_cookie_is_empty_and_logged(tmp_path: t.Any, position: int, caplog: pytest.LogCaptureFixture) -> None:
    """A cookie with any character changed is an empty session and a security log line."""
    client = make_app(tmp_path).test_client()
    client.get("/set/a/1")
    value = cookie_of(client)
    flipped = value[:position] + ("A" if value[position] != "A" else "B") + value[position + 1 :][: len(value)]
    client.set_cookie("session", flipped)
    with caplog.at_level(logging.WARNING, "flask_satchel.security"):
        response = client.get("/get/a")
    assert (response.status_code, response.text) == (200, "None")
    assert any("tampered" in r.getMessage() for r in caplog.records)


def test_value_cannot_move_to_another_cookie_name(tmp_path: t.Any) -> None:
    """The cookie name is authenticated: a value from another cookie is refused."""
    app = make_app(tmp_path)
    client = app.test_client()
    client.get("/set/a/1")
    value = cookie_of(client)
    app.config["SESSION_COOKIE_NAME"] = "other"
    client.set_cookie("other", value)
    assert client.get("/get/a").text == "None"


def test_key_rotation(tmp_path: t.Any) -> None:
    """SECRET_KEY_FALLBACKS decrypt; the newest key seals; a key no longer listed fails."""
    app = make_app(tmp_path)
    client = app.test_client()
    client.get("/set/a/1")
    app.secret_key = "new-secret"
    app.config["SECRET_KEY_FALLBACKS"] = ["cookie-secret"]
    assert client.get("/get/a").text == "'1'"
    client.get("/set/b/2")  # resealed with the new key
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/get/b").text == "'2'"
    app.secret_key = "cookie-secret"
    assert client.get("/get/b").text == "None"


def test_replayed_cookie_expires(tmp_path: t.Any) -> None:
    """An old cookie replayed after the idle timeout is refused: expiry is inside the ciphertext."""
    app = make_app(tmp_path)
    app.permanent_session_lifetime = dt.timedelta(minutes=10)
    now = [1_800_000_000.0]
    app.session_interface.now = lambda: now[0]  # type: ignore[attr-defined]
    client = app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    now[0] += 11 * 60
    client.set_cookie("session", old)
    assert client.get("/get/a").text == "None"


def test_large_sessions_are_compressed(tmp_path: t.Any) -> None:
    """A repetitive session is compressed into a cookie far smaller than its data."""
    client = make_app(tmp_path).test_client()
    client.get("/set/blob/" + "x" * 3000)
    assert len(cookie_of(client)) < 500
    assert client.get("/get/blob").text == repr("x" * 3000)


def _small_sealed() -> Sealed:
    return Sealed(
        handle="h" * 32,
        issued_at=1.0,
        created_at=1.0,
        last_seen=1.0,
        expires_at=2.0,
        permanent=False,
        user=None,
        data={"k": b"\xa1x" * 400},  # compressible, under 1 KB
    )


def test_small_sessions_are_not_compressed() -> None:
    """Under 1 KB the payload is sealed as is, and opens again."""
    sealer = Sealer()
    sealed = _small_sealed()
    value = sealer.seal(sealed, "session", "s3cret")
    token = base64.urlsafe_b64decode(_pad(value))
    plain = msgspec.msgpack.encode(sealed)
    assert len(token) == 1 + 12 + 1 + len(plain) + 16  # version, nonce, kind byte, payload, GCM tag
    assert sealer.open(value, "session", ["s3cret"]) == sealed


def test_authentic_cookie_in_a_format_never_released_opens_as_nothing() -> None:
    """A body packed some other way than plain or raw deflate (development builds' zlib) is no session."""
    sealer = Sealer()
    nonce = os.urandom(12)
    body = b"\x01" + zlib.compress(msgspec.msgpack.encode(_small_sealed()))
    old = b"\x01" + nonce + sealer._cipher("s3cret").encrypt(nonce, body, b"session")
    assert sealer.open(base64.urlsafe_b64encode(old).decode(), "session", ["s3cret"]) is None


def _pad(value: str) -> str:
    return value + "=" * (-len(value) % 4)


def test_oversized_session_is_a_clear_error(tmp_path: t.Any) -> None:
    """A session that cannot fit in 4,093 bytes raises, naming the size, the limit and the way out."""
    app = make_app(tmp_path)
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/big")
    def big() -> str:
        session["noise"] = [str(i * 7919) for i in range(1500)]
        return "ok"

    with pytest.raises(SessionTooLarge, match=r"would be \d+ bytes, over the 4093-byte limit.*server-side store"):
        app.test_client().get("/big")


def test_revocation_needs_a_store(tmp_path: t.Any) -> None:
    """Without SESSION_COOKIE_REVOCATION_URL, revoke_user says what it needs; listing is NotSupported."""
    app = make_app(tmp_path)
    manager = app.extensions["satchel"]
    with pytest.raises(NotSupported, match="SESSION_COOKIE_REVOCATION_URL"):
        manager.revoke_user("ann")
    with pytest.raises(NotSupported, match="cannot list sessions"):
        manager.sessions_of("ann")
    with pytest.raises(NotSupported, match="cannot count"):
        manager.count()


def test_revoke_user_refuses_older_cookies(tmp_path: t.Any) -> None:
    """revoke_user(user, keep=…) refuses that user's older cookies but the kept one; new logins work."""
    app = make_app(tmp_path, SESSION_COOKIE_REVOCATION_URL="sqlite:///revocations.sqlite3")
    manager = app.extensions["satchel"]
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    kept = laptop.get("/login/ann").text
    phone.get("/login/ann")
    other.get("/login/bob")
    assert manager.revoke_user("ann", keep=kept) == 0
    assert laptop.get("/get/_user_id").text == "'ann'"
    assert phone.get("/get/_user_id").text == "None"
    assert other.get("/get/_user_id").text == "'bob'"
    app.session_interface.now = lambda: 4e9  # type: ignore[attr-defined]
    phone.get("/login/ann")
    assert phone.get("/get/_user_id").text == "'ann'"


def test_revocation_store_must_be_reliable(tmp_path: t.Any) -> None:
    """Revocation marks refuse memcached (it evicts) with a ConfigError naming the key."""
    from flask_satchel import ConfigError

    with pytest.raises(ConfigError, match="SESSION_COOKIE_REVOCATION_URL"):
        make_app(tmp_path, SESSION_COOKIE_REVOCATION_URL="memcached://127.0.0.1:11211")


def legacy_cookie(secret: str, data: dict[str, t.Any]) -> str:
    """A session cookie exactly as Flask's own SecureCookieSessionInterface signs it."""
    flask_app = Flask("legacy")
    flask_app.secret_key = secret
    serializer = SecureCookieSessionInterface().get_signing_serializer(flask_app)
    assert serializer is not None
    return str(serializer.dumps(data))


@pytest.mark.parametrize("store", ["cookie", "sqlite", "memory", "filesystem"])
def test_flask_cookie_sessions_are_migrated(tmp_path: t.Any, store: str) -> None:
    """With SESSION_MIGRATE_FLASK_COOKIES a valid Flask cookie session is imported and its cookie replaced."""
    app = make_app(tmp_path, SESSION_TYPE=store, SESSION_MIGRATE_FLASK_COOKIES=True)
    client = app.test_client()
    old = legacy_cookie("cookie-secret", {"_user_id": "7", "cart": ("a", "b"), "_permanent": True})
    client.set_cookie("session", old)
    response = client.get("/get/_user_id")
    assert response.text == "'7'"
    new = cookie_of(client)
    assert new != old
    assert "Expires=" in response.headers["Set-Cookie"]  # it was permanent
    assert client.get("/get/cart").text == "('a', 'b')"
    assert client.get("/get/_permanent").text == "None"


def test_migration_uses_fallback_keys_and_is_off_by_default(tmp_path: t.Any) -> None:
    """Legacy cookies signed with a fallback key migrate; without the flag they are ignored."""
    old = legacy_cookie("retired", {"x": 1})
    app = make_app(
        tmp_path, SESSION_TYPE="memory", SESSION_MIGRATE_FLASK_COOKIES=True, SECRET_KEY_FALLBACKS=["retired"]
    )
    client = app.test_client()
    client.set_cookie("session", old)
    assert client.get("/get/x").text == "1"
    plain = make_app(tmp_path / "b", SESSION_TYPE="memory").test_client()
    plain.set_cookie("session", old)
    assert plain.get("/get/x").text == "None"
    forged = make_app(tmp_path / "c", SESSION_TYPE="memory", SESSION_MIGRATE_FLASK_COOKIES=True).test_client()
    forged.set_cookie("session", legacy_cookie("attacker", {"_user_id": "admin"}))
    assert forged.get("/get/_user_id").text == "None"
