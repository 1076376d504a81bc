"""The code in README.md and docs/ runs as written.

Every fenced ``python`` block of README.md and docs/**/*.md is a program:
each one runs here, alone, in a fresh interpreter whose working folder is a
new temporary one (so an app's instance folder, its SQLite file and its
session files are the test's own). A block passes when it exits 0; its own
``assert`` lines check what the text around it says. A block that cannot
run alone (it continues an app shown elsewhere, or needs servers a test
machine does not have) says so in its info string, and is not run::

    ```python fragment

Blocks that name a local server use the real one: Redis on 127.0.0.1:6379,
PostgreSQL on 5432 and MariaDB on 3306, as the rest of the suite does (a
missing one skips locally and fails under CI=true). memcached is not
running on a test machine, so a block that names 127.0.0.1:11211 runs
against a private memcached on a free port, that address changed to it.

The quick-start app is also imported, exactly as the page shows it, and
driven through Flask's test client: log in, see the page, log out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import socket
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from conftest import MemcachedServer, require
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PAGES = [page for page in PAGES if "_build" not in page.parts and "_generated" not in page.parts]

#: An opening or closing fence: its indentation, its backticks or tildes, its info string.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_PYTHON = {"python", "py", "python3"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    language: str
    words: tuple[str, ...]
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def fragment(self) -> bool:
        return "fragment" in self.words


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, as CommonMark reads them (indented ones in lists too)."""
    found = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        words = tuple(opening["info"].split())
        body = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            text = lines[j]
            # Content loses as much leading space as the opening fence had, no more.
            strip = len(text) - len(text.lstrip(" "))
            body.append(text[min(indent, strip) :])
            j += 1
        language = words[0] if words else ""
        found.append(Block(page, i + 1, language, words[1:], "\n".join(body) + "\n"))
        i = j + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
PROGRAMS = [block for block in ALL if block.language in _PYTHON and not block.fragment]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


#: Text in a block, the local server it means, and the port to check.
_SERVICES = [
    ("127.0.0.1:6379", "Redis on 127.0.0.1:6379", 6379),
    ('host="127.0.0.1", port=6379', "Redis on 127.0.0.1:6379", 6379),
    ("127.0.0.1:5432", "PostgreSQL on 127.0.0.1:5432", 5432),
    ("127.0.0.1:3306", "MariaDB on 127.0.0.1:3306", 3306),
]
MEMCACHED = "127.0.0.1:11211"


def test_pages_have_code() -> None:
    """The pages this test reads exist and hold the runnable examples (a moved page would skip them silently)."""
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/quickstart.md", "docs/session.md", "docs/stores/redis.md"} <= names
    assert len(PROGRAMS) >= 20
    assert all(block.language in _PYTHON for block in ALL if "fragment" in block.words)


@pytest.mark.parametrize("block", PROGRAMS, ids=lambda block: block.name)
def test_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A python block of the docs, not marked as a fragment, runs as written and exits 0."""
    code = block.code
    for text, service, port in _SERVICES:
        if text in code:
            require(_listening(port), f"{block.name} needs {service}")
    if MEMCACHED in code:
        server: MemcachedServer = request.getfixturevalue("memcached")
        code = code.replace(MEMCACHED, f"127.0.0.1:{server.port}")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "SESSION_"))}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"


def _app_of(block: Block, folder: Path, name: str) -> Flask:
    """Import ``block`` as a module from a file in ``folder``, as ``flask --app`` would, and return its app."""
    path = folder / f"{name}.py"
    path.write_text(block.code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Flask finds the app's root (and so its instance folder) through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    app = module.app
    assert isinstance(app, Flask)
    return app


@pytest.fixture
def quickstart(tmp_path: Path) -> t.Iterator[Flask]:
    """The quick-start page's app, imported from the first python block of docs/quickstart.md."""
    block = next(b for b in PROGRAMS if b.page.name == "quickstart.md")
    app = _app_of(block, tmp_path, "quickstart_app")
    try:
        yield app
    finally:
        app.extensions["satchel"].store.close()
        sys.modules.pop("quickstart_app", None)


def test_quickstart_logs_in_and_out(quickstart: Flask, tmp_path: Path) -> None:
    """The quick-start app as the docs show it: a wrong password is refused, ada logs in, sees her page, logs out."""
    assert Path(quickstart.instance_path) == tmp_path / "instance"
    client = quickstart.test_client()
    front = client.get("/")
    assert front.status_code == 200
    assert '<form method="post" action="/login">' in front.text
    assert client.get_cookie("session") is None  # looking at the login form stores nothing

    wrong = client.post("/login", data={"name": "ada", "password": "guess"})
    assert wrong.status_code == 401
    assert "Wrong name or password" in wrong.text

    login = client.post("/login", data={"name": "ada", "password": "correct horse battery staple"})
    assert login.status_code == 302
    assert login.headers["Location"] == "/"
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert "Hello ada, visit 1 in this session." in client.get("/").text
    assert "Hello ada, visit 2 in this session." in client.get("/").text
    manager = quickstart.extensions["satchel"]
    assert [info.user for info in manager.sessions_of("ada")] == ["ada"]
    assert (tmp_path / "instance" / "flask_satchel.sqlite3").exists()

    logout = client.post("/logout")
    assert logout.status_code == 302
    assert client.get_cookie("session") is None
    assert '<form method="post" action="/login">' in client.get("/").text
    assert manager.sessions_of("ada") == []

    replay = quickstart.test_client()  # the cookie ada had, sent again after the logout
    replay.set_cookie("session", cookie.value)
    assert '<form method="post" action="/login">' in replay.get("/").text


def test_readme_example_logs_in_and_out(tmp_path: Path) -> None:
    """The README's example app: a visitor is a stranger, logs in, is greeted by name, logs out."""
    block = next(b for b in PROGRAMS if b.page.name == "README.md")
    app = _app_of(block, tmp_path, "readme_app")
    try:
        client = app.test_client()
        assert client.get("/").text == "Hello, stranger."
        assert client.post("/login", data={"name": "ada"}).status_code == 302
        assert client.get("/").text == "Hello, ada."
        assert client.post("/logout").status_code == 302
        assert client.get("/").text == "Hello, stranger."
        assert app.extensions["satchel"].count() == 0
    finally:
        app.extensions["satchel"].store.close()
        sys.modules.pop("readme_app", None)


def test_fragment_marker_is_seen(tmp_path: Path) -> None:
    """The fence parser reads info strings, indented fences and fragments as CommonMark and MyST do."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nprint(1)\n```\n\n1. step\n\n   ```python fragment\n   app.run()\n   ```\n\n"
        "````md\n```python\nnot a block of its own\n```\n````\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.language, b.fragment, b.code) for b in found] == [
        ("python", False, "print(1)\n"),
        ("python", True, "app.run()\n"),
        ("md", False, "```python\nnot a block of its own\n```\n"),
    ]
