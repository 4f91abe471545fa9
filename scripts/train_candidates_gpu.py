"""Train candidate recipes as 4-fold cross-validations on one GPU and choose one on train/ alone.

    python scripts/train_candidates_gpu.py --mura-root .gpu/mura --runs /tmp/runs --out OUT \
        [--budget-seconds 450] [--expect-split SHA256]

Every candidate trains one member per fold of the shipped patient-level split (4 folds, split
seed 0, seed = fold) with ``core.train --device cuda --workers N``: the model runs on the GPU,
DataLoader workers augment on the CPU cores. Members run ``--parallel`` at a time, cheapest
candidate first, so a budget that ends early still leaves whole candidates; a member still
running then is stopped, and its candidate drops out. Measured on an H100 (2026-11-27), with
augmentation then done per image on the GPU inside each training process: 16 trainings at once
ran out of GPU memory and took 55 s per epoch each, 4 at once 17 s per epoch (Lite0, 320 px):
the processes time-share the GPU, so few processes with CPU workers is the plan now.

Selection (fixed before any result was seen; valid/ is never read): a candidate's score is the
mean over humerus and forearm of its out-of-fold study AUROC on all of train/. Candidates are
walked from cheapest to dearest to run on a CPU; a dearer one replaces the choice only if it
scores at least ``MARGIN`` higher (an equally dear one if it scores higher at all).

OUT receives at most 8 files (the device tool's limit): ``selection.json``, ``runs.tar.gz``
(every member's log, card and holdout predictions, no weights) and one ``<candidate>_f<k>.tar``
per member of the choice (its run folder without the optimiser state), for ``core.ensemble``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import mura  # noqa: E402
from core.data.splits import patient_split  # noqa: E402
from core.model.ensemble import out_of_fold  # noqa: E402
from core.model.thresholds import holdout_summary  # noqa: E402
from core.store.artifacts import TRAIN_STATE_FILE, ModelArtifacts  # noqa: E402

FOLDS = 4
SPLIT_SEED = 0
MARGIN = 0.005


@dataclass(frozen=True)
class Candidate:
    arch: str
    input_size: int
    epochs: int
    #: CPU inference cost relative to EfficientNet-Lite0 at 320 px (multiply-adds, measured by
    #: the model sizes: Lite2 is about twice Lite0 at one input size; cost grows with pixels).
    cpu_cost: float


CANDIDATES = {
    "lite0_320_e16": Candidate("efficientnet_lite0", 320, 16, 1.0),
    "lite2_320_e16": Candidate("efficientnet_lite2", 320, 16, 2.1),
    "lite2_320_e30": Candidate("efficientnet_lite2", 320, 30, 2.1),
    "lite2_384_e16": Candidate("efficientnet_lite2", 384, 16, 2.1 * (384 / 320) ** 2),
}


def split_fingerprint(root: Path) -> str:
    """SHA-256 of every (fold, patient) pair, to check another machine draws the same folds."""
    images = mura.read_images(root, "train")
    images = images[images["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])].reset_index(drop=True)
    pairs = []
    for fold in range(FOLDS):
        _, holdout = patient_split(images, 0.0, SPLIT_SEED, folds=FOLDS, fold=fold)
        pairs += [f"{fold}:{p}" for p in sorted(set(images["patient"].iloc[holdout]))]
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def launch(name: str, candidate: Candidate, fold: int, args: argparse.Namespace) -> subprocess.Popen:
    runs = Path(args.runs)
    out = runs / f"{name}_f{fold}"
    out.mkdir(parents=True, exist_ok=True)
    size, epochs = (64, 1) if args.smoke else (candidate.input_size, candidate.epochs)
    command = [
        sys.executable,
        "-m",
        "core.train",
        "--mura-root",
        args.mura_root,
        "--arch",
        candidate.arch,
        "--input-size",
        str(size),
        "--epochs",
        str(epochs),
        "--folds",
        str(FOLDS),
        "--fold",
        str(fold),
        "--seed",
        str(fold),
        "--split-seed",
        str(SPLIT_SEED),
        "--threads",
        "1",
        "--workers",
        str(args.workers),
        "--device",
        args.device,
        "--out",
        str(out),
    ]
    log = (runs / f"{name}_f{fold}.log").open("w", encoding="utf-8")
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parent.parent
    )


def out_of_fold_score(runs: Path, name: str) -> dict | None:
    """Out-of-fold study AUROC per body part and their mean, or None if a fold is missing."""
    files = [ModelArtifacts(runs / f"{name}_f{fold}").holdout_predictions for fold in range(FOLDS)]
    if not all(f.is_file() for f in files):
        return None
    _, metrics = holdout_summary(out_of_fold([pd.read_csv(f) for f in files]))
    per_part = {t: m["study_auroc"] for t, m in metrics.items()}
    return {
        "study_auroc": per_part,
        "score": sum(per_part.values()) / len(per_part),
        "studies": sum(m["studies"] for m in metrics.values()),
    }


def choose(scores: dict[str, dict]) -> str | None:
    """The selection rule of the module docstring."""
    chosen = None
    for name in sorted(scores, key=lambda n: (CANDIDATES[n].cpu_cost, n)):
        if chosen is None:
            chosen = name
            continue
        margin = MARGIN if CANDIDATES[name].cpu_cost > CANDIDATES[chosen].cpu_cost else 0.0
        if scores[name]["score"] > scores[chosen]["score"] + margin:
            chosen = name
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-seconds", type=float, default=450)
    parser.add_argument("--expect-split", help="split_fingerprint() on the machine that ships the model")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=2, help="trainings at a time")
    parser.add_argument("--workers", type=int, default=6, help="augmentation processes per training")
    parser.add_argument("--smoke", action="store_true", help="64 px, one epoch: check the plumbing anywhere")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    fingerprint = split_fingerprint(mura.resolve_root(args.mura_root))
    if args.expect_split and fingerprint != args.expect_split:
        print(f"error: this machine draws other folds ({fingerprint}); stopping", file=sys.stderr)
        return 2

    started = time.time()
    queue = [(n, f) for n in sorted(args.candidates, key=lambda n: CANDIDATES[n].cpu_cost) for f in range(FOLDS)]
    running: dict[tuple[str, int], subprocess.Popen] = {}
    returncodes: dict[str, int | None] = {f"{n}_f{f}": None for n, f in queue}  # None: never started
    while queue or running:
        for key, process in list(running.items()):
            if process.poll() is not None:
                returncodes[f"{key[0]}_f{key[1]}"] = running.pop(key).returncode
        if time.time() - started > args.budget_seconds:
            for (name, fold), process in running.items():
                process.kill()
                returncodes[f"{name}_f{fold}"] = process.wait()
            break
        while queue and len(running) < args.parallel:
            name, fold = queue.pop(0)
            running[(name, fold)] = launch(name, CANDIDATES[name], fold, args)
        time.sleep(2)
    wall = time.time() - started

    scores = {}
    for name in args.candidates:
        score = out_of_fold_score(runs, name) if all(returncodes[f"{name}_f{f}"] == 0 for f in range(FOLDS)) else None
        if score is not None:
            scores[name] = score
    chosen = choose(scores)
    selection = {
        "chosen": chosen,
        "scores": scores,
        "returncodes": returncodes,
        "wall_seconds": round(wall),
        "rule": __doc__.split("\n\n")[3].replace("\n", " "),
        "split_fingerprint": fingerprint,
        "candidates": {n: CANDIDATES[n].__dict__ for n in args.candidates},
    }
    (out / "selection.json").write_text(json.dumps(selection, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(selection, indent=2))

    with tarfile.open(out / "runs.tar.gz", "w:gz") as archive:
        for path in sorted(runs.rglob("*")):
            if path.is_file() and path.suffix != ".pt":
                archive.add(path, arcname=str(path.relative_to(runs)))
    if chosen is not None:
        for fold in range(FOLDS):
            member = runs / f"{chosen}_f{fold}"
            with tarfile.open(out / f"{member.name}.tar", "w") as archive:
                for path in sorted(member.iterdir()):
                    if path.name != TRAIN_STATE_FILE:
                        archive.add(path, arcname=f"{member.name}/{path.name}")
    return 0 if chosen is not None else 1


if __name__ == "__main__":
    sys.exit(main())
