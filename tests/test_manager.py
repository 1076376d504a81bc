"""The manager's admin operations, called directly: info, stats, cleanup with progress, migrate_to, prune_copy."""

from __future__ import annotations

import typing as t

import msgspec
import pytest
from flask import Flask

from flask_satchel import Session, SessionManager
from flask_satchel import current_session as session
from flask_satchel.stores.memory import MemoryStore

T0 = 1_800_000_000.0


@pytest.fixture(params=["memory", "sqlite", "filesystem"])
def app(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Flask]:
    app = Flask("manager_test", instance_path=str(tmp_path))
    app.config["SESSION_TYPE"] = request.param
    Session(app)

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["_user_id"] = user
        session["token"] = "s3cret"
        return session.handle

    yield app
    app.extensions["satchel"].store.close()


@pytest.fixture
def manager(app: Flask) -> SessionManager:
    return t.cast(SessionManager, app.extensions["satchel"])


@pytest.fixture
def clock(manager: SessionManager) -> list[float]:
    """The interface's clock, frozen; tests move it instead of sleeping."""
    now = [T0]
    manager.interface.now = lambda: now[0]
    return now


def test_info_has_key_names_listings_do_not(app: Flask, manager: SessionManager) -> None:
    """info() gives the key names of a session; listings leave keys as None rather than claim an empty session."""
    handle = app.test_client().get("/login/ann").text
    info = manager.info(handle)
    assert info is not None
    assert (info.handle, info.user, info.keys) == (handle, "ann", ("_user_id", "token"))
    assert [i.keys for i in manager.sessions()] == [None]


def test_info_of_unknown_malformed_or_expired_is_none(app: Flask, manager: SessionManager, clock: list[float]) -> None:
    """info() is None for a handle naming no live session, including one past its expiry."""
    handle = app.test_client().get("/login/ann").text
    assert manager.info("f" * 32) is None
    assert manager.info("../../etc/passwd") is None
    clock[0] += 40 * 86400
    assert manager.info(handle) is None


def test_stats_ranks_users_with_stable_ties(app: Flask, manager: SessionManager) -> None:
    """stats() ranks users by sessions, ties by name, and keeps only the top N."""
    for user in ("dee", "cat", "bea", "cat", "bea"):
        app.test_client().get(f"/login/{user}")
    stats = manager.stats(top=2)
    assert stats.top_users == (("bea", 2), ("cat", 2))
    assert (stats.count, stats.users, stats.anonymous) == (5, 3, 0)


def test_cleanup_with_progress_matches_plain_cleanup(app: Flask, manager: SessionManager, clock: list[float]) -> None:
    """cleanup(progress) removes exactly the expired sessions and reports progress up to the total."""
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600
    for i in range(23):
        app.test_client().get(f"/login/u{i}")
        clock[0] += 60
    clock[0] = T0 + 3600 + 15 * 60 + 30  # u0 … u15 have expired
    calls: list[tuple[int, int]] = []
    assert manager.cleanup(lambda done, total: calls.append((done, total))) == 16
    assert calls[0] == (0, 16)
    assert calls[-1] == (16, 16)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) > 3  # it advanced in steps, not all at once
    assert sorted(i.user or "" for i in manager.sessions()) == sorted(f"u{i}" for i in range(16, 23))


def test_migrate_to_copies_live_records_whole(app: Flask, manager: SessionManager, clock: list[float]) -> None:
    """migrate_to copies each live record with its data under the same handle, and leaves out expired ones."""
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600
    stale = app.test_client().get("/login/old").text
    clock[0] += 1800
    live = [app.test_client().get(f"/login/u{i}").text for i in range(3)]
    clock[0] += 1801
    target = MemoryStore()
    calls: list[tuple[int, int]] = []
    assert manager.migrate_to(target, lambda done, total: calls.append((done, total))) == 3
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert target.load(stale) is None
    assert manager.store is not None
    for handle in live:
        assert target.load(handle) == manager.store.load(handle)


def test_migrate_to_overwrites_only_what_differs(app: Flask, manager: SessionManager) -> None:
    """A second migrate_to writes nothing when the copy is current, and replaces a copy that differs."""
    handles = [app.test_client().get(f"/login/u{i}").text for i in range(2)]
    target = MemoryStore()
    assert manager.migrate_to(target) == 2
    assert manager.migrate_to(target) == 0
    record = target.load(handles[0])
    assert record is not None
    target.create(handles[0], msgspec.structs.replace(record, user="someone else"))
    assert manager.migrate_to(target) == 1
    assert manager.store is not None
    assert target.load(handles[0]) == manager.store.load(handles[0])


def test_prune_copy_removes_only_what_ended_here(app: Flask, manager: SessionManager) -> None:
    """prune_copy deletes from the copy the sessions no longer live here, and keeps the rest."""
    handles = [app.test_client().get(f"/login/u{i}").text for i in range(3)]
    target = MemoryStore()
    manager.migrate_to(target)
    manager.revoke(handles[1])
    assert manager.prune_copy(target) == 1
    assert [target.load(h) is not None for h in handles] == [True, False, True]
