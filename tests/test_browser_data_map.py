"""The Data map page in a real browser: the map draws, a box dragged over it lists the studies
inside, with no error. The server serves the scratch model with a synthetic data-map cache (no
MURA pixel); screenshots land in test-artefacts/browser/ (not committed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.browser import launch_chromium, open_page, require_chromium, visible_errors, wait_for_script_run
from tests.data_map_cache import map_weights  # noqa: F401 - a fixture
from tests.server import REPO_ROOT, running_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SCREENSHOTS = REPO_ROOT / "test-artefacts" / "browser"


def test_box_selection_on_the_map_lists_its_studies(map_weights: tuple[Path, dict, str]) -> None:  # noqa: F811
    require_chromium()

    async def select() -> tuple[str, list[str]]:
        with running_dashboard({"MURA_LENS_WEIGHTS_DIR": str(map_weights[0])}) as server:
            async with launch_chromium() as browser:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                await open_page(page, server.base_url, "data_map.py")
                plot = page.locator(".js-plotly-plot .nsewdrag").first
                await plot.wait_for(timeout=60_000)
                await page.locator('[data-title="Box Select"]').first.click()
                box = await plot.bounding_box()
                await page.mouse.move(box["x"] + 5, box["y"] + 5)
                await page.mouse.down()
                await page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.95, steps=12)
                await page.mouse.up()
                await page.get_by_text("studies selected").first.wait_for(timeout=60_000)
                await wait_for_script_run(page, timeout_ms=60_000)
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=SCREENSHOTS / "data_map_selection.png", full_page=True)
                return await page.inner_text("body"), await visible_errors(page)

    body, errors = asyncio.run(select())
    assert errors == []
    assert "studies selected" in body and "Label issues" in body
