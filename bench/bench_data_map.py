"""Data map speed on the shipped cache: the rerun a box/lasso selection triggers.

    MURA_ROOT=/data/MURA-v1.1 python bench/bench_data_map.py [--points 400] [--runs 5]

Target (printed, never asserted): < 0.5 s per selection, median AppTest wall time of reruns with a
selection of --points images on warm caches (AppTest's polling included, so an upper bound). With
MURA_ROOT set, the gallery reads the first studies' views from it (cached after the first run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamlit.testing.v1 import AppTest  # noqa: E402

from core.model.checkpoint import DEFAULT_MODEL
from dashboard import data_map  # noqa: E402
from tests.app_pages import APP  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = len(data_map.map_table(DEFAULT_MODEL))
    picked = list(range(0, rows, max(1, rows // args.points)))
    at = AppTest.from_file(str(APP), default_timeout=600).run()
    at.session_state["data_map_scatter"] = {
        "selection": {"points": [{"customdata": [i]} for i in picked], "point_indices": picked, "box": [], "lasso": []}
    }
    at.switch_page("../pages/data_map.py").run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception[0].value}")
    times = []
    for _ in range(args.runs):
        began = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - began)
    print(
        f"Data map: selection of {len(picked)} of {rows} images, median rerun {statistics.median(times):.3f} s "
        f"(target < 0.5 s); runs {[round(t, 3) for t in times]}"
    )


if __name__ == "__main__":
    main()
