"""Browser tests: one headless Chromium per test module; when a test fails, a screenshot of every
page it had open is saved (to $CXR_SCREENSHOT_DIR, default the system temp folder) and named in
the failure report; each test's browser contexts are closed after it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.dashboard.browser_support import CHROMIUM, CHROMIUM_ARGS, OPEN_PAGES


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not OPEN_PAGES:
        return
    if report.failed:
        folder = Path(os.environ.get("CXR_SCREENSHOT_DIR", tempfile.gettempdir()))
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for i, page in enumerate(OPEN_PAGES):
            path = folder / f"failed_{item.name[:60]}_{i}.png"
            try:
                page.screenshot(path=str(path))
                saved.append(f"{path} ({page.url})")
            except Exception as exc:  # a closed page or browser: say so, keep the real failure
                saved.append(f"page {i}: no screenshot ({exc.__class__.__name__})")
        report.sections.append(("screenshots of the open pages", "\n".join(saved)))
    for page in OPEN_PAGES:
        try:
            page.context.close()
        except Exception:  # already closed with its browser
            pass
    OPEN_PAGES.clear()
