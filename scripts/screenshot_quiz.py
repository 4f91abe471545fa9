"""Redraw docs/quiz.png: the quiz's reveal on a real FracAtlas fracture, with the default model.

    .venv/bin/python scripts/screenshot_quiz.py

Runs the deployed server with no MURA folder: the quiz reads the shipped FracAtlas samples (CC BY 4.0),
so the picture holds no MURA pixel. With seed 1 the second case is an outlined shoulder fracture; the
script calls the first case normal, then clicks inside the second one's expert outline, as a learner
would. Needs /usr/bin/chromium (see README).
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import fracatlas  # noqa: E402
from tests.browser import (  # noqa: E402
    launch_chromium,
    open_page,
    point_on_quiz_radiograph,
    wait_for_images,
    wait_for_script_run,
)
from tests.server import REPO_ROOT, running_dashboard  # noqa: E402

VIEWPORT = {"width": 1400, "height": 1500}
SCALE = 0.75
OUT = REPO_ROOT / "docs" / "quiz.png"
SAMPLES = REPO_ROOT / "data_samples" / "fracatlas"
SECOND_CASE = "images/IMG0002627.jpg"


def outline_share_point() -> tuple[float, float]:
    """The centre of the second case's outline, as shares of the image's width and height."""
    mask = fracatlas.read_outlines(SAMPLES).mask(SECOND_CASE)
    ys, xs = np.nonzero(mask)
    return float(xs.mean()) / mask.shape[1], float(ys.mean()) / mask.shape[0]


async def capture(base_url: str) -> bytes:
    async with launch_chromium() as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        await open_page(page, base_url, "quiz.py")
        await page.get_by_text("No fracture", exact=True).click()
        await wait_for_script_run(page, timeout_ms=120_000)
        await page.get_by_role("button", name="Check my reading").click()
        await page.get_by_role("button", name="Next case").click(timeout=120_000)
        await wait_for_script_run(page, timeout_ms=120_000)
        await page.get_by_text("Fracture", exact=True).click()
        await wait_for_script_run(page, timeout_ms=120_000)
        await point_on_quiz_radiograph(page, *outline_share_point())
        await page.get_by_role("button", name="Check my reading").click()
        await page.get_by_text("Truth:").wait_for(timeout=120_000)
        await wait_for_script_run(page, timeout_ms=120_000)
        await wait_for_images(page)
        await page.wait_for_timeout(1500)  # the agreement table draws after its data arrives
        return await page.screenshot()


def main() -> None:
    with running_dashboard() as server:
        png = asyncio.run(capture(server.base_url))
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    shot = shot.resize((round(shot.width * SCALE), round(shot.height * SCALE)), Image.Resampling.LANCZOS)
    shot.save(OUT, optimize=True)
    print(f"wrote {OUT} ({shot.width}x{shot.height})")


if __name__ == "__main__":
    main()
