"""The demo (examples/demo) in a real browser: headless Chromium over a real socket."""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_satchel.testing import live_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
#: Debian's Chromium, quiet and offline: Playwright's own browser download does not work here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def base_url(tmp_path: Path, demo: t.Any) -> t.Iterator[str]:
    app: Flask = demo.create_app({"TESTING": True, "SESSION_URL": f"sqlite:///{tmp_path}/sessions.sqlite3"})
    try:
        with live_server(app) as (host, port):
            yield f"http://{host}:{port}"
    finally:
        app.extensions["satchel"].store.close()


@pytest.fixture
def page(need: t.Callable[[bool, str], None]) -> t.Iterator[t.Any]:
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def test_login_cart_sessions_logout(base_url: str, page: t.Any) -> None:
    """A visitor logs in, fills and edits the cart, sees their session, and logs out again."""
    from playwright.sync_api import expect

    page.goto(base_url + "/")
    page.get_by_role("link", name="Log in").first.click()
    page.get_by_label("Name").fill("Ada")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Logged in as Ada")

    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["session"]["httpOnly"] is True
    assert cookies["session"]["sameSite"] == "Lax"

    page.get_by_role("link", name="Cart", exact=True).click()
    for item in ("apples", "pears"):
        page.get_by_label("Item").fill(item)
        page.get_by_role("button", name="Add to cart").click()
    expect(page.locator("ul.cart li span")).to_have_text(["apples", "pears"])
    page.get_by_role("button", name="Remove apples").click()
    expect(page.locator("ul.cart li span")).to_have_text(["pears"])

    page.get_by_role("link", name="Your sessions").click()
    expect(page.locator("h1")).to_have_text("Your sessions")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tr.current .badge")).to_have_text("this session")

    page.locator("main").get_by_role("button", name="Log out").click()
    expect(page.locator("h1")).to_have_text("You are not logged in")
    expect(page.locator("main").get_by_role("link", name="Log in")).to_be_visible()
    assert "session" not in {cookie["name"] for cookie in page.context.cookies()}
