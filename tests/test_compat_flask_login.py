"""Flask-Login's own test-suite, run with its apps switched to Flask-Satchel.

Flask-Login keeps the logged-in user, the fresh flag, session protection's
identifier and the remember-me instructions in ``flask.session``. The sdist of
the installed version (pinned in the ``dev`` group) is fetched at test time
and cached (``tests/suites.py``); its tests run in a subprocess with
``tests/flask_suite/satchel_suite_plugin.py``, which calls ``Session(app)`` on
every app they create once the test has configured it, on the cookie store
and the memory and SQLite stores, and once with Flask's own cookie session as
the baseline. Every store must give the same outcome for every test id.

Several of Flask-Login's apps have no ``SECRET_KEY`` and never write a
session: Flask-Satchel reads the secret per request, as Flask does, and
without one behaves like Flask's null session, so those tests pass on the
cookie store too.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from suites import Result, fetch_sdist, outcomes, run_suite, table

#: Store name to the config that selects it.
STORES: dict[str, dict[str, t.Any]] = {
    "cookie": {"SESSION_TYPE": "cookie"},
    "memory": {"SESSION_TYPE": "memory"},
    "sqlite": {"SESSION_TYPE": "sqlite"},  # a database in each app's instance folder
}

#: Tests that must be in the run and pass everywhere; if Flask-Login renames them, revisit the selection.
CORE = {
    "tests/test_login.py::LoginTestCase::test_login_user",
    "tests/test_login.py::LoginTestCase::test_logout_logs_out_current_user",
    "tests/test_login.py::LoginTestCase::test_remember_me",
    "tests/test_login.py::LoginTestCase::test_session_protection_strong_deletes_session",
    "tests/test_login.py::LoginTestCase::test_session_protection_basic_marks_session_unfresh",
    "tests/test_login.py::LoginTestCase::test_login_user_with_request",
}


@pytest.fixture(scope="module")
def flask_login_tests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flask-Login's source tree, of the installed version, downloaded once and cached."""
    return fetch_sdist("flask-login", request.config, tmp_path_factory, marker="tests/test_login.py")


def run_flask_login_tests(tree: Path, config: dict[str, t.Any], tmp_path: Path) -> tuple[dict[str, Result], str]:
    """Run Flask-Login's tests in a subprocess, its apps on ``config`` (``{}``: Flask's cookie session)."""
    (tmp_path / "apps").mkdir()
    env = {"SATCHEL_SUITE_CONFIG": json.dumps(config), "SATCHEL_SUITE_TMP": str(tmp_path / "apps")}
    return run_suite(tree, "satchel_suite_plugin", env, ["tests"], tmp_path)


@pytest.fixture(scope="module")
def baseline(flask_login_tests: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Flask-Login's results on Flask's own cookie session."""
    results, output = run_flask_login_tests(flask_login_tests, {}, tmp_path_factory.mktemp("flask-login-baseline"))
    print(f"Flask-Login's tests on Flask's cookie session:\n{table(results)}")
    missing = sorted(i for i in CORE if i not in results or results[i].outcome != "passed")
    assert not missing, f"not passing on the baseline: {missing}\n{output[-6000:]}"
    assert not any(r.satchel_apps for r in results.values())
    return results


@pytest.mark.parametrize("store", list(STORES))
def test_flask_login_suite(flask_login_tests: Path, baseline: dict[str, Result], store: str, tmp_path: Path) -> None:
    """Every Flask-Login test has the same outcome on this store as on Flask's cookie session."""
    results, output = run_flask_login_tests(flask_login_tests, STORES[store], tmp_path)
    print(f"Flask-Login's tests on Flask-Satchel ({store}):\n{table(results)}")
    ours, theirs = outcomes(results), outcomes(baseline)
    differ = {i: (theirs.get(i), ours.get(i)) for i in ours.keys() | theirs.keys() if ours.get(i) != theirs.get(i)}
    detail = table({i: results[i] for i in differ if i in results})
    assert not differ, f"(cookie session, {store}) outcomes differ: {differ}\n{detail}\n{output[-6000:]}"
    assert all(results[i].outcome == "passed" for i in CORE)
    # Each app that opened a request ran on Flask-Satchel, not on Flask's cookie session.
    untouched = sorted(i for i, r in results.items() if r.satchel_apps != r.request_apps)
    assert not untouched, f"apps left on Flask's session in {untouched}"
    assert sum(r.satchel_apps for r in results.values()) > 50
