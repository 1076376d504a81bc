"""A small Flask app on any store, with the views the contract suites drive."""

from __future__ import annotations

import os
import time
import typing as t
import uuid

from flask import Flask
from flask import session as _session

from ..extension import Session
from ..session import ServerSession

__all__ = ["make_app", "session"]

#: ``flask.session``, typed as what Flask-Satchel puts there.
session = t.cast(ServerSession, _session)


def make_app(config: t.Mapping[str, t.Any], instance_path: str | os.PathLike[str]) -> Flask:
    """An app on the configured store with the small set of views the contract suites drive.

    ``/set/<key>/<value>``, ``/get/<key>``, ``/dump``, ``/login/<user>`` (sets
    ``_user_id`` and regenerates), ``/handle``, ``/destroy``, ``/regenerate``,
    ``/plain`` (never touches the session), ``/slow-add/<i>`` and
    ``/increment`` (read, pause ``TEST_PAUSE`` seconds, write).
    """
    app = Flask("satchel_contract", instance_path=str(instance_path))
    app.config.update({"SECRET_KEY": "contract-test-secret", **config})
    app.config.setdefault("SESSION_KEY_PREFIX", f"contract-{uuid.uuid4().hex[:8]}:")
    Session(app)

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/get/<key>")
    def get_value(key: str) -> str:
        return repr(session.get(key))

    @app.get("/dump")
    def dump() -> str:
        return repr(sorted(session.items()))

    @app.get("/plain")
    def plain() -> str:
        return "no session here"

    @app.get("/slow-add/<int:i>")
    def slow_add(i: int) -> str:
        session.get("_")  # load first, so the requests overlap between read and write
        time.sleep(float(app.config.get("TEST_PAUSE", 0.2)))
        session[f"k{i}"] = i
        return "ok"

    @app.get("/destroy")
    def destroy() -> str:
        session.destroy()
        return "gone"

    @app.get("/regenerate")
    def regenerate() -> str:
        session.regenerate()
        return session.handle

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["_user_id"] = user
        session.regenerate()
        return session.handle

    @app.get("/handle")
    def handle() -> str:
        return session.handle

    @app.get("/increment")
    def increment() -> str:
        n = session.get("n", 0)
        time.sleep(float(app.config.get("TEST_PAUSE", 0.02)))
        session["n"] = n + 1
        return "ok"

    return app
