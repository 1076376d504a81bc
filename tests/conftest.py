"""Shared fixtures. Services are real; a test that cannot reach one is skipped
locally with the reason, and fails in CI (``CI=true``) so nothing is silently
skipped there."""

from __future__ import annotations

import importlib.util
import os
import sys
import typing as t
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"


def require(available: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a service a test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (a missing service fails under CI=true)")
    pytest.skip(reason)


@pytest.fixture
def need() -> t.Callable[[bool, str], None]:
    """``need(ok, reason)``: skip locally / fail in CI when a service is missing."""
    return require


@pytest.fixture(scope="session")
def demo() -> t.Any:
    """The demo app's module (examples/demo/app.py), imported by path: the demo is not a package."""
    if "satchel_demo" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "examples" / "demo" / "app.py"
        spec = importlib.util.spec_from_file_location("satchel_demo", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["satchel_demo"] = module
        spec.loader.exec_module(module)
    return sys.modules["satchel_demo"]
