"""Out-of-fold study AUROC of one recipe fitted on growing fractions of train/: would more data help?

    python scripts/learning_curve.py --runs runs 0.25=curve_p25 0.5=curve_p50 1=lite0_cv4

Each NAME is a K-fold cross-validation (``RUNS/NAME_f0`` .. ``NAME_f{K-1}``, as ``core.train
--folds K --fold k [--train-fraction F]`` writes them). Every fraction is scored on the same
out-of-fold patients, so the points differ by training data alone. Per body part it prints the
study AUROC with a bootstrap 95% interval over studies, the paired difference from the largest
fraction, each fold's best epoch (a best epoch at the last one says the schedule, not the data,
may be what is short), and a power-law fit of the error, ``1 - AUROC = c * images^-alpha`` (the
usual learning-curve shape), extrapolated to the images an AUROC of ``--target`` would take: an
extrapolation from a few points, to be read as an order of magnitude, and a low one, since the fit
lets the error fall to zero while label noise puts a floor under it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.eval.comparison import paired_auroc_difference  # noqa: E402
from core.eval.metrics import DEFAULT_N_BOOT, auroc, bootstrap_ci, study_table  # noqa: E402
from core.model.card import ModelCardError, read_card  # noqa: E402
from core.model.ensemble import is_cross_validation, out_of_fold  # noqa: E402
from core.store.artifacts import ModelArtifacts  # noqa: E402


def cross_validation(runs: Path, name: str) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    """Out-of-fold image predictions, mean fitted images per body part, and each fold's best epoch.

    Every fold of the split must be finished (core.train writes the card last): a partial
    cross-validation would score a fraction on fewer patients than the others.
    """

    def finished_card(fold: int) -> dict:
        card = ModelArtifacts(runs / f"{name}_f{fold}").card
        if not card.is_file():
            raise SystemExit(
                f"error: fold {fold} of {name} has not finished ({card} is missing); "
                "a curve needs finished cross-validations"
            )
        try:
            return read_card(card)
        except ModelCardError as exc:
            raise SystemExit(f"error: {exc}") from exc

    first = finished_card(0)
    cards = [first] + [finished_card(fold) for fold in range(1, first["recipe"]["folds"])]
    holdouts = [pd.read_csv(ModelArtifacts(runs / f"{name}_f{fold}").holdout_predictions) for fold in range(len(cards))]
    if not is_cross_validation(cards, holdouts):
        raise SystemExit(f"error: {name} is not a K-fold cross-validation (core.train --folds K)")
    fitted = {
        t: sum(card["training_data"]["fit"][t]["images"] for card in cards) / len(cards)
        for t in first["training_data"]["fit"]
    }
    best_epochs = [f"{card['best_epoch']}/{card['recipe']['epochs']}" for card in cards]
    return out_of_fold(holdouts), fitted, best_epochs


def power_law(images: np.ndarray, aurocs: np.ndarray) -> tuple[float, float]:
    """(c, alpha) of ``1 - AUROC = c * images^-alpha``, least squares in log-log space."""
    if len(np.unique(images)) < 2:
        raise ValueError("a power law needs at least two different training-set sizes")
    slope, intercept = np.polyfit(np.log(images), np.log(1.0 - aurocs), 1)
    return float(np.exp(intercept)), float(-slope)


def images_for(target: float, c: float, alpha: float) -> float:
    """Images the fitted power law needs for an AUROC of ``target`` (infinite if it is flat or falling)."""
    return float((c / (1.0 - target)) ** (1.0 / alpha)) if alpha > 0 else float("inf")


def learning_curve(runs: Path, curve: dict[float, str], *, target: float, n_boot: int) -> dict:
    """Every fraction's out-of-fold study AUROC per body part, with intervals and the power-law fit."""
    loaded = {fraction: cross_validation(runs, name) for fraction, name in sorted(curve.items())}
    largest = max(loaded)
    scored = {fraction: set(frame["study_path"]) for fraction, (frame, _, _) in loaded.items()}
    if any(studies != scored[largest] for studies in scored.values()):
        raise SystemExit("error: the cross-validations hold out different studies; a curve compares one split")
    result: dict = {"target": target, "body_parts": {}}
    for study_type in sorted(loaded[largest][1]):
        tables = {f: study_table(frame[frame["study_type"] == study_type]) for f, (frame, _, _) in loaded.items()}
        points = []
        for fraction, (_, fitted, best_epochs) in loaded.items():
            studies = tables[fraction]
            interval = bootstrap_ci(studies, lambda t: auroc(t["label"], t["probability"]), n_boot=n_boot)
            row = {
                "fraction": fraction,
                "fitted_images": round(fitted[study_type], 1),
                "studies": int(len(studies)),
                "study_auroc": round(interval.point, 4),
                "ci95": [round(interval.low, 4), round(interval.high, 4)],
                "best_epochs": best_epochs,
            }
            if fraction != largest:
                difference = paired_auroc_difference(tables[largest], studies, n_boot=n_boot)
                row["largest_minus_this"] = [
                    round(difference.point, 4),
                    round(difference.low, 4),
                    round(difference.high, 4),
                ]
            points.append(row)
        c, alpha = power_law(
            np.array([p["fitted_images"] for p in points]), np.array([p["study_auroc"] for p in points])
        )
        result["body_parts"][study_type] = {
            "points": points,
            "power_law": {"c": round(c, 4), "alpha": round(alpha, 4)},
            "images_for_target": round(images_for(target, c, alpha)),
        }
    return result


def _curve_argument(text: str) -> tuple[float, str]:
    fraction, _, name = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected FRACTION=NAME, got {text!r}")
    return float(fraction), name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "curve",
        nargs="+",
        type=_curve_argument,
        metavar="FRACTION=NAME",
        help="a cross-validation's training fraction and run name, e.g. 0.5=curve_p50",
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--target", type=float, default=0.95, help="study AUROC to extrapolate to")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if len(args.curve) < 2:
        parser.error("a curve needs at least two fractions")
    result = learning_curve(args.runs, dict(args.curve), target=args.target, n_boot=args.n_boot)
    for study_type, part in result["body_parts"].items():
        print(
            f"\n{study_type}: power law alpha {part['power_law']['alpha']}, "
            f"about {part['images_for_target']:,} images for study AUROC {args.target}"
        )
        print(pd.DataFrame(part["points"]).to_string(index=False))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
