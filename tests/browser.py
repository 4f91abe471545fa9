"""Headless Chromium (the system's, via Playwright's async API) pointed at a running dashboard.

Shared by the browser, deploy and security tests and by bench/load_test.py, which needs several
concurrent sessions on one browser, hence async; a test drives it with ``asyncio.run``.
Playwright drives /usr/bin/chromium; its own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from dashboard.navigation import PAGES
from dashboard.uploads import safe_display_name

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "APP_IDLE",
    "PAGE_FILES",
    "require_chromium",
    "launch_chromium",
    "page_url",
    "current_page_url",
    "wait_for_script_run",
    "visible_errors",
    "open_page",
    "point_on_quiz_radiograph",
    "wait_for_images",
    "upload_and_read_probability",
    "upload_on_explain",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Streamlit marks its root element with the connection and script-run state (its own e2e tests
#: wait on the same attributes): connected and not running = the script run has finished.
APP_IDLE = '[data-testid="stApp"][data-test-connection-state="CONNECTED"][data-test-script-state="notRunning"]'
#: The page files dashboard/app.py registers (dashboard.navigation's table), default page first.
PAGE_FILES = tuple(spec.file for spec in PAGES)
#: The quiz's clickable radiograph: the streamlit-image-coordinates component's frame.
QUIZ_IMAGE_FRAME = 'iframe[data-testid="stCustomComponentV1"]'
#: What Streamlit renders for an uncaught exception, and for a script that cannot run at all.
_ERROR_SELECTORS = ('[data-testid="stException"]', '[data-testid="stAppError"]')
_ERROR_TEXTS = ("Traceback", "Error running app", "This app has encountered an error")
#: How views.show_study_views captions each view: "<name> · P(abnormal) = 0.123".
_VIEW_PROBABILITY = re.compile(r"P\(abnormal\) = (\d\.\d{3})")


def require_chromium() -> None:
    """Skip the calling test when Chromium is missing, unless MURA_LENS_REQUIRE_BROWSER=1 (CI)."""
    if CHROMIUM.is_file():
        return
    reason = f"{CHROMIUM} not found (apt-get install chromium): browser tests need it"
    if os.environ.get("MURA_LENS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and MURA_LENS_REQUIRE_BROWSER=1 makes them mandatory")
    pytest.skip(reason)


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for the block; pages and contexts opened on it close with it."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def page_url(base_url: str, page_file: str) -> str:
    """Where st.navigation serves a page: the default page at /, the others at /<its url_path>."""
    (spec,) = [spec for spec in PAGES if spec.file == page_file]
    return base_url + ("/" if spec == PAGES[0] else "/" + spec.url_path)


async def current_page_url(page: Page) -> str | None:
    """The URL of the page the sidebar marks as current (Streamlit falls back to the default
    page, with a "Page not found" dialog, when a URL names no page)."""
    link = page.locator('[data-testid="stSidebarNavLink"][aria-current="page"]')
    return await link.get_attribute("href") if await link.count() == 1 else None


async def wait_for_script_run(page: Page, timeout_ms: float = 60_000) -> None:
    """Wait until the app is connected, its script run has finished and no spinner is left."""
    await page.wait_for_selector(APP_IDLE, timeout=timeout_ms)
    await page.wait_for_selector('[data-testid="stSpinner"]', state="detached", timeout=timeout_ms)


async def visible_errors(page: Page) -> list[str]:
    """Texts of exception boxes, and any error wording Streamlit shows instead of the app."""
    found = [
        await element.inner_text()
        for selector in _ERROR_SELECTORS
        for element in await page.query_selector_all(selector)
    ]
    body = await page.inner_text("body")
    found.extend(f"page text contains {text!r}" for text in _ERROR_TEXTS if text in body)
    return found


async def open_page(page: Page, base_url: str, page_file: str, timeout_ms: float = 120_000) -> None:
    """Navigate to one of the app's pages and wait until it has rendered."""
    await page.goto(page_url(base_url, page_file))
    await wait_for_script_run(page, timeout_ms)


async def upload_and_read_probability(page: Page, file_name: str, data: bytes, timeout_ms: float = 120_000) -> str:
    """On an open Explain page, upload one PNG through the file uploader; return P(abnormal) as shown.

    The caption is looked up by the upload's own name: before anything is uploaded Explain already
    shows a real sample radiograph with a probability of its own.
    """
    await page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        files=[{"name": file_name, "mimeType": "image/png", "buffer": data}]
    )
    view_probability = re.compile(re.escape(safe_display_name(file_name)) + r" · " + _VIEW_PROBABILITY.pattern)
    caption = page.get_by_text(view_probability).first
    await caption.wait_for(timeout=timeout_ms)
    await wait_for_script_run(page, timeout_ms)
    match = view_probability.search(await caption.inner_text())
    if match is None:
        raise RuntimeError("the view caption changed while the page was rerunning")
    return match.group(1)


async def upload_on_explain(page: Page, base_url: str, file_name: str, data: bytes, timeout_ms: float = 120_000) -> str:
    """Open Explain, upload one PNG, return P(abnormal) as displayed (three decimals)."""
    await open_page(page, base_url, "explain.py", timeout_ms)
    return await upload_and_read_probability(page, file_name, data, timeout_ms)


async def point_on_quiz_radiograph(page: Page, share_x: float, share_y: float, timeout_ms: float = 120_000) -> str:
    """On the open quiz page, click the radiograph at shares of its shown width and height, as a
    learner does; return the x (image pixels) that the click typed into the keyboard inputs."""
    image = page.frame_locator(QUIZ_IMAGE_FRAME).locator("#image")
    await image.wait_for(timeout=timeout_ms)
    box = await image.bounding_box()
    await image.click(position={"x": share_x * box["width"], "y": share_y * box["height"]})
    x_input = page.get_by_label("x (pixels from the left)")
    for _ in range(int(timeout_ms / 200)):
        value = await x_input.input_value()
        if value:
            await wait_for_script_run(page, timeout_ms)
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError("the click on the radiograph set no point")


async def wait_for_images(page: Page, timeout_ms: float = 120_000) -> None:
    """Wait until the page shows at least one st.image and every one of them has loaded."""
    await page.wait_for_function(
        """() => { const images = document.querySelectorAll('[data-testid="stImage"] img');
                   return images.length > 0 && [...images].every(i => i.complete && i.naturalWidth > 0); }""",
        timeout=timeout_ms,
    )
