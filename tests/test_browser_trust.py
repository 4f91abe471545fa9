"""The trust scorecard in a real browser: Heat-map accuracy shows it without an error, and Explain shows
the chosen method's scorecard line. Screenshots land in test-artefacts/browser/ (not committed).

The server serves a copy of the scratch model with a core.trust cache over a fake MURA folder, so the
screenshots hold no MURA pixel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import launch_chromium, open_page, require_chromium, visible_errors
from tests.server import REPO_ROOT, RunningDashboard, running_dashboard
from tests.trust_cache import trusted_weights

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SCREENSHOTS = REPO_ROOT / "test-artefacts" / "browser"
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def trusted_server(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path) -> Iterator[RunningDashboard]:
    require_chromium()
    weights = trusted_weights(tmp_path_factory, scratch_weights, "browser_trust")
    with running_dashboard({"MURA_LENS_WEIGHTS_DIR": str(weights), "MURA_ROOT": None}) as server:
        yield server


def test_scorecard_and_scorecard_line_render(trusted_server: RunningDashboard) -> None:
    async def render() -> tuple[str, str, list[str]]:
        async with launch_chromium() as browser:
            page = await browser.new_page(viewport=VIEWPORT)
            await open_page(page, trusted_server.base_url, "heatmap_accuracy.py")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            heading = page.get_by_text("Can the heat maps be trusted?")
            await heading.scroll_into_view_if_needed()
            await page.screenshot(path=SCREENSHOTS / "trust_scorecard.png", full_page=True)
            accuracy_text, errors = await page.inner_text("body"), await visible_errors(page)
            await open_page(page, trusted_server.base_url, "explain.py")
            await page.screenshot(path=SCREENSHOTS / "trust_explain_line.png", full_page=True)
            return accuracy_text, await page.inner_text("body"), errors + await visible_errors(page)

    accuracy_text, explain_text, errors = asyncio.run(render())
    assert errors == [], trusted_server.output()[-4000:]
    assert "Can the heat maps be trusted?" in accuracy_text
    assert "FEM" in accuracy_text and "does not know the class" in accuracy_text
    assert "Trust scorecard (4 radiographs, default layer)" in explain_text
