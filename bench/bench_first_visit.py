"""First visit after start-up: server time of the slowest pages' first visit, with and without the warm-up.

    python bench/bench_first_visit.py [--pages heatmap_accuracy data_map] [--wait 60]

Each page and mode runs in a fresh Python process (empty Streamlit caches, as after a server start): the
app's first run draws Overview (the start-up; dashboard.warmup starts at its end unless MURA_LENS_WARMUP=0),
the benchmark then waits up to --wait seconds for the warm-up thread (a user reading Overview), and times the
switch to the page (first visit), then the same page in a new session (every later visitor). Target, printed,
never asserted (timed tests flake on shared machines): a first visit under 5 s on two quiet cores.
Server time is the script runs only (bench_dashboard.ScriptTimer); the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TARGET_FIRST_VISIT_S = 5.0
PAGES = ("heatmap_accuracy", "data_map")


def _one(page: str, wait: float) -> None:
    """In this (fresh) process: start-up on Overview, wait for the warm-up, then time the page twice."""
    from streamlit.testing.v1 import AppTest

    from bench.bench_dashboard import APP, APP_TIMEOUT_S, ScriptTimer
    from dashboard import warmup

    with ScriptTimer() as timer:
        start_up = timer.server_seconds(lambda: AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S).run())
        waited = time.perf_counter()
        thread = warmup.start()  # the app's own call already started it; this returns that thread (or None)
        if thread is not None:
            thread.join(wait)
        waited = time.perf_counter() - waited

        def visit():
            app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S).run()
            before = len(timer.runs)
            app.switch_page(f"../pages/{page}.py").run()
            return app, sum(timer.runs[before:])

        _app, first = visit()
        _app, again = visit()
    state = "off" if thread is None else ("done" if not thread.is_alive() else "still running")
    print(
        f"{page}: start-up (Overview) {start_up:.2f} s; warm-up {state} after {waited:.2f} s; "
        f"first visit {first:.2f} s; new session {again:.2f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", nargs="+", default=list(PAGES), choices=PAGES)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the warm-up (reading Overview)")
    parser.add_argument("--one", choices=PAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _one(args.one, args.wait)
        return 0
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load} (target: first visit < {TARGET_FIRST_VISIT_S:g} s "
        "on two quiet cores)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MURA_ROOT", "MURA_LENS_WEIGHTS_DIR")}
    for warm in ("0", "1"):
        print(f"-- warm-up {'on' if warm == '1' else 'off (MURA_LENS_WARMUP=0)'}", flush=True)
        for page in args.pages:
            subprocess.run(
                [sys.executable, __file__, "--one", page, "--wait", str(args.wait)],
                check=True,
                env=env | {"MURA_LENS_WARMUP": warm},
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
