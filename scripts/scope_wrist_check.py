"""How the shipped scope head treats wrist and other joint-end views (issue 27, item 2): counts per group.

    python scripts/scope_wrist_check.py --mura-root DIR --fracatlas-root DIR

Runs the head as shipped (no refit) on every MURA valid/ view present and every FracAtlas "hand" image, and
prints per group: views, unflagged forearm calls, forearm calls read as "forearm or wrist" (JOINT_END_SHARE),
forearm suggestions before and after that rule; then per MURA valid/ study, what ``core.predict --study``
without ``--study-type`` does (a verdict, or none with a reason). Figures in docs/experiments.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import fracatlas, mura  # noqa: E402
from core.data.imaging import load_radiograph  # noqa: E402
from core.model.checkpoint import DEFAULT_MODEL, load_model  # noqa: E402
from core.model.prediction import configure_threads  # noqa: E402
from core.scoping.head import assess_images, study_ambiguity, study_scope  # noqa: E402

BATCH = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mura-root", type=Path, required=True)
    parser.add_argument("--fracatlas-root", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    loaded = load_model(DEFAULT_MODEL)
    valid = mura.read_images(args.mura_root, "valid")
    atlas = fracatlas.read_images(args.fracatlas_root)
    items = [
        (row.study_type, row.path.rsplit("/", 1)[0], mura.image_file(args.mura_root, row.path))
        for row in valid.itertuples()
    ]
    items += [
        ("FracAtlas hand", file, fracatlas.image_file(args.fracatlas_root, file))
        for file in atlas.loc[atlas["region"] == "hand", "file"]
    ]
    scopes = []
    for start in range(0, len(items), BATCH):
        pixels = [load_radiograph(path).pixels for _, _, path in items[start : start + BATCH]]
        scopes += assess_images(loaded, pixels)
    views = collections.defaultdict(collections.Counter)
    studies = collections.defaultdict(list)
    for (group, study, _path), scope in zip(items, scopes, strict=True):
        unflagged_forearm = scope.in_scope and scope.body_part == "forearm"
        views[group].update(
            views=1,
            unflagged_forearm=unflagged_forearm,
            forearm_or_wrist=scope.forearm_or_wrist,
            suggested_before=unflagged_forearm and scope.confident and scope.typical,
            suggested_now=scope.study_type == "XR_FOREARM",
        )
        if group != "FracAtlas hand":
            studies[(group, study)].append(scope)
    print(pd.DataFrame(views).T.fillna(0).astype(int).to_string())
    verdicts = collections.defaultdict(collections.Counter)
    for (group, _study), study_scopes in studies.items():
        _suggested, flagged = study_scope(study_scopes)
        ambiguous = None if flagged else study_ambiguity(study_scopes)
        verdicts[group].update(
            studies=1,
            verdict_before=flagged is None,
            verdict_now=flagged is None and ambiguous is None,
            forearm_or_wrist=bool(ambiguous),
        )
    print(pd.DataFrame(verdicts).T.fillna(0).astype(int).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
