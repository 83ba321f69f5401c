"""Fixtures of the real-process tests that several modules share: the browser."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip(
            "no Chromium on this machine (Debian: apt-get install chromium); the /ui browser tests need it"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with sync_api.sync_playwright() as playwright:
        # No sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """Opens a URL in a fresh browser context; fails the test on any script error of the page.
    The page's requests are kept in `page.sent`."""
    contexts, errors = [], []

    def open_(url: str, **context_options: Any) -> Any:
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        page.sent = []
        page.on("request", lambda request: page.sent.append(request))
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors
