"""``flask session …`` on every embedded store."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask, session

from flask_satchel import NotSupported, Session


@pytest.fixture(params=["memory", "sqlite", "filesystem"])
def app(request: pytest.FixtureRequest, tmp_path: t.Any) -> Flask:
    app = Flask("cli_test", instance_path=str(tmp_path))
    app.config["SESSION_TYPE"] = request.param
    Session(app)

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["_user_id"] = user
        return session.handle

    return app


def test_count_list_revoke(app: Flask) -> None:
    """count, list (table and JSON), revoke and revoke-user report and act on real sessions."""
    runner = app.test_cli_runner()
    handles = [app.test_client().get(f"/login/{u}").text for u in ("ann", "ann", "bob")]

    assert runner.invoke(args=["session", "count"]).output.strip() == "3"
    table = runner.invoke(args=["session", "list", "--user", "ann"]).output
    assert table.splitlines()[0].split() == ["handle", "user", "created_at", "last_seen", "expires_at"]
    assert sorted(line.split()[0] for line in table.splitlines()[1:]) == sorted(handles[:2])
    rows = json.loads(runner.invoke(args=["session", "list", "--json"]).output)
    assert sorted(r["user"] for r in rows) == ["ann", "ann", "bob"]

    result = runner.invoke(args=["session", "revoke", handles[2]])
    assert result.exit_code == 0
    assert "Revoked" in result.output
    result = runner.invoke(args=["session", "revoke", handles[2]])
    assert result.exit_code == 1
    assert "No session with handle" in result.output

    result = runner.invoke(args=["session", "revoke-user", "ann", "--keep", handles[0]])
    assert result.output.strip() == "Revoked 1 sessions of ann."
    assert [r["handle"] for r in json.loads(runner.invoke(args=["session", "list", "--json"]).output)] == [handles[0]]


def test_cleanup_reports_count(app: Flask) -> None:
    """cleanup says how many expired sessions it removed."""
    app.test_client().get("/login/cy")
    result = app.test_cli_runner().invoke(args=["session", "cleanup"])
    assert result.exit_code == 0
    assert result.output.strip() == "Removed 0 expired sessions."


def test_empty_list(app: Flask) -> None:
    """list with no sessions says so."""
    assert app.test_cli_runner().invoke(args=["session", "list"]).output.strip() == "No sessions."


def test_create_table_is_refused_cleanly(app: Flask) -> None:
    """create-table on a store without a table is a one-line error, not a traceback."""
    result = app.test_cli_runner().invoke(args=["session", "create-table"])
    assert result.exit_code == 1
    assert "only the sqlalchemy store" in result.output


def test_unsupported_operation_is_a_clean_error(app: Flask) -> None:
    """A store that cannot count answers with its reason and exit code 1."""
    store = app.extensions["satchel"].store

    def cannot(now: float) -> int:
        raise NotSupported("this store cannot count its sessions")

    store.count = cannot
    result = app.test_cli_runner().invoke(args=["session", "count"])
    assert result.exit_code == 1
    assert "NotSupported: this store cannot count its sessions" in result.output
