"""Redraw docs/screenshot.png: the first screens a new user sees, Overview beside Explain as it opens.

    .venv/bin/python scripts/screenshot.py

Runs the deployed server with no MURA folder, so the picture holds only what the project
ships (a FracAtlas sample, CC BY 4.0) and the cached evaluation: never a MURA pixel.
Needs /usr/bin/chromium (see README).
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import launch_chromium, page_url, wait_for_script_run  # noqa: E402
from tests.server import REPO_ROOT, running_dashboard  # noqa: E402

#: Drawn at this size, then scaled to 3/4 so that more of each page fits the README's width.
VIEWPORT = {"width": 1480, "height": 1048}
SCALE = 0.75
OUT = REPO_ROOT / "docs" / "screenshot.png"


async def capture(base_url: str) -> list[bytes]:
    """One viewport-sized PNG of each page, after its script run has finished."""
    async with launch_chromium() as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        await page.goto(base_url)
        await wait_for_script_run(page, timeout_ms=120_000)
        overview = await page.screenshot()
        await page.goto(page_url(base_url, "explain.py"))
        await wait_for_script_run(page, timeout_ms=120_000)
        await page.get_by_text("One view in detail").wait_for(timeout=120_000)
        explain = await page.screenshot()
        return [overview, explain]


def main() -> None:
    with running_dashboard() as server:
        pngs = asyncio.run(capture(server.base_url))
    shots = []
    for png in pngs:
        shot = Image.open(io.BytesIO(png)).convert("RGB")
        shots.append(shot.resize((round(shot.width * SCALE), round(shot.height * SCALE)), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (sum(s.width for s in shots), max(s.height for s in shots)))
    left = 0
    for shot in shots:
        canvas.paste(shot, (left, 0))
        left += shot.width
    canvas.save(OUT, optimize=True)
    print(f"wrote {OUT} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    main()
