"""Apply the fracture-output rule (docs/experiments.md, "A fracture-aware second output") to the folds.

    python scripts/fracture_outcome.py --fracatlas ../shared/fracatlas [--runs runs] \
        [--out docs/fracture_training/outcome.json]

For candidates J (image label) and G (label + outline loss), on the four held-out folds: fracture AUROC
(copy groups resampled) and, on the held-out outlined fractures, Grad-CAM at the fracture map's hidden
layer (target P(fracture), each image scored by its own fold's member, no flip) against the expert
outline (core.eval.localization: hit within 15 px, energy inside). Paired bootstrap of G minus J, the
decision the rule fixed before any result, and the folds' predictions and logs copied beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tqdm import tqdm

from core.data import fracatlas
from core.data.imaging import load_radiograph
from core.data.preprocess import letterbox, to_model_input
from core.eval import localization
from core.eval.metrics import DEFAULT_N_BOOT, auroc, bootstrap_cis, bootstrap_means
from core.model.fracture_net import TwoOutputNet
from core.model.fracture_training import branch_file, load_member, oof_file
from core.model.registry import get_config

FOLDS = 4
CANDIDATES = ("J", "G")
#: The rule, fixed before any result.
HIT_MARGIN = 0.10
AUROC_TOLERANCE = 0.02


def _auroc_rows(oof: dict[str, pd.DataFrame], n_boot: int) -> dict[str, dict]:
    """AUROC of each candidate and G - J, paired on the same images, copy groups resampled."""
    paired = oof["J"].merge(oof["G"][["file", "probability"]], on="file", suffixes=("_J", "_G"), validate="1:1")
    table = pd.DataFrame(
        {
            "study_path": paired["copy_group"],
            "patient": paired["copy_group"],
            "study": paired["copy_group"],
            "study_type": paired["region"],
            "label": paired["fractured"],
            "probability": paired["probability_J"],
            "probability_G": paired["probability_G"],
        }
    )

    def candidate(column: str):  # noqa: ANN202 - a statistic for bootstrap_cis
        return lambda t: auroc(t["label"], t[column])

    def difference(t: pd.DataFrame) -> float | None:
        g, j = auroc(t["label"], t["probability_G"]), auroc(t["label"], t["probability"])
        return None if g is None or j is None else g - j

    rows = {"upper limb": table} | dict(iter(table.groupby("study_type")))
    return {
        region: {
            "images": int(len(part)),
            "fractured": int(part["label"].sum()),
            **{
                name: value.as_json()
                for name, value in bootstrap_cis(
                    part,
                    {"J": candidate("probability"), "G": candidate("probability_G"), "G_minus_J": difference},
                    n_boot=n_boot,
                    level="image",
                ).items()
            },
        }
        for region, part in rows.items()
    }


def _cam_scores(root: Path, runs: Path, oof: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Hit and energy of each candidate's Grad-CAM on every held-out outlined fracture."""
    outlines = fracatlas.read_outlines(root)
    config = get_config("efficientnet_lite0")
    rows = []
    for fold in range(FOLDS):
        member = load_member("mura_efficientnet_lite0", fold)
        nets = {}
        for name in CANDIDATES:
            net = TwoOutputNet(member)
            state = torch.load(branch_file(runs / f"fracture_f{fold}", name), map_location="cpu", weights_only=True)
            net.fracture.load_state_dict({k: v.float() for k, v in state.items()})
            nets[name] = net.eval()
        held = pd.read_csv(oof_file(runs / f"fracture_f{fold}", "J"))
        files = [f for f in held.loc[held["fractured"] == 1, "file"] if outlines.polygons.get(f)]
        for file in tqdm(files, desc=f"fold {fold}", unit="img"):
            pixels = load_radiograph(fracatlas.image_file(root, file)).pixels
            canvas, placement = letterbox(pixels, 224)
            x = to_model_input(canvas, config.mean, config.std).unsqueeze(0)
            mask = outlines.mask(file)
            region = localization.tolerance_region(mask)
            row = {"file": file, "fold": fold}
            for name, net in nets.items():
                with GradCAM(model=net, target_layers=[net.fracture.act]) as cam:
                    canvas_map = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
                heat = cv2.resize(
                    placement.crop(canvas_map), (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR
                )
                scores = localization.score_map(heat, mask, region=region)
                row |= {f"hit_{name}": scores.hit, f"energy_{name}": scores.energy}
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fracatlas", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT)
    parser.add_argument("--out", type=Path, default=Path("docs/fracture_training/outcome.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    oof = {
        name: pd.concat([pd.read_csv(oof_file(args.runs / f"fracture_f{k}", name)) for k in range(FOLDS)])
        for name in CANDIDATES
    }
    aurocs = _auroc_rows(oof, args.n_boot)
    cams = _cam_scores(args.fracatlas, args.runs, oof)
    columns = ["hit_J", "hit_G", "energy_J", "energy_G"]
    values = cams[columns].to_numpy()
    values = np.column_stack([values, values[:, 1] - values[:, 0], values[:, 3] - values[:, 2]])
    maps = {
        name: value.as_json()
        for name, value in bootstrap_means(
            values, names=[*columns, "hit_G_minus_J", "energy_G_minus_J"], n_boot=args.n_boot
        ).items()
    }
    hit_gain = maps["hit_G_minus_J"]["point"]
    auroc_change = aurocs["upper limb"]["G_minus_J"]["point"]
    chosen = "G" if hit_gain >= HIT_MARGIN and auroc_change >= -AUROC_TOLERANCE else "J"
    outcome = {
        "rule": {"hit_margin": HIT_MARGIN, "auroc_tolerance": AUROC_TOLERANCE, "chosen": chosen},
        "fracture_auroc_out_of_fold": aurocs,
        "outlined_fractures_scored": int(len(cams)),
        "grad_cam_fracture_map_out_of_fold": maps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome, indent=2) + "\n", encoding="utf-8")
    cams.to_csv(args.out.parent / "cam_scores_out_of_fold.csv", index=False)
    for fold in range(FOLDS):
        run = args.runs / f"fracture_f{fold}"
        for source in [*(oof_file(run, name) for name in CANDIDATES), run / "fracture_log.csv"]:
            shutil.copyfile(source, args.out.parent / f"fold{fold}_{source.name}")
    print(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
