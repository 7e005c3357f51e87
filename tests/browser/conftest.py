"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, the manager on pytest-django's live server
(a thread serving the test database, static files included), an operator logged in through the real login form, and
a screenshot of every failure kept in the log.

Playwright's own browser download (``playwright install``) cannot be reached here or in CI: the tests launch the
Chromium that ``bin/bootstrap`` installs from Debian. A missing Chromium fails the tests, it never skips them.

CI keeps only its log, so a failed browser test's report carries its page's URL, the path of a full-page PNG saved
outside the clone, and a small JPEG of the viewport as base64 between ``BEGIN``/``END`` markers:
``bin/screenshot-from-log LOG [DIR]`` turns those back into files.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import tempfile
import textwrap
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Error, Page, Playwright, ViewportSize, expect, sync_playwright
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from tests.browser.helpers import log_in

# The machine's two cores are shared with the rest of the suite: wait as if the browser ran at a third of its speed
# (Playwright's own defaults: 5 s for an expectation; 30 s for an action, already far more than a local page needs).
ACTION_TIMEOUT_MS = 30_000
EXPECT_TIMEOUT_MS = 15_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

CHROMIUM_FLAGS = (
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps calling Google's hosts, which this closed network refuses, and misbehaves.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

SCREENSHOT_BEGIN = "-----BEGIN BROWSER SCREENSHOT {name}-----"
SCREENSHOT_END = "-----END BROWSER SCREENSHOT-----"
SCREENSHOT_DIR_ENV = "GH_BROWSER_SCREENSHOTS"
SCREENSHOT_JPEG_QUALITY = 50
# Each is about 70 kB of base64: past this many failures in one run, only the saved file's path is printed.
MAX_SCREENSHOTS_IN_LOG = 10

PAGE = pytest.StashKey[Page]()
SCREENSHOTS_PRINTED = pytest.StashKey[int]()


def chromium_executable() -> str:
    """Debian's Chromium (``bin/bootstrap`` installs it); the tests fail, loudly, without it."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        pytest.fail("Chromium is not installed: run bin/bootstrap (it installs Debian's chromium)")
    return found


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's synchronous API, for one test module.

    It runs an asyncio loop in the test's thread, which Django's guard against blocking calls from async code takes
    for async code: the guard is lifted for the module's tests only (none of them is async), and put back after.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as driver:
            yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """One headless Chromium per module; each test gets its own context (cookies, storage) from it."""
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    chromium = playwright_driver.chromium.launch(
        executable_path=chromium_executable(), headless=True, args=list(CHROMIUM_FLAGS), timeout=ACTION_TIMEOUT_MS * 2
    )
    yield chromium
    chromium.close()


@pytest.fixture
def page(
    request: pytest.FixtureRequest, browser: Browser, live_server: LiveServer, transactional_db: None
) -> Iterator[Page]:
    """A fresh browser page whose relative URLs go to the live server (``page.goto("/admin/")``).

    The live server answers from another thread: the test's rows must be committed to be seen there, hence the
    transactional database (emptied after each test).
    """
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    tab = context.new_page()
    request.node.stash[PAGE] = tab  # for the screenshot of a failure, even one in a later fixture's setup
    yield tab
    context.close()


@pytest.fixture
def operator(transactional_db: None, settings: Settings) -> tuple[str, str]:
    """A superuser's name and password, for logging in through the form.

    Its password is hashed with a fast hasher: the real one takes most of a second of the shared CPU, twice a test.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    name, password = "operator", secrets.token_urlsafe(16)
    User.objects.create_superuser(name, "operator@example.invalid", password)
    return name, password


@pytest.fixture
def admin_page(page: Page, operator: tuple[str, str]) -> Page:
    """A page logged in to the admin as ``operator``, showing the admin index."""
    log_in(page, *operator)
    return page


# --- screenshots of failures, in the log ---------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A browser test that failed (or whose setup did, after its page opened) gets its page's URL and screenshots
    in its report (see the module's docstring)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    page = item.stash.get(PAGE, None)
    if not report.failed or report.when == "teardown" or page is None:
        return
    printed = item.config.stash.get(SCREENSHOTS_PRINTED, 0)
    report.sections.append(
        ("browser screenshot", describe_failure(page, item.nodeid, printed < MAX_SCREENSHOTS_IN_LOG))
    )
    item.config.stash[SCREENSHOTS_PRINTED] = printed + 1


def describe_failure(page: Page, nodeid: str, in_log: bool) -> str:
    """The page's URL, a full-page PNG saved to a file and, ``in_log``, a viewport JPEG in base64 between markers."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[-150:]
    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or Path(tempfile.gettempdir()) / "globalhub-browser-failures")
    png = folder / f"{name}.png"
    lines = [f"page URL: {page.url}"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png), full_page=True)
        lines.append(f"screenshot: {png}")
        jpeg = page.screenshot(type="jpeg", quality=SCREENSHOT_JPEG_QUALITY, full_page=False) if in_log else b""
    except (Error, OSError) as error:  # a crashed page must not hide the test's own failure
        lines.append(f"no screenshot: {error}")
        return "\n".join(lines)
    if not jpeg:
        lines.append(f"(no screenshot in the log: {MAX_SCREENSHOTS_IN_LOG} already printed in this run)")
        return "\n".join(lines)
    lines.append(f"viewport as JPEG, base64 ({len(jpeg)} bytes; bin/screenshot-from-log extracts it):")
    lines.append(SCREENSHOT_BEGIN.format(name=f"{name}.jpg"))
    lines.extend(textwrap.wrap(base64.b64encode(jpeg).decode("ascii"), 76))
    lines.append(SCREENSHOT_END)
    return "\n".join(lines)
