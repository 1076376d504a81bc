"""The SQLite store on a damaged database file, and the modes of the files it creates.

What is checked is what a user and an operator see: the status code and
``Retry-After`` of requests, the log line that names the file, and the
permission bits of the database, ``-wal`` and ``-shm`` files.
"""

from __future__ import annotations

import logging
import os
import stat
import typing as t

import pytest
from flask import Flask

from flask_satchel.manager import SessionManager
from flask_satchel.testing import make_app

#: Bytes that no SQLite page or header can hold (0xa5 is no b-tree page type).
GARBAGE = b"\xa5"

#: SQLite's default page size: page 1 holds the header and the schema.
PAGE = 4096


def _damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    if how == "header":
        with open(path, "r+b") as f:
            f.write(GARBAGE * 100)
    elif how == "pages":  # the header and schema stay readable, every table and index page is garbage
        assert size > PAGE
        with open(path, "r+b") as f:
            f.seek(PAGE)
            f.write(GARBAGE * (size - PAGE))
    else:  # a file that was never a database: another program's output, a wrong path
        with open(path, "wb") as f:
            f.write(b"this is a log file, not a database\n" * 200)


def _is_503(response: t.Any) -> bool:
    return response.status_code == 503 and int(response.headers["Retry-After"]) >= 1


def _app(tmp_path: t.Any) -> Flask:
    return make_app({"SESSION_TYPE": "sqlite", "SESSION_URL": "sqlite:///sessions.db"}, tmp_path)


@pytest.mark.parametrize("how", ["header", "pages", "not-a-database"])
def test_damaged_database_is_a_503_that_names_the_file(
    tmp_path: t.Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A damaged or foreign database file makes session requests 503 with Retry-After, logged with the file's path."""
    app = _app(tmp_path)
    manager: SessionManager = app.extensions["satchel"]
    assert manager.store is not None
    path = os.path.join(tmp_path, "sessions.db")
    browser = app.test_client()
    for i in range(20):  # rows on pages past the first
        assert browser.get(f"/set/k{i}/{'x' * 500}").status_code == 200
    manager.store.close()  # the next request opens the file afresh, as after a restart
    _damage(path, how)

    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        for request in ("/get/k1", "/set/k1/y"):
            assert _is_503(browser.get(request)), request
        assert _is_503(app.test_client().get("/set/new/1"))  # a new session cannot be stored either
        assert app.test_client().get("/plain").text == "no session here"
        restarted = _app(tmp_path)  # an app that starts on the damaged file starts, and answers 503
        assert _is_503(restarted.test_client().get("/set/new/1"))
    logged = [r.getMessage() for r in caplog.records if r.name == "flask_satchel" and r.levelno >= logging.ERROR]
    assert any(path in message for message in logged), logged

    os.replace(path, path + ".damaged")  # the operator moves it away: service resumes by itself
    assert browser.get("/set/again/1").status_code == 200
    assert browser.get("/get/again").text == "'1'"
    restarted.extensions["satchel"].store.close()
    manager.store.close()


@pytest.mark.parametrize("umask", [0o022, 0o277], ids=["umask-022", "umask-277"])
def test_created_database_files_are_private(tmp_path: t.Any, umask: int) -> None:
    """The database, -wal and -shm files the store creates are 0600 whatever the umask."""
    previous = os.umask(umask)
    try:
        app = _app(tmp_path)
        assert app.test_client().get("/set/a/1").status_code == 200
    finally:
        os.umask(previous)
    path = os.path.join(tmp_path, "sessions.db")
    modes = {name: stat.S_IMODE(os.stat(path + name).st_mode) for name in ("", "-wal", "-shm")}
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    app.extensions["satchel"].store.close()
