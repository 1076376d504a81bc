"""Flask's own session, flash and session_transaction tests, run unchanged on Flask-Satchel.

We may not copy Flask's tests into this repository, so they are fetched at
test time: the sdist of the installed Flask version, from PyPI, cached under
``.pytest_cache`` so it is downloaded once (``tests/suites.py``). They run in
a subprocess pytest with ``tests/flask_suite/satchel_flask_plugin.py``, which
installs Flask-Satchel on every app they create, once per embedded store.

A few of Flask's tests check behaviour that our contract changes on purpose;
they are deselected in :data:`BY_DESIGN`, each with its reason.
:func:`test_by_design_differences_still_differ` proves every one of them
really fails, at the expected assertion, so the list cannot go stale and hide
a bug; where a setting turns the difference off, the test is shown to pass
unchanged with it.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from suites import Result, fetch_sdist, run_suite, table

#: The Flask test modules that hold session, flash and session_transaction tests.
MODULES = [
    "tests/test_basic.py",
    "tests/test_testing.py",
    "tests/test_reqctx.py",
    "tests/test_session_interface.py",
    "tests/test_helpers.py",
    "tests/test_signals.py",
    "tests/test_templating.py",
    "tests/test_converters.py",
    "tests/test_config.py",
]

#: Selected by name: everything about sessions and flashes, plus the tests
#: that use the session from a template, a URL converter and a copied
#: request context (greenlets).
KEYWORDS = "session or flash or greenlet or test_standard_context or test_context_available"


class Difference(t.NamedTuple):
    """Why a Flask test fails on Flask-Satchel by design, and how to see it is only that."""

    #: The contract that differs from Flask's cookie session (DESIGN.md).
    reason: str
    #: Part of the failure message under our defaults: the test fails *there*, not elsewhere.
    failure: str
    #: Config that turns the difference off, under which the test passes unchanged; None if none does.
    knob: dict[str, t.Any] | None = None


#: Flask tests deselected because our contract differs from Flask's on purpose.
BY_DESIGN = {
    "tests/test_basic.py::test_session_using_samesite_attribute": Difference(
        "SESSION_COOKIE_SAMESITE left at None sends SameSite=Lax (an explicit value wins)",
        "assert 'samesite' not in",
    ),
    "tests/test_basic.py::test_missing_session": Difference(
        "a server-side session does not need SECRET_KEY unless SESSION_USE_SIGNER signs the id",
        "DID NOT RAISE",
    ),
    "tests/test_testing.py::test_session_transactions_no_null_sessions": Difference(
        "same: without SECRET_KEY the session still opens, so there is no null session",
        "DID NOT RAISE",
    ),
    "tests/test_basic.py::test_session_secret_key_fallbacks": Difference(
        "an unsigned session id does not depend on SECRET_KEY, so changing the key keeps the session",
        "assert {'a': 1} == {}",
    ),
    "tests/test_basic.py::test_session_cookie_setting": Difference(
        "the cookie and TTL are refreshed once per SESSION_REFRESH_INTERVAL, not on every request",
        "assert (None is not None) == True",
        {"SESSION_REFRESH_INTERVAL": 0},
    ),
    "tests/test_basic.py::test_session_refresh_vary": Difference(
        "a request that never touches the session sends neither Set-Cookie nor Vary: Cookie,"
        " even for a permanent session (Flask refreshes its cookie on every request)",
        "BadRequestKeyError",  # the response has no Vary header at all
    ),
}

#: Tests whose app class brings its own session interface: the plugin leaves them alone.
OWN_INTERFACE = {
    "tests/test_reqctx.py::test_session_error_pops_context",
    "tests/test_reqctx.py::test_session_dynamic_cookie_name",
}

#: Tests that must be in the run; if Flask renames them, selection must be revisited.
CORE = {
    "tests/test_basic.py::test_session_accessed",
    "tests/test_basic.py::test_session_using_session_settings",
    "tests/test_basic.py::test_session_stored_last",
    "tests/test_basic.py::test_session_special_types",
    "tests/test_basic.py::test_session_vary_cookie",
    "tests/test_basic.py::test_flashes",
    "tests/test_basic.py::test_extended_flashing",
    "tests/test_testing.py::test_redirect_session",
    "tests/test_testing.py::test_session_transactions",
    "tests/test_testing.py::test_session_transactions_keep_context",
    "tests/test_signals.py::test_flash_signal",
}

STORES = ["memory", "sqlite", "filesystem"]


@pytest.fixture(scope="module")
def flask_tests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flask's source tree, of the installed version, downloaded once and cached."""
    return fetch_sdist("flask", request.config, tmp_path_factory, marker="tests/conftest.py")


def run_flask_tests(
    tree: Path, store: str, tmp_path: Path, extra: list[str], config: dict[str, t.Any] | None = None
) -> tuple[dict[str, Result], str]:
    """Run Flask's tests in a subprocess with Flask-Satchel on ``store``; results by test id."""
    apps = tmp_path / "apps"
    apps.mkdir()
    env = {
        "SATCHEL_FLASK_TYPE": store,
        "SATCHEL_FLASK_TMP": str(apps),
        "SATCHEL_FLASK_CONFIG": json.dumps(config or {}),
    }
    return run_suite(tree, "satchel_flask_plugin", env, extra, tmp_path)


@pytest.mark.parametrize("store", STORES)
def test_flask_session_suite(flask_tests: Path, store: str, tmp_path: Path) -> None:
    """Flask's own session, flash and session_transaction tests pass unchanged on this store."""
    deselect = [arg for test_id in BY_DESIGN for arg in ("--deselect", test_id)]
    results, output = run_flask_tests(flask_tests, store, tmp_path, [*MODULES, "-k", KEYWORDS, *deselect])
    print(f"Flask's tests on Flask-Satchel ({store}):\n{table(results)}")
    assert results, output
    assert results.keys() >= CORE, f"missing from the run: {sorted(CORE - results.keys())}"
    assert not BY_DESIGN.keys() & results.keys()
    bad = {test_id: r for test_id, r in results.items() if r.outcome != "passed"}
    assert not bad, f"Flask tests failing on {store}:\n{table(bad)}\n\n{output[-6000:]}"
    # Each test ran on Flask-Satchel, not on Flask's cookie session.
    untouched = sorted(i for i, r in results.items() if r.satchel_apps == 0 and i not in OWN_INTERFACE)
    assert not untouched, f"no app got Flask-Satchel in {untouched}"


def test_by_design_differences_still_differ(flask_tests: Path, tmp_path: Path) -> None:
    """Every Flask test deselected by design fails on Flask-Satchel, where expected, so the list stays exact."""
    results, output = run_flask_tests(flask_tests, "memory", tmp_path, list(BY_DESIGN))
    print(f"Flask's tests that differ by design:\n{table(results)}")
    assert results.keys() == BY_DESIGN.keys(), output
    passing = sorted(test_id for test_id, r in results.items() if r.outcome != "failed")
    assert not passing, f"these now pass; take them out of BY_DESIGN: {passing}"
    elsewhere = {i: r.message for i, r in results.items() if BY_DESIGN[i].failure not in r.message}
    assert not elsewhere, f"these fail for another reason than the one given: {elsewhere}"


@pytest.mark.parametrize("test_id", [i for i, d in BY_DESIGN.items() if d.knob is not None])
def test_by_design_differences_are_only_the_setting(flask_tests: Path, tmp_path: Path, test_id: str) -> None:
    """A Flask test that differs by a default passes unchanged once that setting is turned."""
    knob = BY_DESIGN[test_id].knob
    results, output = run_flask_tests(flask_tests, "sqlite", tmp_path, [test_id], config=knob)
    assert [(i, r.outcome) for i, r in results.items()] == [(test_id, "passed")], output
