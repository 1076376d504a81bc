"""``flask session …`` on every embedded store."""

from __future__ import annotations

import datetime as dt
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

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return session.handle

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["seen"] = True
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


# Readable output, show, stats ------------------------------------------------------------

#: 2026-11-22 08:01 UTC, the moment the frozen clock starts at.
T0 = dt.datetime(2026, 11, 22, 8, 1, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture
def clock(app: Flask) -> list[float]:
    """The interface's clock, frozen at T0; tests move it instead of sleeping."""
    now = [T0]
    app.extensions["satchel"].interface.now = lambda: now[0]
    return now


def _json(app: Flask, *args: str) -> t.Any:
    result = app.test_cli_runner().invoke(args=["session", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_shows_utc_times_and_ages(app: Flask, clock: list[float]) -> None:
    """list prints creation and expiry as 'YYYY-MM-DD HH:MM UTC' and the last request as an age."""
    handle = app.test_client().get("/login/ann").text
    clock[0] += 3 * 3600
    lines = app.test_cli_runner().invoke(args=["session", "list"]).output.splitlines()
    assert lines[1].split("  ")[0] == handle
    assert [cell.strip() for cell in lines[1].split("  ") if cell.strip()] == [
        handle,
        "ann",
        "2026-11-22 08:01 UTC",
        "3 h ago",
        "2026-12-22 08:01 UTC",
    ]
    # Columns line up under their headers.
    assert lines[0].index("last_seen") == lines[1].index("3 h ago")


def test_show_prints_metadata_and_key_names(app: Flask, clock: list[float]) -> None:
    """show lists a session's user, times, flags and key names."""
    client = app.test_client()
    handle = client.get("/login/ann").text
    client.get("/set/cart/apple")
    clock[0] += 90 * 60
    result = app.test_cli_runner().invoke(args=["session", "show", handle])
    assert result.exit_code == 0
    fields = {line[:12].strip(): line[12:] for line in result.output.splitlines()}
    assert fields == {
        "handle": handle,
        "user": "ann",
        "created": "2026-11-22 08:01 UTC (2 h ago)",
        "last seen": "2026-11-22 08:01 UTC (2 h ago)",
        "expires": "2026-12-22 08:01 UTC (in 30 d)",
        "permanent": "no",
        "ip": "-",
        "user agent": "-",
        "keys": "_user_id, cart",
    }


def test_show_never_prints_values(app: Flask) -> None:
    """show, in text or JSON, names the session's keys but never prints what they hold."""
    client = app.test_client()
    handle = client.get("/login/ann").text
    client.get("/set/api_token/tok-9f8e7d6c5b4a")
    runner = app.test_cli_runner()
    text = runner.invoke(args=["session", "show", handle]).output
    as_json = runner.invoke(args=["session", "show", handle, "--json"]).output
    for output in (text, as_json):
        assert "api_token" in output
        assert "tok-9f8e7d6c5b4a" not in output
    assert json.loads(as_json)["keys"] == ["_user_id", "api_token"]


def test_show_unknown_handle_is_an_error(app: Flask) -> None:
    """show of a handle that names no live session is one error line and exit code 1."""
    runner = app.test_cli_runner()
    for handle in ("0" * 32, "not-a-handle"):
        result = runner.invoke(args=["session", "show", handle])
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: No session with handle {handle!r}."


def test_show_leaves_out_expired_sessions(app: Flask, clock: list[float]) -> None:
    """A session past its expiry is not shown, even before cleanup removes it."""
    handle = app.test_client().get("/login/ann").text
    clock[0] += 32 * 86400
    assert app.test_cli_runner().invoke(args=["session", "show", handle]).exit_code == 1


def test_terminal_output_escapes_control_characters(app: Flask) -> None:
    """A user name carrying a terminal escape sequence is printed escaped, not sent to the terminal."""
    handle = app.test_client().get("/login/x\x1b[2Jy").text
    runner = app.test_cli_runner()
    for args in (["list"], ["show", handle], ["stats"]):
        output = runner.invoke(args=["session", *args]).output
        assert "\x1b" not in output
        assert "x\\x1b[2Jy" in output


def test_stats_counts_users_permanent_and_age(app: Flask, clock: list[float]) -> None:
    """stats gives the count, permanent and anonymous sessions, users ranked by sessions, and the oldest's age."""
    for user in ("bob", "ann", "ann", "cy", "ann", "bob"):
        app.test_client().get(f"/login/{user}")
        clock[0] += 60
    app.test_client().get("/set/cart/apple")  # anonymous
    app.test_client().get("/permanent")  # anonymous and permanent
    clock[0] = T0 + 5 * 3600
    stats = _json(app, "stats", "--top", "2")
    assert stats == {
        "as_of": "2026-11-22T13:01:00+00:00",
        "count": 8,
        "permanent": 1,
        "anonymous": 2,
        "users": 3,
        "top_users": [{"user": "ann", "sessions": 3}, {"user": "bob", "sessions": 2}],
        "oldest_created_at": "2026-11-22T08:01:00+00:00",
        "oldest_age_seconds": 5 * 3600.0,
    }
    text = app.test_cli_runner().invoke(args=["session", "stats"]).output.splitlines()
    assert text[:5] == [
        "sessions   8",
        "permanent  1",
        "anonymous  2",
        "users      3",
        "oldest     2026-11-22 08:01 UTC (5 h ago)",
    ]
    assert [line.split() for line in text[6:]] == [["user", "sessions"], ["ann", "3"], ["bob", "2"], ["cy", "1"]]


def test_stats_of_no_sessions(app: Flask) -> None:
    """stats with no sessions reports zeros and no oldest session."""
    stats = _json(app, "stats")
    assert (stats["count"], stats["top_users"], stats["oldest_created_at"], stats["oldest_age_seconds"]) == (
        0,
        [],
        None,
        None,
    )


def test_every_command_speaks_json(app: Flask) -> None:
    """Every command takes --json and then prints nothing but JSON with stable field names."""
    from flask_satchel.cli import session_cli

    handles = [app.test_client().get(f"/login/{u}").text for u in ("ann", "ann", "bob")]
    assert _json(app, "count") == {"count": 3}
    assert [r["handle"] for r in _json(app, "list", "--user", "bob")] == [handles[2]]
    assert set(_json(app, "show", handles[2])) == {
        "handle",
        "user",
        "created_at",
        "last_seen",
        "expires_at",
        "permanent",
        "ip",
        "user_agent",
        "keys",
    }
    assert _json(app, "revoke", handles[2]) == {"handle": handles[2], "revoked": True}
    assert _json(app, "revoke-user", "ann", "--keep", handles[0]) == {"user": "ann", "revoked": 1, "kept": handles[0]}
    assert _json(app, "cleanup") == {"removed": 0}
    assert set(_json(app, "stats")) >= {"count", "top_users"}
    target = f"sqlite:///{app.instance_path}/target.sqlite3"
    assert _json(app, "migrate", "--to", target) == {
        "target": target,
        "live": 1,
        "copied": 1,
        "skipped": 0,
        "pruned": None,
    }
    assert all(any(p.name == "as_json" for p in c.params) for c in session_cli.commands.values())


def test_cleanup_reports_what_it_removed(app: Flask, clock: list[float]) -> None:
    """cleanup removes the sessions past their expiry, and only those, and says how many."""
    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(hours=1)
    for i in range(5):
        app.test_client().get(f"/login/u{i}")
        clock[0] += 20 * 60
    clock[0] = T0 + 3600 + 30 * 60  # u0 and u1 have expired
    result = app.test_cli_runner().invoke(args=["session", "cleanup"])
    assert result.output == "Removed 2 expired sessions.\n"
    assert sorted(r["user"] for r in _json(app, "list")) == ["u2", "u3", "u4"]
    clock[0] += 3600
    assert _json(app, "cleanup") == {"removed": 3}
