"""Load test: concurrent browser sessions each upload a different radiograph on Explain at once.

    python bench/load_test.py [--url http://127.0.0.1:8501] [--sessions 4] [--timeout 300]

Without --url it starts the deployed command (Procfile, via tests/server.py) on a free loopback
port and stops it afterwards. One headless Chromium opens one context (= one Streamlit session)
per upload; all sessions load Explain, then upload at the same moment. Each uploads its own
synthetic image whose probability is computed beforehand with core.predict on the same decoded
pixels and the same model (images are chosen so that no two round to nearby values), and the run
fails unless every session displays its own image's value. Prints the latency percentiles of the
page load and of upload-to-probability (which includes the default GradCAM), in seconds.
The model is the app's default one from MURA_LENS_WEIGHTS_DIR (or weights/), as the server sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from playwright.async_api import Browser

REPO_ROOT = Path(__file__).resolve().parent.parent
# The server and browser helpers live with the tests, which drive the app the same way.
sys.path.insert(0, str(REPO_ROOT))

from core.data.imaging import load_radiograph  # noqa: E402
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel, load_model  # noqa: E402
from core.model.prediction import predict_images  # noqa: E402
from core.store.artifacts import weights_dir  # noqa: E402
from tests.browser import (  # noqa: E402
    CHROMIUM,
    launch_chromium,
    open_page,
    upload_and_read_probability,
    visible_errors,
)
from tests.server import running_dashboard  # noqa: E402
from tests.synthetic import png_bytes, synthetic_radiograph  # noqa: E402

__all__ = [
    "MAX_SESSIONS",
    "SessionUpload",
    "SessionResult",
    "LoadReport",
    "distinct_uploads",
    "run_load_test",
    "main",
]

#: Bounded on purpose: each session is a browser tab and a model run on a small machine.
MAX_SESSIONS = 8
#: The page shows P(abnormal) with three decimals.
DISPLAY_TOLERANCE = 0.0005 + 1e-6
#: Expected values this far apart can never be confused once rounded for display.
MIN_SEPARATION = 4 * DISPLAY_TOLERANCE
IMAGE_SIDE = 256


@dataclass(frozen=True)
class SessionUpload:
    """What one session uploads, and the probability core.predict gives it."""

    file_name: str
    data: bytes
    expected: float


@dataclass(frozen=True)
class SessionResult:
    upload: SessionUpload
    shown: str | None
    page_load_s: float
    upload_s: float | None
    error: str | None

    @property
    def correct(self) -> bool:
        """The session displayed its own image's probability (to display precision), with no error."""
        return (
            self.error is None
            and self.shown is not None
            and abs(float(self.shown) - self.upload.expected) <= DISPLAY_TOLERANCE
        )


@dataclass(frozen=True)
class LoadReport:
    results: tuple[SessionResult, ...]
    wall_s: float

    @property
    def all_correct(self) -> bool:
        return all(result.correct for result in self.results)

    def percentiles(self, values: Sequence[float]) -> str:
        if not values:
            return "n/a"
        p50, p90 = np.percentile(values, [50, 90])
        return f"p50 {p50:.2f} s, p90 {p90:.2f} s, max {max(values):.2f} s (n={len(values)})"

    def summary(self) -> str:
        loads = [result.page_load_s for result in self.results]
        uploads = [result.upload_s for result in self.results if result.upload_s is not None]
        lines = [
            f"{len(self.results)} concurrent sessions, wall time {self.wall_s:.2f} s",
            f"page load (Explain):          {self.percentiles(loads)}",
            f"upload -> probability shown:  {self.percentiles(uploads)}",
        ]
        for result in self.results:
            verdict = "ok" if result.correct else "WRONG"
            detail = f" ({result.error})" if result.error else ""
            lines.append(
                f"  {result.upload.file_name}: expected {result.upload.expected:.3f}, "
                f"shown {result.shown}: {verdict}{detail}"
            )
        lines.append("every session got its own answer" if self.all_correct else "SOME SESSIONS FAILED")
        return "\n".join(lines)


def distinct_uploads(loaded: LoadedModel, count: int, *, side: int = IMAGE_SIDE) -> list[SessionUpload]:
    """``count`` synthetic PNGs whose expected probabilities are at least MIN_SEPARATION apart.

    Expected values come from the app's own path: decode the PNG bytes, then core.predict.
    """
    chosen: list[SessionUpload] = []
    for seed in range(50 * count):
        data = png_bytes(synthetic_radiograph(seed, side))
        name = f"load-{seed:03d}.png"
        expected = float(predict_images(loaded, [load_radiograph(data, filename=name).pixels])[0])
        if all(abs(expected - other.expected) >= MIN_SEPARATION for other in chosen):
            chosen.append(SessionUpload(name, data, expected))
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"the model gives fewer than {count} distinguishable probabilities on synthetic images")


async def _session(
    browser: Browser, base_url: str, upload: SessionUpload, start_uploads: asyncio.Barrier, step_timeout_ms: float
) -> SessionResult:
    """One Streamlit session: load Explain, wait for the others, upload, read the probability."""
    context = await browser.new_context()
    page = await context.new_page()
    started = time.perf_counter()
    try:
        await open_page(page, base_url, "explain.py", step_timeout_ms)
    except Exception as exc:  # noqa: BLE001 - the report names any failure per session
        await start_uploads.abort()
        return SessionResult(upload, None, time.perf_counter() - started, None, f"page load: {exc}")
    page_load_s = time.perf_counter() - started
    try:
        await start_uploads.wait()
        started = time.perf_counter()
        shown = await upload_and_read_probability(page, upload.file_name, upload.data, step_timeout_ms)
        upload_s = time.perf_counter() - started
        errors = await visible_errors(page)
        return SessionResult(upload, shown, page_load_s, upload_s, "; ".join(errors) or None)
    except Exception as exc:  # noqa: BLE001
        return SessionResult(upload, None, page_load_s, None, f"upload: {type(exc).__name__}: {exc}")
    finally:
        await context.close()


async def _run(base_url: str, uploads: Sequence[SessionUpload], timeout_s: float) -> LoadReport:
    started = time.perf_counter()
    async with launch_chromium() as browser:
        barrier = asyncio.Barrier(len(uploads))
        results = await asyncio.wait_for(
            asyncio.gather(*(_session(browser, base_url, u, barrier, timeout_s * 1000) for u in uploads)),
            timeout=timeout_s,
        )
    return LoadReport(tuple(results), time.perf_counter() - started)


def run_load_test(base_url: str, uploads: Sequence[SessionUpload], *, timeout_s: float = 300.0) -> LoadReport:
    """Run one session per upload, concurrently, against the dashboard at ``base_url``."""
    if not 1 <= len(uploads) <= MAX_SESSIONS:
        raise ValueError(f"between 1 and {MAX_SESSIONS} sessions, not {len(uploads)}")
    return asyncio.run(_run(base_url.rstrip("/"), uploads, timeout_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running dashboard (default: start one on a free loopback port)")
    parser.add_argument(
        "--sessions", type=int, default=4, choices=range(1, MAX_SESSIONS + 1), metavar=f"1..{MAX_SESSIONS}"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        parser.error(f"{CHROMIUM} not found: install Chromium (apt-get install chromium)")

    # New sessions start on the app's default model, so the expected answers come from that one.
    uploads = distinct_uploads(load_model(DEFAULT_MODEL), args.sessions)
    print(f"model {DEFAULT_MODEL} from {weights_dir()}; {args.sessions} sessions, one {IMAGE_SIDE} px PNG each")
    if args.url:
        report = run_load_test(args.url, uploads, timeout_s=args.timeout)
    else:
        with running_dashboard() as server:
            report = run_load_test(server.base_url, uploads, timeout_s=args.timeout)
    print(report.summary())
    return 0 if report.all_correct else 1


if __name__ == "__main__":
    sys.exit(main())
