"""The README's pattern, written as an app would write it, for ``mypy --strict``.

``make lint`` type-checks this file (as httpx checks its usage examples), so
a change that loses a type of the public API — ``current_session`` falling
back to ``SessionMixin``, a manager method returning ``Any`` — fails CI.
``test_usage.py`` beside it runs the same app, so the file cannot drift into
code that type-checks but does not work.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from flask import Flask, redirect, request
from werkzeug.wrappers import Response

import flask_satchel
from flask_satchel import (
    ConfigError,
    NotSupported,
    SatchelError,
    SerializationError,
    ServerSession,
    Session,
    SessionInfo,
    SessionLocked,
    SessionManager,
    SessionTooLarge,
    Stats,
    StoreUnavailable,
    TooManySessions,
    current_session,
)

if t.TYPE_CHECKING:
    from typing_extensions import assert_type  # typing's own is Python 3.11+; mypy ships this module's stub
else:

    def assert_type(value: object, _type: object) -> object:
        """``typing.assert_type`` (Python 3.11+) does nothing at run time either."""
        return value


assert_type(flask_satchel.__version__, str)
assert_type(current_session, ServerSession)

#: What ``/devices`` answers for each session: the fields of a ``SessionInfo``, as JSON.
Device = dict[str, str | bool | list[str] | None]


def describe(info: SessionInfo) -> Device:
    """One row of a "your devices" page, from every field a ``SessionInfo`` has."""
    assert_type(info.handle, str)
    assert_type(info.user, str | None)
    assert_type(info.created_at, dt.datetime)
    assert_type(info.last_seen, dt.datetime)
    assert_type(info.expires_at, dt.datetime)
    assert_type(info.permanent, bool)
    assert_type(info.ip, str | None)
    assert_type(info.user_agent, str | None)
    assert_type(info.keys, tuple[str, ...] | None)
    return {
        "handle": info.handle,
        "user": info.user,
        "created_at": info.created_at.isoformat(),
        "last_seen": info.last_seen.isoformat(),
        "expires_at": info.expires_at.isoformat(),
        "permanent": info.permanent,
        "ip": info.ip,
        "user_agent": info.user_agent,
        "keys": None if info.keys is None else list(info.keys),
    }


def create_app(instance_path: str, **config: t.Any) -> Flask:
    """An app with a login, a logout and a "log out other devices" page."""
    app = Flask(__name__, instance_path=instance_path)
    app.config["SECRET_KEY"] = "typed-usage-secret"
    app.config.update(config)
    try:
        manager: SessionManager = Session().init_app(app)
    except ConfigError as e:
        assert_type(e.key, str)
        raise

    @app.post("/login/<user>")
    def login(user: str) -> Response:
        current_session["_user_id"] = user
        current_session.regenerate()  # a new id on login: no session fixation
        return redirect("/")

    @app.post("/logout")
    def logout() -> Response:
        current_session.destroy()  # gone on the server, cookie deleted
        return redirect("/")

    @app.get("/")
    def index() -> dict[str, t.Any]:
        sid: str | None = current_session.sid
        return {
            "user": current_session.get("_user_id"),
            "handle": current_session.handle,
            "has_sid": sid is not None,
            "new": current_session.new,
            "permanent": current_session.permanent,
        }

    @app.get("/devices")
    def devices() -> list[Device]:
        user = current_session.get("_user_id")
        if user is None:
            return []
        infos: list[SessionInfo] = manager.sessions_of(user)
        shown = [describe(info) for info in infos]
        one: SessionInfo | None = manager.info(current_session.handle)
        if one is not None:
            shown.append(describe(one))
        return shown

    @app.post("/devices/revoke")
    def revoke() -> dict[str, bool]:
        ended: bool = manager.revoke(request.form["handle"])
        return {"revoked": ended}

    @app.post("/devices/revoke-others")
    def revoke_others() -> dict[str, int]:
        ended: int = manager.revoke_user(current_session["_user_id"], keep=current_session.handle)
        return {"revoked": ended}

    @app.get("/admin/stats")
    def stats() -> dict[str, t.Any]:
        try:
            count: int | None = manager.count()
        except NotSupported:
            count = None  # memcached cannot count its keys honestly
        summary: Stats = manager.stats(top=3)
        removed: int = manager.cleanup()
        return {"count": count, "users": summary.users, "top": summary.top_users, "removed": removed}

    @app.errorhandler(TooManySessions)
    def too_many(e: TooManySessions) -> tuple[str, int]:
        return "Log out on another device first.", 409

    @app.errorhandler(SessionTooLarge)
    def too_large(e: SessionTooLarge) -> tuple[str, int]:
        size: int | None = e.size
        limit: int | None = e.limit
        return f"The session is too large ({size} of {limit} bytes).", 413

    @app.errorhandler(SerializationError)
    def unstorable(e: SerializationError) -> tuple[str, int]:
        return str(e), 500

    @app.errorhandler(SessionLocked)
    def busy(e: SessionLocked) -> tuple[str, int, dict[str, str]]:
        return e.message, 503, {"Retry-After": str(e.retry_after)}

    @app.errorhandler(StoreUnavailable)
    def unavailable(e: StoreUnavailable) -> tuple[str, int]:
        return e.message, 503

    @app.errorhandler(SatchelError)
    def other(e: SatchelError) -> tuple[str, int]:
        return type(e).__name__, 500

    return app
