"""Configuration: Flask-Session's keys, our keys, and clear errors at startup."""

from __future__ import annotations

import datetime as dt
import logging
import os
import typing as t
from email.utils import parsedate_to_datetime

import pytest
from conftest import add_value_views
from flask import Flask

from flask_satchel import ConfigError, Session
from flask_satchel.settings import load
from flask_satchel.stores.filesystem import FileSystemStore
from flask_satchel.stores.sqlite import SQLiteStore


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    app = Flask("settings_test", instance_path=str(tmp_path))
    app.config.update(config)
    return app


def test_defaults(tmp_path: t.Any) -> None:
    """With nothing configured the store is SQLite in the instance folder, non-permanent, capped at Flask's 31 days."""
    settings = load({}, str(tmp_path))
    assert settings.type == "sqlite"
    assert SQLiteStore.from_settings(settings.store).path == os.path.join(str(tmp_path), "flask_satchel.sqlite3")
    assert settings.permanent is False
    assert settings.store.key_prefix == "session:"
    assert settings.id_length == 32
    assert settings.store.absolute_lifetime == 31 * 86400  # PERMANENT_SESSION_LIFETIME's default, longer than 30 days
    assert settings.user_key == "_user_id"


def test_flask_session_keys_are_accepted(tmp_path: t.Any) -> None:
    """Flask-Session's names keep their meaning."""
    settings = load(
        {
            "SESSION_TYPE": "filesystem",
            "SESSION_FILE_DIR": str(tmp_path / "f"),
            "SESSION_PERMANENT": True,
            "SESSION_KEY_PREFIX": "app1:",
            "SESSION_ID_LENGTH": 48,
            "SESSION_USE_SIGNER": True,
            "SESSION_CLEANUP_N_REQUESTS": 100,
        },
        str(tmp_path),
    )
    assert (settings.type, settings.permanent) == ("filesystem", True)
    assert FileSystemStore.from_settings(settings.store).directory == str(tmp_path / "f")
    assert (settings.store.key_prefix, settings.id_length, settings.use_signer) == ("app1:", 48, True)
    assert settings.cleanup_n_requests == 100


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///sessions.db", "sqlite"),
        ("sqlite:////tmp/abs.db", "sqlite"),
        ("file:///tmp/sessions", "filesystem"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://127.0.0.1:6380/1", "redis"),
        ("redis+sentinel://127.0.0.1:26379/mymaster", "redis"),
        ("redis+cluster://127.0.0.1:7000", "redis"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis"),
        ("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster", "redis"),
        ("memcached://127.0.0.1:11211,127.0.0.1:11212", "memcached"),
        ("memcached://127.0.0.1:11211", "memcached"),
        ("postgresql://postgres@127.0.0.1/test", "sqlalchemy"),
        ("postgresql+psycopg://postgres@127.0.0.1/test", "sqlalchemy"),
        ("mysql+pymysql://root@127.0.0.1/test", "sqlalchemy"),
        ("memory://", "memory"),
        ("cookie://", "cookie"),
    ],
)
def test_url_picks_the_store(url: str, kind: str, tmp_path: t.Any) -> None:
    """SESSION_URL alone selects the store type."""
    assert load({"SESSION_URL": url}, str(tmp_path)).type == kind


def test_sqlite_paths(tmp_path: t.Any) -> None:
    """sqlite:///rel is relative to the instance folder, sqlite:////abs is absolute."""
    for url, path in [("sqlite:///s.db", str(tmp_path / "s.db")), ("sqlite:////tmp/x.db", "/tmp/x.db")]:
        assert SQLiteStore.from_settings(load({"SESSION_URL": url}, str(tmp_path)).store).path == path


@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        ({"SESSION_TYPE": "mongo"}, "SESSION_TYPE", "accepted: sqlite, filesystem"),
        ({"SESSION_URL": "ftp://x"}, "SESSION_URL", "unknown scheme 'ftp'"),
        ({"SESSION_URL": "redis://h:notaport"}, "SESSION_URL", "cannot parse"),
        ({"SESSION_URL": "nonsense"}, "SESSION_URL", "expected a URL"),
        ({"SESSION_URL": "redis://h", "SESSION_TYPE": "sqlite"}, "SESSION_TYPE", "does not match"),
        ({"SESSION_URL": "sqlite:///:memory:"}, "SESSION_URL", "memory://"),
        ({"PERMANENT_SESSION_LIFETIME": -5}, "PERMANENT_SESSION_LIFETIME", "more than zero"),
        ({"PERMANENT_SESSION_LIFETIME": "long"}, "PERMANENT_SESSION_LIFETIME", "timedelta"),
        ({"SESSION_ABSOLUTE_LIFETIME": dt.timedelta(seconds=-1)}, "SESSION_ABSOLUTE_LIFETIME", "more than zero"),
        ({"SESSION_REFRESH_INTERVAL": -1}, "SESSION_REFRESH_INTERVAL", "zero or more"),
        ({"SESSION_STORE_TIMEOUT": 0}, "SESSION_STORE_TIMEOUT", "more than zero"),
        ({"SESSION_ID_LENGTH": 16}, "SESSION_ID_LENGTH", "at least 32 bytes"),
        ({"SESSION_PERMANENT": "yes"}, "SESSION_PERMANENT", "True or False"),
        ({"SESSION_KEY_PREFIX": 5}, "SESSION_KEY_PREFIX", "string"),
        ({"SESSION_USER_KEY": ""}, "SESSION_USER_KEY", "non-empty"),
        ({"SESSION_CLEANUP_N_REQUESTS": 0}, "SESSION_CLEANUP_N_REQUESTS", "positive"),
        # A store's own keys are checked by the store that reads them.
        ({"SESSION_TYPE": "filesystem", "SESSION_FILE_MODE": 0o7777}, "SESSION_FILE_MODE", "permission bits"),
        ({"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": 5}, "SESSION_FILE_DIR", "directory path"),
    ],
)
def test_bad_config_raises_naming_the_key(config: dict[str, t.Any], key: str, words: str, tmp_path: t.Any) -> None:
    """A value that cannot work is a ConfigError at init_app that names the key and what is accepted."""
    app = make_app(tmp_path, **config)
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert words in str(info.value)


def test_file_threshold_is_logged_not_warned(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """SESSION_FILE_THRESHOLD is ignored with a log line (not a warning, which -W error would make a crash)."""
    app = make_app(tmp_path, SESSION_TYPE="filesystem", SESSION_FILE_THRESHOLD=500)
    with caplog.at_level(logging.WARNING, "flask_satchel"):
        Session(app)  # the suite runs with warnings as errors
    assert any("never evicts a live session" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_flask_session_serialization_format_is_accepted(
    tmp_path: t.Any, caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    """SESSION_SERIALIZATION_FORMAT, Flask-Session's record encoding, starts the app and says so in one log line."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_SERIALIZATION_FORMAT=fmt)
    with caplog.at_level(logging.INFO, "flask_satchel"):
        Session(app)
    assert [r.getMessage() for r in caplog.records if "SESSION_SERIALIZATION_FORMAT" in r.getMessage()]
    add_value_views(app)
    client = app.test_client()
    client.get("/set/kept")
    assert client.get("/get").text == "'kept'"


@pytest.mark.parametrize(
    ("idle", "absolute"),
    [
        (dt.timedelta(days=90), 90 * 86400),  # a long idle lifetime is not cut to 30 days
        (dt.timedelta(days=31), 31 * 86400),  # Flask's default
        (dt.timedelta(hours=1), 30 * 86400),
    ],
)
def test_default_absolute_lifetime_is_never_below_the_idle_one(tmp_path: t.Any, idle: t.Any, absolute: float) -> None:
    """With SESSION_ABSOLUTE_LIFETIME unset, the cap is 30 days or PERMANENT_SESSION_LIFETIME, whichever is longer."""
    assert load({"PERMANENT_SESSION_LIFETIME": idle}, str(tmp_path)).store.absolute_lifetime == absolute


def test_absolute_lifetime_shorter_than_idle_is_logged(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """An explicit SESSION_ABSOLUTE_LIFETIME below the idle lifetime is kept, with a warning naming both keys."""
    config = {"PERMANENT_SESSION_LIFETIME": dt.timedelta(days=90), "SESSION_ABSOLUTE_LIFETIME": dt.timedelta(days=7)}
    with caplog.at_level(logging.WARNING, "flask_satchel"):
        assert load(config, str(tmp_path)).store.absolute_lifetime == 7 * 86400
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "SESSION_ABSOLUTE_LIFETIME" in message
    assert "PERMANENT_SESSION_LIFETIME" in message


def test_a_90_day_permanent_cookie_lasts_90_days(tmp_path: t.Any) -> None:
    """PERMANENT_SESSION_LIFETIME = 90 days: the permanent cookie is dated 90 days ahead, not 30."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_PERMANENT=True)
    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(days=90)
    Session(app)
    add_value_views(app)
    cookie = app.test_client().get("/set/x").headers["Set-Cookie"]
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0])
    assert expires > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=89)


def test_own_keys_are_read_once(tmp_path: t.Any) -> None:
    """Changing a Flask-Satchel key after init_app has no effect; the settings are frozen."""
    app = make_app(tmp_path, SESSION_KEY_PREFIX="first:")
    manager = Session().init_app(app)
    app.config["SESSION_KEY_PREFIX"] = "second:"
    assert manager.settings.store.key_prefix == "first:"
    with pytest.raises(AttributeError):
        manager.settings.store.key_prefix = "x"  # type: ignore[misc]


def test_init_app_installs_everything(tmp_path: t.Any) -> None:
    """init_app sets the session interface, the manager and the CLI group, and keeps nothing on the extension."""
    ext = Session()
    app = make_app(tmp_path)
    ext.init_app(app)
    assert app.extensions["satchel"].interface is app.session_interface
    assert "session" in app.cli.commands
    assert vars(ext) == {}
