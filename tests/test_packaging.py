"""What a release would ship: the public names, the sdist and the wheel, and the wheel installed on its own.

The build and the checks of what the two archives hold run with every
``make test``. Installing the wheel with its extras into a clean venv
downloads a dozen packages and takes the better part of a minute, so it runs
under ``make test-packaging`` (which CI runs after ``make test``), and is
skipped otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
import tarfile
import typing as t
import zipfile
from pathlib import Path

import pytest

import flask_satchel
from flask_satchel import errors

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "flask_satchel"
#: Set by ``make test-packaging``: install the wheel into a clean venv from PyPI.
INSTALL = os.environ.get("SATCHEL_TEST_PACKAGING") == "1"


def _pyproject() -> dict[str, t.Any]:
    if sys.version_info >= (3, 11):  # an if, not an assert: mypy then skips the block when it checks for 3.10
        import tomllib

        return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    raise ModuleNotFoundError("reading pyproject.toml takes tomllib, new in Python 3.11")


def _modules() -> set[str]:
    """Every module of the source tree, as a dotted name."""
    names = set()
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# The public names ----------------------------------------------------------------------------


def test_all_names_every_public_name() -> None:
    """__all__ lists what the package exports, each importable, and every exception Flask-Satchel raises."""
    assert sorted(flask_satchel.__all__) == sorted(set(flask_satchel.__all__))
    for name in flask_satchel.__all__:
        assert getattr(flask_satchel, name) is not None, name
    raised = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.SatchelError) and value.__module__ == errors.__name__
    }
    assert raised == {
        "SatchelError",
        "ConfigError",
        "NotSupported",
        "StoreUnavailable",
        "SessionLocked",
        "TooManySessions",
        "SessionTooLarge",
        "SerializationError",
    }
    assert raised <= set(flask_satchel.__all__)
    assert {"Session", "ServerSession", "SessionManager", "SessionInfo", "Stats", "current_session"} <= set(
        flask_satchel.__all__
    )
    namespace: dict[str, t.Any] = {}
    exec("from flask_satchel import *", namespace)
    assert set(flask_satchel.__all__) <= set(namespace)


def test_version_is_the_package_metadata() -> None:
    """__version__ is the installed distribution's version, which is pyproject's."""
    assert flask_satchel.__version__ == importlib.metadata.version("Flask-Satchel")
    assert flask_satchel.__version__ == _pyproject()["project"]["version"]


# The sdist and the wheel ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build``: the sdist, and the wheel built from it (as a package index would see them)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: dict[str, Path]) -> None:
    """python -m build makes both archives, named by the version, and twine check --strict passes them."""
    version = _pyproject()["project"]["version"]
    assert dist["sdist"].name == f"flask_satchel-{version}.tar.gz"
    assert dist["wheel"].name == f"flask_satchel-{version}-py3-none-any.whl"
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_wheel_holds_the_package_and_py_typed_and_no_tests(dist: dict[str, Path]) -> None:
    """The wheel holds every module and py.typed, and no tests, caches or stray files."""
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in wheel.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    assert "flask_satchel/py.typed" in names
    packaged = {n[: -len(".py")].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")}
    assert packaged == _modules()
    assert [n for n in names if not (n.startswith("flask_satchel/") or ".dist-info/" in n)] == []
    assert [n for n in names if "test" in n.split("/")[0] or "/tests/" in n or "__pycache__" in n] == []
    assert [n for n in names if n.endswith((".pyc", ".orig", ".rej", "~"))] == []
    assert "Requires-Dist: flask>=3.0" in requires
    assert "Requires-Dist: msgspec>=0.18" in requires


def test_sdist_holds_the_source_and_its_metadata(dist: dict[str, Path]) -> None:
    """The sdist holds pyproject.toml, the README, the licence and the whole package, py.typed included."""
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "src/flask_satchel/py.typed"} <= names
    shipped = {
        n[len("src/") : -len(".py")].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py")
    }
    assert shipped == _modules()


# The wheel on its own ------------------------------------------------------------------------

#: Run in the clean venv: import every module the wheel installed (each store as
#: ``stores.STORES`` names it), then serve one request with a session.
_CHECK = """
import importlib, json, pkgutil, sys, tempfile
import flask_satchel
from flask_satchel import stores

classes = {}
for kind, spec in stores.STORES.items():
    module, _, name = spec.partition(":")
    classes[kind] = getattr(importlib.import_module(f"{stores.__name__}.{module}"), name).__name__
modules = [flask_satchel.__name__]
for info in pkgutil.walk_packages(flask_satchel.__path__, flask_satchel.__name__ + "."):
    importlib.import_module(info.name)
    modules.append(info.name)

from flask import Flask
app = Flask("wheel_check", instance_path=tempfile.mkdtemp())
app.secret_key = "wheel-check"
flask_satchel.Session(app)

@app.get("/")
def index():
    flask_satchel.current_session["n"] = flask_satchel.current_session.get("n", 0) + 1
    return str(flask_satchel.current_session["n"])

client = app.test_client()
counts = [client.get("/").text for _ in range(2)]
print(json.dumps({
    "file": flask_satchel.__file__,
    "prefix": sys.prefix,
    "version": flask_satchel.__version__,
    "stores": classes,
    "modules": modules,
    "counts": counts,
}))
"""


@pytest.mark.skipif(not INSTALL, reason="installs from PyPI into a clean venv: make test-packaging (CI) runs it")
@pytest.mark.timeout(900)
def test_wheel_installs_into_a_clean_venv_and_every_module_imports(dist: dict[str, Path], tmp_path: Path) -> None:
    """pip install <wheel>[all,testing] in a venv of its own: every store and module imports, and a session works."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{dist['wheel']}[all,testing]",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    # Run from the venv's folder, not the checkout, so that only the installed wheel can be imported.
    run = subprocess.run(
        [str(python), "-c", _CHECK], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["file"]).is_relative_to(venv)
    assert Path(found["prefix"]) == venv
    assert found["version"] == _pyproject()["project"]["version"]
    from flask_satchel.stores import STORES

    assert found["stores"] == {kind: spec.partition(":")[2] for kind, spec in STORES.items()}
    assert set(found["modules"]) == _modules()
    assert found["counts"] == ["1", "2"]
