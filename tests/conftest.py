"""Shared fixtures. Services are real; a test that cannot reach one is skipped
locally with the reason, and fails in CI (``CI=true``) so nothing is silently
skipped there."""

from __future__ import annotations

import os
import typing as t

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
