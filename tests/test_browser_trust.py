"""The trust scorecard in a real browser: Heat-map accuracy shows it without an error, and Explain shows
the chosen method's scorecard line. Screenshots land in test-artefacts/browser/ (not committed).

The server serves a copy of the scratch model with a core.trust cache over a fake MURA folder, so the
screenshots hold no MURA pixel.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import trust as trust_cli
from core.model.checkpoint import DEFAULT_MODEL
from tests.browser import launch_chromium, open_page, require_chromium, visible_errors
from tests.fake_mura import make_fake_mura
from tests.server import REPO_ROOT, RunningDashboard, running_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SCREENSHOTS = REPO_ROOT / "test-artefacts" / "browser"
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def trusted_server(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path) -> Iterator[RunningDashboard]:
    require_chromium()
    weights = tmp_path_factory.mktemp("browser_trust_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, weights / DEFAULT_MODEL)
    root = make_fake_mura(tmp_path_factory.mktemp("browser_trust_mura"), patients_per_type=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
        assert (
            trust_cli.main(
                [
                    "--mura-root",
                    str(root),
                    "--per-part",
                    "2",
                    "--fracatlas-n",
                    "0",
                    "--methods",
                    "GradCAM",
                    "LayerCAM",
                    "FEM",
                    "--bootstrap",
                    "50",
                ]
            )
            == 0
        )
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
