"""flask_satchel.testing: its helpers import without pytest; the contract suites name the extra they need."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

from flask_satchel.interface import SatchelSessionInterface
from flask_satchel.testing import CountingStore, http_get, live_server, make_app

#: Run first in each subprocess: ``import pytest`` then raises ImportError, as where pytest is not installed.
WITHOUT_PYTEST = "import sys; sys.modules['pytest'] = sys.modules['_pytest'] = None\n"


def run_without_pytest(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_helpers_import_without_pytest() -> None:
    """`import flask_satchel.testing` works where pytest cannot be imported, and its helpers serve a session."""
    result = run_without_pytest(
        """
        import tempfile
        import flask_satchel.testing as testing
        app = testing.make_app({"SESSION_TYPE": "memory"}, tempfile.mkdtemp())
        with testing.live_server(app) as address:
            cookie = testing.http_get(address, "/set/a/1").cookie
            print(testing.http_get(address, "/get/a", cookie).body)
        """
    )
    assert (result.returncode, result.stdout.strip()) == (0, "'1'"), result.stderr


def test_contract_without_pytest_names_the_extra() -> None:
    """Importing the contract suites without pytest fails with an ImportError that names flask-satchel[testing]."""
    result = run_without_pytest("import flask_satchel.testing.contract\n")
    assert result.returncode == 1
    assert "ImportError" in result.stderr
    assert "pip install 'flask-satchel[testing]'" in result.stderr


def test_http_get_sees_overlapping_requests(tmp_path: Path) -> None:
    """live_server serves overlapping requests of one session; http_get reads status, body and the new cookie."""
    app = make_app({"SESSION_TYPE": "memory", "TEST_PAUSE": 0.1}, tmp_path)
    with live_server(app) as address:
        first = http_get(address, "/set/start/1")
        assert (first.status, first.body) == (200, "ok")
        assert first.cookie
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda i: http_get(address, f"/slow-add/{i}", first.cookie).status, range(4)))
        assert statuses == [200] * 4
        dump = http_get(address, "/dump", first.cookie)
    assert dump.body == repr(sorted([("start", "1"), *((f"k{i}", i) for i in range(4))]))
    assert dump.cookie is None  # an unchanged session sets no cookie


def test_counting_store_records_calls(tmp_path: Path) -> None:
    """CountingStore in place of the app's store lists each store call of a request; writes() leaves out reads."""
    app = make_app({"SESSION_TYPE": "memory"}, tmp_path)
    interface = t.cast(SatchelSessionInterface, app.session_interface)
    client = app.test_client()
    client.get("/set/a/1")
    counting = CountingStore(interface.store)
    interface.store = counting
    assert client.get("/get/a").text == "'1'"
    assert counting.calls == ["load"]
    assert counting.writes() == []
    client.get("/set/b/2")
    assert counting.calls[1:] == ["load", "apply"]
    assert counting.writes() == ["apply"]
