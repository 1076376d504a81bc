"""A save that fails: nothing orphaned, Flask's second call harmless, outages logged once, cleanup never a 500."""

from __future__ import annotations

import logging
import typing as t

import pytest
from conftest import free_port, value_app
from flask import Flask, session

from flask_satchel import SerializationError, signals
from flask_satchel.interface import SatchelSessionInterface


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    return value_app(tmp_path, SECRET_KEY="one", **config)


def test_failed_new_session_leaves_no_record_and_no_assertion(tmp_path: t.Any) -> None:
    """When saving a new session fails after the store wrote it, the record is removed and Flask's retry is quiet."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    manager = app.extensions["satchel"]

    def refuse(sender: Flask, handle: str) -> None:
        raise RuntimeError("an audit log that is down")

    with signals.session_created.connected_to(refuse, app):
        response = app.test_client().get("/set/x")
    assert response.status_code == 500
    assert manager.count() == 0  # no record that no cookie could ever reach


def test_save_error_is_raised_once_with_the_original_error(tmp_path: t.Any) -> None:
    """Flask calls save_session again after it raised; the second call neither writes nor masks the error."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/bad")
    def bad() -> str:
        session["tags"] = {"a", "b"}
        return "ok"

    client = app.test_client()
    client.get("/set/before")
    with pytest.raises(SerializationError, match=r"session key 'tags'.*type set"):
        client.get("/bad")
    assert client.get("/get").text == "'before'"


def test_serialization_error_names_the_key_of_a_changed_session(tmp_path: t.Any) -> None:
    """A value that cannot be stored names its key, also when the session was stored before."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/object")
    def store_object() -> str:
        session["widget"] = object()
        return "ok"

    client = app.test_client()
    client.get("/set/x")
    with pytest.raises(SerializationError, match=r"session key 'widget': Object of type object"):
        client.get("/object")


def test_outages_are_logged_for_reads_and_folded(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every failed read is a 503, and the log gets one line per interval that counts the failures it folded."""
    app = make_app(tmp_path, SESSION_URL=f"redis://127.0.0.1:{free_port()}/0", SESSION_STORE_TIMEOUT=0.5)
    outages = t.cast(SatchelSessionInterface, app.session_interface).outages
    clock = [1000.0]
    outages.clock = lambda: clock[0]
    client = app.test_client()
    client.set_cookie("session", "x" * 43)
    with caplog.at_level(logging.ERROR, "flask_satchel"):
        for _ in range(4):
            response = client.get("/get")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
        lines = [r for r in caplog.records if r.name == "flask_satchel"]
        assert len(lines) == 1
        assert "unavailable" in lines[0].getMessage()
        clock[0] += outages.interval
        assert client.get("/get").status_code == 503
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_satchel"]
    assert len(messages) == 2
    assert "3 more failures" in messages[1]


def test_failing_periodic_cleanup_never_fails_the_request(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """SESSION_CLEANUP_N_REQUESTS: a cleanup that raises is logged, and the user's request still succeeds."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_CLEANUP_N_REQUESTS=1)
    store = app.extensions["satchel"].store

    def broken_cleanup(now: float) -> int:
        raise ValueError("a damaged record")

    store.cleanup = broken_cleanup
    client = app.test_client()
    with caplog.at_level(logging.ERROR, "flask_satchel"):
        assert client.get("/set/a").status_code == 200
    assert client.get("/get").text == "'a'"
    assert any("cleanup failed" in r.getMessage() for r in caplog.records)
