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
def browser(need: t.Callable[[bool, str], None]) -> t.Iterator[t.Any]:
    """Headless Chromium; each ``browser.new_context()`` is a separate device, with its own cookies."""
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: t.Any) -> t.Iterator[t.Any]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


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


def test_revoked_device_is_told_and_its_stale_form_gets_a_page(base_url: str, browser: t.Any) -> None:
    """A device logged out from another one says so on its next page, and its stale form gets the demo's page."""
    from playwright.sync_api import expect

    laptop, phone = (browser.new_context().new_page() for _ in range(2))
    for page in (laptop, phone):
        page.goto(base_url + "/login")
        page.get_by_label("Name").fill("Ada")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("h1")).to_have_text("Logged in as Ada")
    phone.get_by_role("link", name="Cart", exact=True).click()

    laptop.get_by_role("link", name="Your sessions").click()
    expect(laptop.locator("tbody tr")).to_have_count(2)
    laptop.get_by_role("button", name="Log out all other sessions").click()
    expect(laptop.locator(".flash").first).to_have_text("Logged out 1 other session.")

    # The phone still shows the cart page of its ended session: its form is stale.
    phone.get_by_label("Item").fill("pears")
    phone.get_by_role("button", name="Add to cart").click()
    expect(phone.locator("h1")).to_have_text("This form has expired")
    expect(phone.locator(".flash.signed-out")).to_have_text("You were signed out from another device.")
    assert phone.locator("link[rel=stylesheet]").count() == 1

    phone.goto(base_url + "/")
    expect(phone.locator("h1")).to_have_text("You are not logged in")
    expect(phone.locator(".flash")).to_have_count(0)
    for page in (laptop, phone):
        page.context.close()
