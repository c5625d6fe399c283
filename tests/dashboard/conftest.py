"""Headless Chromium (Debian's package) for the dashboard tests: installed
here with apt-get when missing, so the README's test command needs nothing
done by hand; a machine where it cannot be installed fails the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.harness import Running, server_process

CHROMIUM = "/usr/bin/chromium"


def _install_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run([*sudo, *step], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 and step[1] == "install":
            pytest.fail(f"cannot install Debian's chromium: {done.stderr[-2000:]}")
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not on PATH after apt-get install chromium")
    return found


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope, not session: Playwright's sync driver keeps its event
    # loop marked as running on this thread until it stops, and the
    # asyncio tests that run after this directory need the thread free.
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = _install_chromium()
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Running]:
    with server_process(tmp_path / "data") as running:
        yield running


@pytest.fixture
def expected_errors() -> list[str]:
    """Parts of console errors a test expects; any other fails it."""
    return []


@pytest.fixture
def page(browser: Browser, broker: Running, expected_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not any(part in message.text for part in expected_errors):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert errors == [], f"console errors: {errors}"
