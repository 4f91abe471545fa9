"""Dashboard speed on the shipped model: threshold reruns, GradCAM on a new upload, cold start.

    python bench/bench_dashboard.py [--changes 7] [--uploads 5] [--upload-side 512]

Speed targets live here, printed, never asserted (timed tests flake on shared machines):
  Performance: a threshold change with a warm cache   < 0.3 s server time (median of --changes)
  Explain:     GradCAM on a new --upload-side upload  < 1 s server time (median of --uploads)
  Cold start:  production command to Overview drawn   < 10 s (headless Chromium)
Server time is the script run itself, timed by wrapping Streamlit's script-runner entry point
(AppTest's own wall time adds its polling, which no user sees); a step that reruns the script
counts every run it triggers. Uploads are seeded synthetic radiographs (tests/synthetic.py), a
different one each time so no cache answers; no MURA pixel is read (MURA_ROOT is unset).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The server, browser and synthetic-image helpers live with the tests, which drive the app the same way.
sys.path.insert(0, str(REPO_ROOT))

from streamlit.runtime.scriptrunner import script_runner  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from core.model.checkpoint import DEFAULT_MODEL  # noqa: E402
from core.store.artifacts import weights_dir  # noqa: E402
from tests.browser import CHROMIUM, launch_chromium, open_page, visible_errors  # noqa: E402
from tests.server import running_dashboard  # noqa: E402
from tests.synthetic import synthetic_radiograph_png  # noqa: E402

APP = REPO_ROOT / "dashboard" / "app.py"
APP_TIMEOUT_S = 300
THRESHOLD_KEY = f"performance:threshold:{DEFAULT_MODEL}:XR_HUMERUS"
TARGET_THRESHOLD_S = 0.3
TARGET_GRADCAM_S = 1.0
TARGET_COLD_START_S = 10.0


class ScriptTimer:
    """Records how long each Streamlit script run takes, by wrapping the runner's entry point."""

    def __init__(self) -> None:
        self.runs: list[float] = []
        self._original = script_runner.exec_func_with_error_handling

    def __enter__(self) -> ScriptTimer:
        original = self._original

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.runs.append(time.perf_counter() - started)

        script_runner.exec_func_with_error_handling = timed
        return self

    def __exit__(self, *_exc: object) -> None:
        script_runner.exec_func_with_error_handling = self._original

    def server_seconds(self, step: Callable[[], AppTest]) -> float:
        """Script time of every run that ``step`` triggers (a page may st.rerun itself)."""
        before = len(self.runs)
        app = step()
        if app.exception:
            raise RuntimeError(f"the app raised: {[e.value for e in app.exception]}")
        return sum(self.runs[before:])


def _switch_to(page: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S).run()
    return app.switch_page(page).run()


def bench_threshold_changes(timer: ScriptTimer, changes: int) -> list[float]:
    """Performance page: move one body part's threshold once to warm the caches, then time ``changes`` moves."""
    app = _switch_to("../pages/performance.py")
    app.slider(key=THRESHOLD_KEY).set_value(0.6).run()
    return [
        timer.server_seconds(lambda value=value: app.slider(key=THRESHOLD_KEY).set_value(value).run())
        for value in (round(0.61 + 0.01 * step, 2) for step in range(changes))
    ]


def bench_new_uploads(timer: ScriptTimer, uploads: int, side: int) -> list[float]:
    """Explain page: one warm-up upload, then ``uploads`` new images, each predicted and GradCAM-explained."""
    app = _switch_to("../pages/explain.py")

    def upload(seed: int) -> AppTest:
        file = (f"synthetic_{seed}.png", synthetic_radiograph_png(seed, side), "image/png")
        return app.file_uploader(key="explain_upload").set_value(file).run()

    timer.server_seconds(lambda: upload(0))
    if not any(image.captions and "→" in "".join(image.captions) for image in app.image):
        raise RuntimeError("the Explain page showed no CAM overlay after an upload")
    return [timer.server_seconds(lambda seed=seed: upload(seed)) for seed in range(1, uploads + 1)]


async def _cold_start() -> tuple[float, float, list[str]]:
    """Seconds from launching the production command to healthy and to Overview drawn, and any errors shown."""
    async with launch_chromium() as browser:  # the browser's own start-up is not the server's
        page = await browser.new_page()
        started = time.perf_counter()
        with running_dashboard({"MURA_LENS_WEIGHTS_DIR": None}) as server:
            healthy = time.perf_counter() - started
            await open_page(page, server.base_url, "overview.py")
            rendered = time.perf_counter() - started
            errors = await visible_errors(page)
    return healthy, rendered, errors


def _summary(label: str, seconds: list[float], target_s: float) -> str:
    median = statistics.median(seconds)
    verdict = "meets" if median < target_s else "MISSES"
    return (
        f"{label}: median {median:.3f} s, max {max(seconds):.3f} s over {len(seconds)} "
        f"(target < {target_s:g} s: {verdict}); runs {', '.join(f'{s:.3f}' for s in seconds)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=7, help="timed threshold changes")
    parser.add_argument("--uploads", type=int, default=5, help="timed uploads after the warm-up one")
    parser.add_argument("--upload-side", type=int, default=512, help="side of each square synthetic upload")
    args = parser.parse_args(argv)
    # The out-of-the-box app: shipped weights, no MURA folder.
    os.environ.pop("MURA_ROOT", None)
    os.environ.pop("MURA_LENS_WEIGHTS_DIR", None)
    # Other work on a shared machine moves every figure; the load average says how busy it was.
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}; model {DEFAULT_MODEL} from {weights_dir()}")

    with ScriptTimer() as timer:
        print(
            _summary(
                "Performance, threshold change (warm cache), server time",
                bench_threshold_changes(timer, args.changes),
                TARGET_THRESHOLD_S,
            )
        )
        print(
            _summary(
                f"Explain, new {args.upload_side}x{args.upload_side} upload + GradCAM, server time",
                bench_new_uploads(timer, args.uploads, args.upload_side),
                TARGET_GRADCAM_S,
            )
        )

    if not CHROMIUM.is_file():
        print(f"Cold start: skipped, {CHROMIUM} not found (apt-get install chromium)")
        return 0
    healthy, rendered, errors = asyncio.run(_cold_start())
    verdict = "meets" if rendered < TARGET_COLD_START_S else "MISSES"
    print(
        f"Cold start (scripts/serve.sh to Overview drawn in Chromium): {rendered:.2f} s "
        f"(healthy after {healthy:.2f} s; target < {TARGET_COLD_START_S:g} s: {verdict})"
    )
    if errors:
        print(f"Cold start: the Overview page showed errors: {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
