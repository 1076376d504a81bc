"""``flask session …`` on every embedded store."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import subprocess
import sys
import time
import typing as t
import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_satchel import NotSupported, Session
from flask_satchel import current_session as session


@pytest.fixture(params=["memory", "sqlite", "filesystem"])
def app(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Flask]:
    app = _site(tmp_path, SESSION_TYPE=request.param)
    yield app
    app.extensions["satchel"].store.close()


def _site(instance: t.Any, **config: t.Any) -> Flask:
    """An app with Flask-Satchel configured by ``config`` and a few session routes."""
    app = Flask("cli_test", instance_path=str(instance))
    app.secret_key = "cli-test-secret"
    app.config.update(config)
    Session(app)

    @app.get("/whoami")
    def whoami() -> str:
        return f"{session.get('_user_id', '-')} {session.get('cart', '-')}"

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
    assert result.output.strip() == "Revoked 1 session of ann."
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
        "2026-12-23 08:01 UTC",  # 31 days: Flask's lifetime, the idle and the absolute cap
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
        "expires": "2026-12-23 08:01 UTC (in 31 d)",
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
    result = app.test_cli_runner().invoke(args=["session", "show", "0" * 32])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: No session with handle {'0' * 32!r}."


@pytest.mark.parametrize("signed", [False, True])
def test_a_cookie_given_for_a_handle_is_explained(tmp_path: t.Any, signed: bool) -> None:
    """show, revoke and revoke-user --keep given the cookie say a handle is not the cookie, and where to find it."""
    app = _site(tmp_path, SESSION_TYPE="sqlite", SESSION_USE_SIGNER=signed)
    client = app.test_client()
    handle = client.get("/login/ann").text
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert ("." in cookie.value) is signed
    runner = app.test_cli_runner()
    # "--": a cookie may start with "-" (URL-safe base64), which click would read as an option.
    for args in (
        ["show", "--", cookie.value],
        ["revoke", "--", cookie.value],
        ["revoke-user", "ann", "--keep", cookie.value],
    ):
        result = runner.invoke(args=["session", *args])
        assert result.exit_code == 1, args
        assert result.stdout == ""
        message = result.stderr.strip()
        assert message.startswith("Error: Not a session handle"), args
        assert "not the session cookie's value" in message
        assert cookie.value not in message  # a sid is a secret: errors end up in logs
        assert "flask session list" in message
    # Nothing was ended by the mistake, not even by the --keep that named no session.
    assert [info["handle"] for info in _json(app, "list")] == [handle]
    app.extensions["satchel"].store.close()


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


def test_counts_read_singular_or_plural(tmp_path: t.Any) -> None:
    """Messages say "1 session" and "2 sessions", never "1 sessions"."""
    now = [T0]
    app = _site(tmp_path, SESSION_TYPE="sqlite", PERMANENT_SESSION_LIFETIME=3600)
    app.extensions["satchel"].interface.now = lambda: now[0]
    runner = app.test_cli_runner()
    client = app.test_client()
    client.get("/login/ann")
    now[0] += 7200
    assert runner.invoke(args=["session", "cleanup"]).output == "Removed 1 expired session.\n"
    assert runner.invoke(args=["session", "cleanup"]).output == "Removed 0 expired sessions.\n"

    for _ in range(3):
        app.test_client().get("/login/bob")
    target = f"sqlite:///{tmp_path}/moved.sqlite3"
    copied = runner.invoke(args=["session", "migrate", "--to", target]).output
    assert copied.startswith(f"Copied 3 of 3 live sessions to {target} ")
    assert runner.invoke(args=["session", "revoke-user", "bob"]).output == "Revoked 3 sessions of bob.\n"
    keep = app.test_client().get("/login/cy").text
    app.test_client().get("/login/cy")
    only = runner.invoke(args=["session", "revoke-user", "cy", "--keep", keep]).output
    assert only == "Revoked 1 session of cy.\n"
    lines = runner.invoke(args=["session", "migrate", "--to", target, "--prune"]).output.splitlines()
    assert lines[0].startswith(f"Copied 1 of 1 live session to {target} ")
    assert lines[1] == "Removed 3 sessions from the target (ended here since an earlier copy)."
    runner.invoke(args=["session", "revoke", keep])
    app.test_client().get("/login/dee")
    lines = runner.invoke(args=["session", "migrate", "--to", target, "--prune"]).output.splitlines()
    assert lines[1] == "Removed 1 session from the target (ended here since an earlier copy)."
    app.extensions["satchel"].store.close()


def test_revoke_user_on_the_cookie_store_does_not_claim_a_count(tmp_path: t.Any) -> None:
    """revoke-user on the cookie store, which cannot count browsers' cookies, says it ended every one, not "0"."""
    pytest.importorskip("cryptography")
    app = _site(
        tmp_path, SESSION_TYPE="cookie", SESSION_COOKIE_REVOCATION_URL=f"sqlite:///{tmp_path}/revocations.sqlite3"
    )
    browser = app.test_client()
    browser.get("/login/ann")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["session", "revoke-user", "ann"])
    assert result.output == "Revoked every session of ann (the cookie store cannot count them).\n"
    assert _json(app, "revoke-user", "ann") == {"user": "ann", "revoked": None, "kept": None}
    assert browser.get("/whoami").text == "- -"


def test_errors_are_json_under_json(app: Flask) -> None:
    """Under --json a failure prints {"error": …} on stderr and nothing on stdout, with a non-zero exit code."""
    store = app.extensions["satchel"].store

    def cannot(now: float) -> int:
        raise NotSupported("this store cannot count its sessions")

    store.count = cannot
    runner = app.test_cli_runner()
    failures = {
        ("count",): "NotSupported: this store cannot count its sessions",
        ("show", "0" * 32): f"No session with handle {'0' * 32!r}.",
        ("revoke", "0" * 32): f"No session with handle {'0' * 32!r}.",
        ("create-table",): "MemoryStore has no table to create; only the sqlalchemy store does.",
        ("migrate", "--to", "ftp://example.org/x"): "ConfigError: SESSION_URL: unknown scheme 'ftp'",
    }
    for args, message in failures.items():
        if args == ("create-table",) and type(store).__name__ != "MemoryStore":
            message = message.replace("MemoryStore", type(store).__name__)
        as_text = runner.invoke(args=["session", *args])
        assert as_text.exit_code == 1
        assert as_text.stderr.startswith(f"Error: {message}"), args
        as_json = runner.invoke(args=["session", *args, "--json"])
        assert as_json.exit_code == 1, args
        assert as_json.stdout == "", args
        assert len(as_json.stderr.splitlines()) == 1, args
        assert json.loads(as_json.stderr)["error"].startswith(message), args
        assert list(json.loads(as_json.stderr)) == ["error"]
    # A command line click cannot parse (here: HANDLE is missing) is JSON too, with click's exit code 2.
    missing = runner.invoke(args=["session", "show", "--json"])
    assert missing.exit_code == 2
    assert missing.stdout == ""
    assert "HANDLE" in json.loads(missing.stderr)["error"]
    assert runner.invoke(args=["session", "show"]).stderr.startswith("Usage:")


def test_list_shows_ip_and_user_agent_when_tracked(tmp_path: t.Any) -> None:
    """With SESSION_TRACK_CLIENT, list adds each session's ip and user agent (shortened; show has it whole)."""
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    app = _site(tmp_path, SESSION_TYPE="sqlite", SESSION_TRACK_CLIENT=True)
    handle = (
        app.test_client()
        .get("/login/ann", headers={"User-Agent": agent}, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        .text
    )
    lines = app.test_cli_runner().invoke(args=["session", "list"]).output.splitlines()
    assert lines[0].split() == ["handle", "user", "created_at", "last_seen", "expires_at", "ip", "user_agent"]
    assert lines[1].startswith(handle)
    assert lines[1].index("192.0.2.7") == lines[0].index("ip")
    shown = lines[1][lines[0].index("user_agent") :]
    assert shown == agent[:49] + "…"
    assert f"user agent  {agent}" in app.test_cli_runner().invoke(args=["session", "show", handle]).output
    app.extensions["satchel"].store.close()


# migrate -----------------------------------------------------------------------------------


def _carry(client: FlaskClient, app: Flask) -> FlaskClient:
    """A client of ``app`` holding the session cookie ``client`` holds: the same browser, after the switch."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    moved = app.test_client()
    moved.set_cookie("session", cookie.value)
    return moved


def test_migrate_filesystem_to_sqlite_keeps_everyone_logged_in(tmp_path: t.Any) -> None:
    """After migrate --to, an app on the target store knows every browser logged in before, with its data."""
    old = _site(tmp_path, SESSION_TYPE="filesystem")
    alice, bob = old.test_client(), old.test_client()
    alice.get("/login/alice")
    alice.get("/set/cart/apple")
    bob.get("/login/bob")
    target = f"sqlite:///{tmp_path}/moved.sqlite3"

    result = old.test_cli_runner().invoke(args=["session", "migrate", "--to", target])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Copied 2 of 2 live sessions to {target} (0 skipped: unchanged or ended).",
        f"Next: set SESSION_URL = {target!r} and restart the app.",
    ]
    new = _site(tmp_path, SESSION_URL=target)
    assert _carry(alice, new).get("/whoami").text == "alice apple"
    assert _carry(bob, new).get("/whoami").text == "bob -"
    assert new.test_client().get("/whoami").text == "- -"
    assert sorted(r["handle"] for r in _json(new, "list")) == sorted(r["handle"] for r in _json(old, "list"))
    new.extensions["satchel"].store.close()


def test_migrate_again_updates_and_prune_forgets_ended_sessions(tmp_path: t.Any) -> None:
    """A second run skips what is unchanged, copies what changed, and --prune drops sessions ended since."""
    old = _site(tmp_path, SESSION_TYPE="filesystem")
    alice, bob = old.test_client(), old.test_client()
    alice.get("/login/alice")
    bob_handle = bob.get("/login/bob").text
    target = f"sqlite:///{tmp_path}/moved.sqlite3"
    assert _json(old, "migrate", "--to", target)["copied"] == 2
    assert _json(old, "migrate", "--to", target) == {
        "target": target,
        "live": 2,
        "copied": 0,
        "skipped": 2,
        "pruned": None,
    }

    alice.get("/set/cart/pear")
    assert _json(old, "revoke", bob_handle)["revoked"]
    assert _json(old, "migrate", "--to", target)["copied"] == 1
    new = _site(tmp_path, SESSION_URL=target)
    assert _carry(alice, new).get("/whoami").text == "alice pear"
    # Without --prune, a session ended at the source lives on in the copy …
    assert _carry(bob, new).get("/whoami").text == "bob -"
    # … and --prune ends it there too.
    assert _json(old, "migrate", "--to", target, "--prune")["pruned"] == 1
    assert _carry(bob, new).get("/whoami").text == "- -"
    assert _carry(alice, new).get("/whoami").text == "alice pear"
    new.extensions["satchel"].store.close()


def test_migrate_sqlite_to_redis_keeps_everyone_logged_in(tmp_path: t.Any, need: t.Callable[[bool, str], None]) -> None:
    """An app moved from SQLite to Redis with migrate keeps its logged-in users."""
    try:
        import flask_satchel.stores.redis  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the redis store does not import yet: {e}")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=12, socket_timeout=2, socket_connect_timeout=2)
    try:
        reachable = bool(client.ping())
    except redis.RedisError:
        reachable = False
    if not reachable:
        client.close()
    need(reachable, "Redis is not reachable on 127.0.0.1:6379")
    prefix = f"satchel-cli-test:{uuid.uuid4().hex}:"
    target = "redis://127.0.0.1:6379/12"
    old = _site(tmp_path, SESSION_TYPE="sqlite", SESSION_KEY_PREFIX=prefix)
    new = None
    try:
        carol, dan = old.test_client(), old.test_client()
        carol.get("/login/carol")
        carol.get("/set/cart/plum")
        dan.get("/login/dan")
        assert _json(old, "migrate", "--to", target)["copied"] == 2
        new = _site(tmp_path, SESSION_URL=target, SESSION_KEY_PREFIX=prefix)
        assert _carry(carol, new).get("/whoami").text == "carol plum"
        assert _carry(dan, new).get("/whoami").text == "dan -"
        assert [r["user"] for r in _json(new, "list", "--user", "carol")] == ["carol"]
        # Running it again finds the copies identical.
        assert _json(old, "migrate", "--to", target)["copied"] == 0
    finally:
        old.extensions["satchel"].store.close()
        if new is not None:
            new.extensions["satchel"].store.close()
        mine = list(client.scan_iter(match=f"{prefix}*"))
        if mine:
            client.delete(*mine)
        client.close()


def test_migrate_from_a_store_that_cannot_list_fails_clearly(tmp_path: t.Any) -> None:
    """migrate from the cookie store, which cannot list its sessions, is one NotSupported line and exit code 1."""
    app = _site(tmp_path, SESSION_TYPE="cookie")
    result = app.test_cli_runner().invoke(args=["session", "migrate", "--to", f"sqlite:///{tmp_path}/x.sqlite3"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: NotSupported: the cookie store keeps sessions in browsers")
    assert len(result.output.splitlines()) == 1


def test_migrate_to_a_bad_url_fails_clearly(app: Flask) -> None:
    """A target URL that is not a session store is a ConfigError line naming the problem."""
    result = app.test_cli_runner().invoke(args=["session", "migrate", "--to", "ftp://example.org/x"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ConfigError: SESSION_URL: unknown scheme 'ftp'")


def test_migrate_to_a_folder(tmp_path: t.Any) -> None:
    """migrate --to file:///dir fills that folder, whatever SESSION_FILE_DIR the source app uses."""
    old = _site(tmp_path / "a", SESSION_TYPE="filesystem", SESSION_FILE_DIR=str(tmp_path / "files"))
    browser = old.test_client()
    handle = browser.get("/login/erin").text
    target = f"file://{tmp_path}/moved"
    assert _json(old, "migrate", "--to", target)["copied"] == 1
    assert (tmp_path / "moved" / handle[:2] / handle).is_file()
    new = _site(tmp_path / "b", SESSION_URL=target)
    assert _carry(browser, new).get("/whoami").text == "erin -"


# Progress bars -------------------------------------------------------------------------------

_APP = """
from flask import Flask
from flask_satchel import Session

app = Flask("tty_test", instance_path={instance!r})
app.config["SESSION_TYPE"] = "filesystem"
Session(app)
"""


def _run_in_terminal(cwd: t.Any, *args: str) -> str:
    """Run ``flask session …`` with its stdout on a pseudo-terminal, as a person would; return what it printed."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "tty_app", "session", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.STDOUT,
        )
    finally:
        os.close(terminal)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
        assert proc.wait(timeout=30) == 0, b"".join(chunks)
    return b"".join(chunks).decode()


def test_progress_bar_only_on_a_terminal(tmp_path: t.Any) -> None:
    """migrate and cleanup draw a progress bar on a terminal, never with --json nor into a pipe."""
    n = 40
    (tmp_path / "tty_app.py").write_text(_APP.format(instance=str(tmp_path)))
    app = _site(tmp_path, SESSION_TYPE="filesystem", PERMANENT_SESSION_LIFETIME=3600)
    for i in range(n):
        app.test_client().get(f"/login/u{i}")
    target = f"sqlite:///{tmp_path}/moved.sqlite3"

    shown = _run_in_terminal(tmp_path, "migrate", "--to", target)
    assert "Copying sessions" in shown
    assert "100%" in shown
    assert f"Copied {n} of {n} live sessions" in shown
    as_json = _run_in_terminal(tmp_path, "migrate", "--to", target, "--json")
    assert "Copying" not in as_json
    assert json.loads(as_json)["skipped"] == n
    piped = app.test_cli_runner().invoke(args=["session", "migrate", "--to", target])
    assert "Copying" not in piped.output

    # Sessions made two hours ago by the app's clock have expired by the real one.
    app.extensions["satchel"].interface.now = lambda: time.time() - 7200
    for i in range(n):
        app.test_client().get(f"/login/v{i}")
    shown = _run_in_terminal(tmp_path, "cleanup")
    assert "Removing expired sessions" in shown
    assert "100%" in shown
    assert shown.rstrip().endswith(f"Removed {n} expired sessions.")
    assert _json(app, "count") == {"count": n}
