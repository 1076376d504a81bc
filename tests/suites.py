"""Running another project's own test-suite against Flask-Satchel.

We may not copy other projects' tests into this repository, so they are
fetched at test time: the sdist of the installed version, from PyPI, cached
under ``.pytest_cache`` so it is downloaded once. They run in a subprocess
pytest with one of the plugins in ``tests/flask_suite/``, which installs
Flask-Satchel on the apps they create, and report through junit XML, read
back here into one :class:`Result` per test id.

Shared by ``test_compat_flask.py`` (Flask's own session tests) and the
third-party suites (``test_compat_flask_login.py``,
``test_compat_flask_security.py``).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import typing as t
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import require

#: Where the plugins live; put on the subprocess's ``PYTHONPATH``.
PLUGIN_DIR = Path(__file__).parent / "flask_suite"

#: The source distribution only: the projects' tests are not in their wheels.
PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--timeout", "20", "-q"]


def _cache_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("flask-sdist"))
    return tmp_path_factory.mktemp("flask-sdist")


def fetch_sdist(
    distribution: str, config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, *, marker: str
) -> Path:
    """The source tree of the installed version of ``distribution``, downloaded once and cached.

    ``marker`` is a file the tree must hold (the suite's conftest, say): a
    cached tree without it is fetched again.
    """
    version = importlib.metadata.version(distribution)
    cache = _cache_dir(config, tmp_path_factory)
    tree = cache / f"{distribution.lower()}-{version}"
    if (tree / marker).is_file():
        return tree
    download = Path(tempfile.mkdtemp(dir=cache))
    try:
        try:
            fetched = subprocess.run(
                [*PIP_DOWNLOAD, f"{distribution}=={version}", "-d", str(download)],
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            fetched = None
        archives = sorted(download.glob("*.tar.gz"))
        detail = fetched.stderr.strip()[-500:] if fetched is not None else "timed out"
        require(fetched is not None and fetched.returncode == 0 and bool(archives), f"PyPI unreachable: {detail}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(download, filter="data")
        # The archive holds one folder, whatever its spelling (Flask-Login-0.6.3, flask_security-5.9.2).
        (extracted,) = (p for p in download.iterdir() if p.is_dir())
        # Renamed into place only when complete, so an interrupted run never leaves half a tree.
        try:
            extracted.rename(tree)
        except OSError:
            if not tree.is_dir():  # else a parallel run put it there first
                raise
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return tree


class Result(t.NamedTuple):
    """How one test of the other suite ended, as its junit report says."""

    outcome: str  # passed, failed, error, skipped
    message: str
    #: Apps the test ran on Flask-Satchel (the plugin counts them).
    satchel_apps: int
    #: Apps the test opened a request on, whatever their session (counted by plugins that can tell).
    request_apps: int
    #: Session reads of the suite's cookie-decoding helpers the plugin served or saw come back empty.
    cookie_reads: int


def _test_id(tree: Path, classname: str, name: str) -> str:
    """pytest's id back from junit's ``classname``: ``tests.test_basic`` or ``tests.test_login.LoginTestCase``."""
    parts = classname.split(".")
    # The longest prefix that is a module in the tree; the rest are classes.
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (tree / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return "::".join([*parts, name])


def run_suite(
    tree: Path, plugin: str, env: dict[str, str], args: list[str], tmp_path: Path, *, timeout: float = 300
) -> tuple[dict[str, Result], str]:
    """Run pytest in ``tree`` with ``plugin`` loaded and ``env`` added; results by test id, and the output."""
    report = tmp_path / "junit.xml"
    full_env = dict(os.environ)
    full_env.pop("PYTEST_ADDOPTS", None)
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-p", plugin, "-o", f"cache_dir={tmp_path / 'cache'}"]
    command += ["-q", "--no-header", "-o", "junit_family=xunit2", f"--junitxml={report}"]
    command += [f"--basetemp={tmp_path / 'basetemp'}", *args]
    done = subprocess.run(command, cwd=tree, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert report.is_file(), f"the suite in {tree.name} did not run:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    results: dict[str, Result] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = _test_id(tree, case.get("classname", ""), case.get("name", ""))
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = node.get("message", "")
                break
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        counts = [int(props.get(name) or 0) for name in ("satchel_apps", "request_apps", "cookie_reads")]
        results[test_id] = Result(outcome, message, *counts)
    return results, done.stdout


def table(results: t.Mapping[str, Result]) -> str:
    """One line per test: outcome, id, apps it ran on Flask-Satchel, first line of any failure."""
    return "\n".join(
        f"  {r.outcome:7} {test_id} [satchel apps: {r.satchel_apps}] {(r.message.splitlines() or [''])[0][:100]}"
        for test_id, r in sorted(results.items())
    )


def outcomes(results: t.Mapping[str, Result]) -> dict[str, str]:
    """Test id to outcome: what two runs of a suite are compared on."""
    return {test_id: r.outcome for test_id, r in results.items()}
