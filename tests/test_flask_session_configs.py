"""Flask-Session configurations, written as its documentation shows them, start unchanged and keep sessions."""

from __future__ import annotations

import os
import typing as t
import uuid

import pytest
import redis
from cachelib import FileSystemCache, NullCache, RedisCache, SimpleCache
from conftest import require, value_app
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_satchel import ConfigError, Session

PG_URL = "postgresql+psycopg://postgres@127.0.0.1/test"


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    return value_app(tmp_path / "instance", init=False, SECRET_KEY="flask-session-configs", **config)


def keeps_sessions(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/set/kept").status_code == 200
    assert client.get("/get").text == "'kept'"


def test_cachelib_file_system_cache_is_the_filesystem_store_in_that_folder(tmp_path: t.Any) -> None:
    """SESSION_TYPE 'cachelib' with a FileSystemCache keeps sessions as files in the cache's own folder."""
    folder = tmp_path / "flask_session"
    app = make_app(
        tmp_path, SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(cache_dir=str(folder), threshold=500)
    )
    manager = Session().init_app(app)
    assert manager.settings.type == "filesystem"
    keeps_sessions(app)
    assert any(len(name) == 2 and (folder / name).is_dir() for name in os.listdir(folder))


def test_cachelib_simple_cache_is_the_memory_store(tmp_path: t.Any) -> None:
    """SESSION_TYPE 'cachelib' with a SimpleCache keeps sessions in memory."""
    app = make_app(tmp_path, SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
    assert Session().init_app(app).settings.type == "memory"
    keeps_sessions(app)


def test_cachelib_redis_cache_uses_its_client(tmp_path: t.Any) -> None:
    """SESSION_TYPE 'cachelib' with a RedisCache keeps sessions in that Redis, through the same client."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        require(False, "Redis is not running on 127.0.0.1:6379")
    prefix = f"fs-configs-{uuid.uuid4().hex[:8]}:"
    app = make_app(
        tmp_path, SESSION_TYPE="cachelib", SESSION_CACHELIB=RedisCache(host=client), SESSION_KEY_PREFIX=prefix
    )
    manager = Session().init_app(app)
    try:
        assert manager.settings.type == "redis"
        keeps_sessions(app)
        assert client.keys(f"{prefix}*")
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_other_cachelib_backends_name_what_to_use(tmp_path: t.Any) -> None:
    """A cachelib backend with no Flask-Satchel store is a ConfigError on SESSION_CACHELIB that says what to use."""
    app = make_app(tmp_path, SESSION_TYPE="cachelib", SESSION_CACHELIB=NullCache())
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == "SESSION_CACHELIB"
    assert "FileSystemCache" in str(info.value)


def _postgres_or_skip() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError:
        require(False, "PostgreSQL is not running on 127.0.0.1:5432")
    finally:
        engine.dispose()


@pytest.mark.parametrize("uri", [PG_URL, "sqlite:///flask_sqlalchemy.db"])
def test_sqlalchemy_without_session_sqlalchemy_uses_flask_sqlalchemy(tmp_path: t.Any, uri: str) -> None:
    """SESSION_TYPE 'sqlalchemy' with no SESSION_SQLALCHEMY uses the app's Flask-SQLAlchemy engine."""
    if uri.startswith("postgresql"):
        _postgres_or_skip()
    table = f"fs_configs_{uuid.uuid4().hex[:8]}"
    app = make_app(tmp_path, SESSION_TYPE="sqlalchemy", SQLALCHEMY_DATABASE_URI=uri, SESSION_SQLALCHEMY_TABLE=table)
    db = SQLAlchemy(app)
    Session(app)
    try:
        keeps_sessions(app)
        with app.app_context():
            assert db.inspect(db.engine).has_table(table)
    finally:
        with app.app_context():
            db.session.execute(db.text(f"DROP TABLE IF EXISTS {table}"))
            db.session.commit()
            db.engine.dispose()


def test_sqlalchemy_database_uri_alone_is_enough(tmp_path: t.Any) -> None:
    """SESSION_TYPE 'sqlalchemy' before Flask-SQLAlchemy is set up: the session store opens SQLALCHEMY_DATABASE_URI."""
    app = make_app(tmp_path, SESSION_TYPE="sqlalchemy", SQLALCHEMY_DATABASE_URI="sqlite:///only_the_uri.db")
    Session(app)
    keeps_sessions(app)
    assert os.path.exists(os.path.join(app.instance_path, "only_the_uri.db"))


def test_sqlalchemy_with_no_database_names_both_keys(tmp_path: t.Any) -> None:
    """SESSION_TYPE 'sqlalchemy' with neither SESSION_SQLALCHEMY nor SQLALCHEMY_DATABASE_URI names both keys."""
    app = make_app(tmp_path, SESSION_TYPE="sqlalchemy")
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == "SESSION_SQLALCHEMY"
    assert "SQLALCHEMY_DATABASE_URI" in str(info.value)


def test_sqlalchemy_bind_key_is_refused_with_what_to_do(tmp_path: t.Any) -> None:
    """SESSION_SQLALCHEMY_BIND_KEY is not silently ignored: a ConfigError says to pass the bind's engine."""
    app = make_app(tmp_path, SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY_BIND_KEY="sessions")
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == "SESSION_SQLALCHEMY_BIND_KEY"
    assert "db.engines" in str(info.value)
