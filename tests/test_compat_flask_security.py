"""Flask-Security's own test-suite, run with its apps switched to Flask-Satchel.

Flask-Security keeps the login, its freshness, two-factor and unified sign-in
state, WebAuthn and OAuth state and the CSRF token in ``flask.session``; its
suite is the widest check there is that such an extension works unchanged.
The sdist of the installed version (pinned in the ``dev`` group) is fetched
at test time and cached (``tests/suites.py``), and its tests run in
subprocesses with ``tests/flask_suite/satchel_suite_plugin.py``, which calls
``Session(app)`` on every app they create once the test has configured it:
on the memory, SQLite and Redis stores, and once with Flask's own cookie
session as the baseline. Every store must give the same outcome for every
test id as the baseline.

What the runs leave out, and why, is in :data:`LEFT_OUT` and
:data:`VARIANTS_LEFT_OUT`: modules whose tests never open a request, and the
variants that repeat the tests on other datastores (whose packages, but for
plain SQLAlchemy's, are not in the ``dev`` group); the datastore never
touches ``flask.session``.

Two things the plugin does, as a user of both libraries would:

- ``SECURITY_CACHE_CONTROL = None`` asks for no ``Cache-Control`` header at
  all, but Flask-Satchel sends ``Cache-Control: no-store`` on responses that
  set or delete the session cookie unless the app chose a ``Cache-Control``
  itself. ``docs/flask-session-config.md`` tells Flask-Security users to set
  both ``SECURITY_CACHE_CONTROL = None`` and ``SESSION_NO_STORE = False``; the
  plugin sets the second wherever the app sets the first.
  :func:`test_no_cache_control_needs_session_no_store` shows the test that
  checks it fails without our half.
- A few tests read the session's contents out of the cookie, decoding Flask's
  signed JSON by hand (:data:`BY_DESIGN`). A server-side session's cookie
  holds only its id, so the plugin has those two helpers read the same session
  through the app's session interface, and
  :func:`test_by_design_differences_still_differ` proves that, unchanged,
  exactly these tests fail, and only because the cookie held no session.

The four runs take minutes, so the module is marked ``suite``: ``make test``
leaves it out, ``make test-suites`` (run by CI) runs it. The runs go in
parallel, one subprocess each.
"""

from __future__ import annotations

import ast
import concurrent.futures
import json
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import redis
from conftest import require
from suites import Result, fetch_sdist, outcomes, run_suite, table

pytestmark = [pytest.mark.suite, pytest.mark.timeout(1800)]

REDIS_URL = "redis://127.0.0.1:6379/0"

#: Store name to the config that selects it, given the run's unique Redis key prefix.
STORES: dict[str, t.Callable[[str], dict[str, t.Any]]] = {
    "memory": lambda prefix: {"SESSION_TYPE": "memory"},
    "sqlite": lambda prefix: {"SESSION_TYPE": "sqlite"},  # a database in each app's instance folder
    "redis": lambda prefix: {"SESSION_TYPE": "redis", "SESSION_URL": REDIS_URL, "SESSION_KEY_PREFIX": prefix},
}

#: Modules left out: none of their tests opens a request, so none can touch a session.
LEFT_OUT = {
    "tests/test_hashing.py": "password hashing, in an app context",
    "tests/test_cli.py": "the users and roles CLI commands",
    "tests/test_datastore.py": "datastore methods, in an app context",
    "tests/test_entities.py": "the model mixins",
    "tests/test_phone_util.py": "phone number parsing",
}

#: Parametrised variants left out (``clients`` fixture ids): the same tests again on another datastore.
VARIANTS_LEFT_OUT = {
    "cl-mongo": "MongoEngine datastore: needs mongoengine and mongomock, not in the dev group",
    "cl-peewee": "Peewee datastore: needs peewee, not in the dev group",
    "cl-fsqlalite": "Flask-SQLAlchemy-Lite datastore: needs flask-sqlalchemy-lite, not in the dev group",
    "cl-sqla-session": "plain SQLAlchemy datastore: the cl-fsqlalchemy tests again, on the same Flask sessions",
}

#: The suite's helpers that decode Flask's session cookie (``tests/test_utils.py``).
COOKIE_READERS = {"get_session", "get_existing_session"}

_READS_COOKIE = (
    "reads the session's contents out of the cookie (Flask's signed JSON, decoded by tests/test_utils.py);"
    " a server-side session's cookie holds only the session id"
)

#: Tests that fail unchanged on Flask-Satchel, and why; the plugin's store readers make them pass.
BY_DESIGN = {
    test_id: _READS_COOKIE
    for test_id in [
        "tests/test_basic.py::test_remember_fresh",
        "tests/test_changeable.py::test_change_invalidates_session",
        "tests/test_csrf.py::test_login_csrf_json",
        "tests/test_oauthglue.py::test_simple_next",
        "tests/test_oauthglue.py::test_verify",
        "tests/test_oauthglue.py::test_verify_unknown_user",
        "tests/test_oauthglue.py::test_verify_evil_user",
        "tests/test_tf_plugin.py::test_tf_select",
        "tests/test_tf_plugin.py::test_tf_select_json",
        "tests/test_two_factor.py::test_two_factor_flag[cl-fsqlalchemy]",
        "tests/test_two_factor.py::test_setup_bad_phone",
        "tests/test_two_factor.py::test_json",
        "tests/test_two_factor.py::test_evil_validate",
        "tests/test_two_factor.py::test_opt_in",
        "tests/test_two_factor.py::test_opt_in_state_token",
        "tests/test_two_factor.py::test_opt_out_json",
        "tests/test_two_factor.py::test_admin_setup_reset",
        "tests/test_two_factor.py::test_datastore[cl-fsqlalchemy]",
        "tests/test_two_factor.py::test_totp_secret_generation",
        "tests/test_two_factor.py::test_csrf_2fa_login_cookie",
        "tests/test_unified_signin.py::test_csrf_2fa_us_cookie",
        "tests/test_webauthn.py::test_tf_validity_window",
    ]
}

#: Tests that must be in the run and pass everywhere; if Flask-Security renames them, revisit the selection.
CORE = {
    "tests/test_basic.py::test_logout",
    "tests/test_basic.py::test_has_session_access",
    "tests/test_basic.py::test_multi_auth_session",
    "tests/test_basic.py::test_session_loads_identity",
    "tests/test_basic.py::test_remember_token",
    "tests/test_basic.py::test_no_cache_control",
    "tests/test_basic.py::test_cache_control_not_on_app_endpoints",
    "tests/test_changeable.py::test_change_invalidates_session",
    "tests/test_two_factor.py::test_two_factor_flag[cl-fsqlalchemy]",
    "tests/test_unified_signin.py::test_csrf_2fa_us_cookie",
    "tests/test_webauthn.py::test_tf_validity_window",
    "tests/test_oauthglue.py::test_verify",
}

NO_CACHE_CONTROL = "tests/test_basic.py::test_no_cache_control"

#: Deselects the variants left out, from whatever is run.
VARIANTS = ["-k", " and ".join(f"not {variant}" for variant in VARIANTS_LEFT_OUT)]
SELECTION = ["tests", *(arg for module in LEFT_OUT for arg in ("--ignore", module)), *VARIANTS]


class Run(t.NamedTuple):
    """One subprocess run of the suite: the plugin's config, the cookie readers' mode, what to run."""

    config: dict[str, t.Any]
    readers: str
    args: list[str]


def _reader_tests(tree: Path) -> list[str]:
    """Every test function of the suite that calls one of :data:`COOKIE_READERS`, as ``path::name``."""
    found = []
    for path in sorted((tree / "tests").glob("test_*.py")):
        if str(path.relative_to(tree)) in LEFT_OUT:
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            names = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if names & COOKIE_READERS:
                found.append(f"{path.relative_to(tree)}::{node.name}")
    return found


def _redis_up() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


class Suite(t.NamedTuple):
    """The results of every run, by run name; a run whose service is missing is absent."""

    results: dict[str, dict[str, Result]]
    output: dict[str, str]
    #: How long each run took, in parallel with the others.
    seconds: dict[str, float]
    #: Keys the Redis run left under its prefix, before they were removed.
    redis_keys: int


@pytest.fixture(scope="module")
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Suite:
    """Flask-Security's suite on the baseline and each store, plus the by-design checks, run in parallel."""
    tree = fetch_sdist("flask-security", request.config, tmp_path_factory, marker="tests/conftest.py")
    prefix = f"satchel-suite-{uuid.uuid4().hex}:"
    runs = {"flask": Run({}, "", SELECTION)}
    for store, config in STORES.items():
        if store != "redis" or _redis_up():
            runs[store] = Run(config(prefix), "store", SELECTION)
    # Unchanged, on Flask-Satchel: the tests that read the cookie, and the cache-control test without our half.
    runs["unchanged"] = Run(STORES["memory"](prefix), "spy", [*_reader_tests(tree), *VARIANTS])
    runs["no-store"] = Run({**STORES["memory"](prefix), "SESSION_NO_STORE": True}, "store", [NO_CACHE_CONTROL])

    # Made here, not in the threads: the factory creates its base folder on first use, and two at once race.
    tmps = {name: tmp_path_factory.mktemp(f"flask-security-{name}") for name in runs}

    def run(name: str, spec: Run) -> tuple[dict[str, Result], str, float]:
        tmp = tmps[name]
        (tmp / "apps").mkdir()
        env = {
            "SATCHEL_SUITE_CONFIG": json.dumps(spec.config),  # {} is the baseline
            "SATCHEL_SUITE_TMP": str(tmp / "apps"),
            "SATCHEL_SUITE_COOKIE_READERS": spec.readers,
        }
        started = time.monotonic()
        results, output = run_suite(tree, "satchel_suite_plugin", env, spec.args, tmp, timeout=1500)
        return results, output, time.monotonic() - started

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(runs)) as pool:
            futures = {name: pool.submit(run, name, spec) for name, spec in runs.items()}
            done = {name: future.result() for name, future in futures.items()}
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000)) if "redis" in runs else []
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    return Suite(
        {name: r for name, (r, _, _) in done.items()},
        {name: output for name, (_, output, _) in done.items()},
        {name: seconds for name, (_, _, seconds) in done.items()},
        len(keys),
    )


def test_baseline_ran(suite: Suite) -> None:
    """Flask-Security's suite runs on Flask's cookie session, with every core session test passing."""
    baseline = suite.results["flask"]
    print(f"Flask-Security's tests on Flask's cookie session:\n{table(baseline)}")
    print("runs, in parallel:", ", ".join(f"{name} {seconds:.0f} s" for name, seconds in suite.seconds.items()))
    missing = sorted(i for i in CORE | BY_DESIGN.keys() if i not in baseline or baseline[i].outcome != "passed")
    assert not missing, f"not passing on the baseline: {missing}\n{suite.output['flask'][-6000:]}"
    assert not any(r.satchel_apps for r in baseline.values())
    assert sum(r.outcome == "passed" for r in baseline.values()) > 500, suite.output["flask"][-6000:]


@pytest.mark.parametrize("store", list(STORES))
def test_flask_security_suite(suite: Suite, store: str) -> None:
    """Every Flask-Security test has the same outcome on this store as on Flask's cookie session."""
    require(store in suite.results, f"Redis is not reachable at {REDIS_URL}")
    results, baseline = suite.results[store], suite.results["flask"]
    print(f"Flask-Security's tests on Flask-Satchel ({store}):\n{table(results)}")
    ours, theirs = outcomes(results), outcomes(baseline)
    differ = {i: (theirs.get(i), ours.get(i)) for i in ours.keys() | theirs.keys() if ours.get(i) != theirs.get(i)}
    detail = table({i: results[i] for i in differ if i in results})
    assert not differ, f"(cookie session, {store}) outcomes differ: {differ}\n{detail}\n{suite.output[store][-6000:]}"
    assert all(results[i].outcome == "passed" for i in CORE)
    # Each app that opened a request ran on Flask-Satchel, not on Flask's cookie session.
    untouched = sorted(i for i, r in results.items() if r.satchel_apps != r.request_apps)
    assert not untouched, f"apps left on Flask's session in {untouched}"
    assert sum(r.satchel_apps for r in results.values()) > 500
    # The suite's cookie readers were served from the store, where the by-design tests read them.
    assert all(results[i].cookie_reads for i in BY_DESIGN)
    if store == "redis":
        print(f"{suite.redis_keys} keys were left under the run's Redis prefix, and removed")
        assert suite.redis_keys > 0, "the Redis run left no session under its prefix: it did not use Redis"


def test_by_design_differences_still_differ(suite: Suite) -> None:
    """Unchanged, exactly the listed tests fail on Flask-Satchel, each because the cookie held no session."""
    results = suite.results["unchanged"]
    print(f"Flask-Security's cookie-reading tests, unchanged, on Flask-Satchel:\n{table(results)}")
    failing = {i for i, r in results.items() if r.outcome == "failed"}
    assert failing == BY_DESIGN.keys(), (
        f"fail but not listed: {sorted(failing - BY_DESIGN.keys())}; "
        f"listed but pass: {sorted(BY_DESIGN.keys() - failing)}\n{suite.output['unchanged'][-6000:]}"
    )
    # The spy counted the suite's own readers finding no session in the cookie.
    assert all(results[i].cookie_reads for i in BY_DESIGN)


def test_no_cache_control_needs_session_no_store(suite: Suite) -> None:
    """With only SECURITY_CACHE_CONTROL = None, our Cache-Control: no-store is still sent and the test fails."""
    results = suite.results["no-store"]
    assert [(i, r.outcome) for i, r in results.items()] == [(NO_CACHE_CONTROL, "failed")], suite.output["no-store"]
    assert "Cache-Control" in results[NO_CACHE_CONTROL].message
