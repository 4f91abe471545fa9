"""The Data map page in a real browser: the map draws (WebGL scatter with its legend) and the page
shows no error. The server serves the scratch model with a synthetic data-map cache (no MURA pixel);
the screenshot lands in test-artefacts/browser/ (not committed). Selections are tested with AppTest
(tests/test_app_data_map.py): a mouse-drawn lasso did not reach Plotly's drag layer in headless
Chromium here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.browser import launch_chromium, open_page, require_chromium, visible_errors
from tests.data_map_cache import map_weights  # noqa: F401 - a fixture
from tests.server import REPO_ROOT, running_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SCREENSHOTS = REPO_ROOT / "test-artefacts" / "browser"


def test_map_draws_with_its_legend(map_weights: tuple[Path, dict, str]) -> None:  # noqa: F811
    require_chromium()

    async def render() -> tuple[str, int, list[str]]:
        with running_dashboard({"MURA_LENS_WEIGHTS_DIR": str(map_weights[0])}) as server:
            async with launch_chromium() as browser:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                await open_page(page, server.base_url, "data_map.py")
                await page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=SCREENSHOTS / "data_map.png", full_page=True)
                legend = await page.locator(".js-plotly-plot .legend .traces").count()
                return await page.inner_text("body"), legend, await visible_errors(page)

    body, legend, errors = asyncio.run(render())
    assert errors == []
    assert legend >= 2  # one trace per error type present
    assert "Label issues" in body and "Duplicates and leakage" in body
