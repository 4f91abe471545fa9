"""Train a registered architecture on MURA ``train/`` with a patient-level validation split.

    python -m core.train --mura-root PATH --arch mobilenet_v2 --out runs/NAME [--device cuda --workers 6]

The recipe starts from the MURA paper (ImageNet initialisation, lateral flips, rotations up to
30 degrees, BCE weighted per study type) with AdamW and a one-cycle schedule, flip test-time
augmentation for validation, and the operating threshold per study type chosen on the
validation patients (never on ``valid/``). Everything is seeded; a resumable state is written
atomically after each epoch, with a CSV log beside it (rerunning the same command resumes); the
best epoch by validation study AUROC is kept as ``checkpoint.pt`` with its model card. Device
and worker count change the speed, not the augmentation drawn.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from core import atomic, mura, predict
from core.artifacts import ModelArtifacts
from core.card import DEFAULT_THRESHOLD_KEY, training_card, write_card
from core.metrics import study_table
from core.models import create_model, get_config, save_checkpoint
from core.preprocess import border_fill_value, letterbox, to_model_input

__all__ = ["TrainConfig", "RUNTIME_FIELDS", "Augmentation", "AugmentedCanvases", "augment", "draw_augmentation",
           "split_groups", "patient_split", "patient_subset", "study_batches", "study_type_weights", "choose_threshold",
           "holdout_summary", "main"]


@dataclass
class TrainConfig:
    """Every setting of one run; the recipe part goes into the model card and must match on resume."""

    mura_root: str
    arch: str
    out: str
    study_types: tuple[str, ...] = ("XR_HUMERUS", "XR_FOREARM")
    input_size: int = 320
    epochs: int = 8
    batch_size: int = 32
    max_lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    #: Multiple-instance loss: batches hold whole studies, and the loss falls on each study's
    #: probability (mean of its views, as at inference) rather than on each view, since MURA labels
    #: studies and a normal-looking view of an abnormal study is not itself abnormal.
    study_loss: bool = False
    rotation: float = 30.0
    holdout_fraction: float = 0.15
    #: With ``folds`` > 1 the holdout is fold ``fold`` of a patient-level K-fold split instead
    #: (members trained on every fold give out-of-fold predictions for all of train/).
    folds: int = 0
    fold: int = 0
    #: Fit on this fraction of the training patients only (learning curves: how much would more
    #: data help?); the holdout stays whole, so every fraction is scored on the same patients.
    train_fraction: float = 1.0
    seed: int = 0
    split_seed: int = 0
    threads: int = 2
    bf16: bool = True
    pretrained: bool = True
    #: "cpu" or a CUDA device; the model and holdout canvases go there, augmentation stays on the CPU.
    device: str = "cpu"
    #: DataLoader processes that augment training images (0: in the training process). The draws
    #: are made in order in the training process, so results do not depend on this number.
    workers: int = 0
    #: A near-duplicate audit (core.embeddings' duplicates.csv): patients whose images are copies of
    #: each other are kept on one side of the split, so a copy cannot leak into the holdout.
    #: None splits by patient alone (how the shipped model was split).
    duplicates: str | None = None


#: Settings that change where and how fast training runs, not what it computes; a resumed run may
#: change them.
RUNTIME_FIELDS = ("threads", "device", "workers")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_groups(images: pd.DataFrame, duplicates: pd.DataFrame | None = None) -> pd.Series:
    """The unit a split keeps whole: each image's patient, merged with every patient that shares a
    near-duplicate group with it (``duplicates``: rows of ``key`` = official path and ``group``).

    A merged set is named by its first patient in sorted order, so patients without copies keep
    their own name and the split of a data set without cross-patient copies does not change.
    """
    patients = images["patient"].astype(str)
    if duplicates is None or duplicates.empty:
        return patients
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = np.array(sorted(set(patients)))
    node = {name: i for i, name in enumerate(names)}
    patient_of = dict(zip(images["path"], patients, strict=True))
    linked = duplicates[duplicates["key"].isin(patient_of)]
    first = linked.groupby("group")["key"].transform("first")
    edges = [(node[patient_of[a]], node[patient_of[b]]) for a, b in zip(linked["key"], first, strict=True)]
    rows, columns = (np.array(side, dtype=int) for side in zip(*edges, strict=True)) if edges else ([], [])
    graph = coo_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    leader = pd.Series(names).groupby(component).transform("first").to_numpy()  # names are sorted
    return patients.map(dict(zip(names, leader, strict=True)))


def patient_split(
    images: pd.DataFrame, fraction: float, seed: int, *, folds: int = 0, fold: int = 0,
    groups: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (training, holdout) rows, with every patient on one side only.

    ``folds`` > 1 holds out fold ``fold`` of a shuffled patient-level K-fold split (the folds of
    one seed are disjoint and cover every patient); otherwise a random ``fraction`` of patients.
    ``groups`` (default: the patient; see :func:`split_groups`) is the unit kept whole.
    """
    groups = images["patient"] if groups is None else groups
    if folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(images, groups=groups))[fold]
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train_idx, holdout_idx = next(splitter.split(images, groups=groups))
    return train_idx, holdout_idx


def patient_subset(images: pd.DataFrame, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows of ``indices`` whose patients come first in a seeded shuffle, ``fraction`` of them.

    Smaller fractions are subsets of larger ones (one shuffle, cut at different lengths), so a
    learning curve adds patients rather than swapping them.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    patients = images["patient"].to_numpy()[indices]
    shuffled = np.random.default_rng(seed).permutation(np.unique(patients))
    kept = shuffled[: max(1, round(fraction * len(shuffled)))]
    return indices[np.isin(patients, kept)]


def study_type_weights(images: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """MURA paper's per-study-type class weights: (w_abnormal, w_normal) = (|N|, |A|) / total."""
    weights = {}
    for study_type, group in images.groupby("study_type"):
        abnormal = float(group["label"].sum())
        total = float(len(group))
        weights[study_type] = ((total - abnormal) / total, abnormal / total)
    return weights


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Threshold that maximises Cohen's kappa (the MURA paper's metric) on holdout studies."""
    candidates = np.unique(np.round(probabilities, 4))
    best_threshold, best_kappa = 0.5, -1.0
    for threshold in candidates:
        kappa = cohen_kappa_score(labels, (probabilities >= threshold).astype(int))
        if kappa > best_kappa + 1e-9:
            best_threshold, best_kappa = float(threshold), kappa
    return best_threshold


def study_batches(studies: list[str], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Rows in batches of whole studies (shuffled), each at most ``batch_size`` images unless one
    study is larger; a last batch of one image joins the one before (BatchNorm needs two)."""
    members: dict[str, list[int]] = {}
    for row, study in enumerate(studies):
        members.setdefault(study, []).append(row)
    groups = list(members.values())
    batches: list[list[int]] = []
    for index in torch.randperm(len(groups), generator=generator).tolist():
        if batches and len(batches[-1]) + len(groups[index]) <= batch_size:
            batches[-1].extend(groups[index])
        else:
            batches.append(list(groups[index]))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def _load_canvases(files: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and letterbox every image once; keep uint8 canvases and their fill values."""
    canvases = torch.empty((len(files), 1, size, size), dtype=torch.uint8)
    fills = torch.empty(len(files), dtype=torch.float32)
    for i, path in enumerate(tqdm(files, desc="decode", unit="img", leave=False)):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        canvases[i], _ = letterbox(pixels, size)
        fills[i] = border_fill_value(pixels)
    return canvases, fills


@dataclass(frozen=True)
class Augmentation:
    """One image's draw of the paper's augmentation (lateral flip, rotation) plus mild
    scale/shift/brightness/contrast jitter."""

    flip: bool
    angle: float
    translate: tuple[float, float]
    scale: float
    brightness: float
    contrast: float


def draw_augmentation(rng: random.Random, rotation: float, size: int) -> Augmentation:
    """Draw in the training process, in batch order, from one seeded generator: the images then
    get the same augmentation whichever process or worker applies it."""
    flip = rng.random() < 0.5
    angle = rng.uniform(-rotation, rotation)
    translate = (rng.uniform(-0.06, 0.06) * size, rng.uniform(-0.06, 0.06) * size)
    scale = rng.uniform(0.9, 1.15)
    return Augmentation(flip, angle, translate, scale, rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2))


def augment(canvas: torch.Tensor, fill: float, draw: Augmentation) -> torch.Tensor:
    """Apply one draw to a uint8 canvas; the rotated-in corners take the letterbox fill value."""
    if draw.flip:
        canvas = TF.horizontal_flip(canvas)
    canvas = TF.affine(
        canvas,
        angle=draw.angle,
        translate=list(draw.translate),
        scale=draw.scale,
        shear=[0.0, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
        fill=[fill],
    )
    canvas = TF.adjust_brightness(canvas, draw.brightness)
    return TF.adjust_contrast(canvas, draw.contrast)


class AugmentedCanvases(torch.utils.data.Dataset):
    """Training canvases augmented on the fly; a key is a (row, Augmentation) pair."""

    def __init__(self, canvases: torch.Tensor, fills: torch.Tensor) -> None:
        self.canvases, self.fills = canvases, fills

    def __len__(self) -> int:
        return len(self.canvases)

    def __getitem__(self, key: tuple[int, Augmentation]) -> torch.Tensor:
        row, draw = key
        return augment(self.canvases[row], float(self.fills[row]), draw)


@torch.inference_mode()
def predict_canvases(
    model: torch.nn.Module, canvases: torch.Tensor, arch: str, batch_size: int = 64, bf16: bool = False
) -> np.ndarray:
    """Holdout probabilities with flip test-time augmentation, as the shipped model runs.

    Runs where ``canvases`` are (the model must be there too).
    """
    config = get_config(arch)
    model.eval()
    out = []
    for start in range(0, len(canvases), batch_size):
        with torch.autocast(canvases.device.type, dtype=torch.bfloat16, enabled=bf16):
            batch = to_model_input(canvases[start : start + batch_size], config.mean, config.std)
            out.append(predict.probabilities(model, batch, flip_tta=True).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0)


def train(config: TrainConfig) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    files = ModelArtifacts(out)
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    root = mura.resolve_root(config.mura_root)
    images = mura.read_images(root, "train")
    images = images[images["study_type"].isin(config.study_types)].reset_index(drop=True)
    if images.empty:
        raise SystemExit(f"error: no training images of {', '.join(config.study_types)} under {root}")
    # The split has its own seed, so ensemble members trained with different seeds share one holdout.
    duplicates = pd.read_csv(config.duplicates) if config.duplicates else None
    train_idx, holdout_idx = patient_split(
        images, config.holdout_fraction, config.split_seed, folds=config.folds, fold=config.fold,
        groups=split_groups(images, duplicates),
    )
    train_idx = patient_subset(images, train_idx, config.train_fraction, config.split_seed)
    train_images, holdout_images = images.iloc[train_idx], images.iloc[holdout_idx]
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    # Decode only the images fitted or scored (with --train-fraction the rest are never used).
    used = np.concatenate([train_idx, holdout_idx])
    canvases, fills = _load_canvases([mura.image_file(root, p) for p in images["path"].iloc[used]], config.input_size)
    train_canvases, train_fills = canvases[: len(train_idx)], fills[: len(train_idx)]
    holdout_canvases = canvases[len(train_idx):].to(device)

    weights = study_type_weights(train_images)
    labels = torch.tensor(train_images["label"].to_numpy(), dtype=torch.float32)
    positive_w = torch.tensor([weights[t][0] for t in train_images["study_type"]])
    negative_w = torch.tensor([weights[t][1] for t in train_images["study_type"]])
    sample_weights = torch.where(labels > 0.5, positive_w, negative_w).to(device)
    train_study_codes = torch.tensor(pd.factorize(train_images["study_path"])[0], device=device)
    labels = labels.to(device)

    arch_config = get_config(config.arch)
    model = create_model(config.arch, pretrained=config.pretrained).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    if len(train_idx) % config.batch_size == 1 and steps_per_epoch > 1:
        steps_per_epoch -= 1  # a last batch of one image breaks BatchNorm: it joins the batch before
    # Whole-study batches vary in number per epoch: every epoch's plan is drawn up front from the
    # seed (a resumed run draws the same), so the schedule knows its length.
    study_plan = None
    if config.study_loss:
        plan_generator = torch.Generator().manual_seed(config.seed)
        studies = train_images["study_path"].tolist()
        study_plan = [study_batches(studies, config.batch_size, plan_generator) for _ in range(config.epochs)]
    total_steps = sum(map(len, study_plan)) if study_plan else config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=total_steps, pct_start=0.15
    )
    start_epoch, best_auroc, elapsed = 0, -1.0, 0.0
    rng = random.Random(config.seed)
    state_path = files.train_state
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        # Through TrainConfig, so a state saved before a setting existed reads it at its default.
        if _recipe(asdict(TrainConfig(**state["config"]))) != _recipe(asdict(config)):
            raise SystemExit(f"error: {state_path} was written with other settings; use a new --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_auroc, elapsed = state["epoch"] + 1, state["best_auroc"], state["elapsed"]
        rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming after epoch {start_epoch} (best holdout study AUROC {best_auroc:.4f})")

    dataset = AugmentedCanvases(train_canvases, train_fills)
    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        model.train()
        if study_plan:
            batches = study_plan[epoch]
        else:
            order = torch.randperm(len(train_idx)).tolist()
            size = config.batch_size
            batches = [order[step * size : None if step == steps_per_epoch - 1 else (step + 1) * size]
                       for step in range(steps_per_epoch)]
        keys = [[(i, draw_augmentation(rng, config.rotation, config.input_size)) for i in batch]
                for batch in batches]
        # Its own generator: a DataLoader seeds its workers from the global one otherwise, which
        # would shift every later draw (permutations, dropout) from those of earlier runs.
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=keys, num_workers=config.workers,
                                             pin_memory=device.type == "cuda", generator=torch.Generator())
        total_loss = 0.0
        bar = tqdm(zip(batches, loader, strict=True), total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", mininterval=10)
        for batch, augmented in bar:
            augmented = augmented.to(device, non_blocking=True)
            target = labels[batch] * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
            # bf16 autocast trains about 3x faster on this CPU (AVX512-BF16); weights stay fp32.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(to_model_input(augmented, arch_config.mean, arch_config.std)).squeeze(1).float()
            if study_plan:
                loss = _study_loss(logits, target, sample_weights[batch], train_study_codes[batch])
            else:
                loss = F.binary_cross_entropy_with_logits(logits, target, weight=sample_weights[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(batch)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        holdout_prob = predict_canvases(model, holdout_canvases, config.arch, bf16=config.bf16)
        studies = study_table(holdout_images.assign(probability=holdout_prob))
        image_auroc = roc_auc_score(holdout_images["label"], holdout_prob)
        study_auroc = roc_auc_score(studies["label"], studies["probability"])
        elapsed += time.time() - started
        row = {
            "epoch": epoch + 1,
            "train_loss": round(total_loss / len(train_idx), 5),
            "holdout_image_auroc": round(image_auroc, 5),
            "holdout_study_auroc": round(study_auroc, 5),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.time() - started, 1),
        }
        _append_log(files.training_log, row, restart=epoch == 0)
        print(json.dumps(row), flush=True)
        if study_auroc > best_auroc:
            best_auroc = study_auroc
            save_checkpoint(files.checkpoint, model, config.arch, config.input_size)
        atomic.save_torch(
            {
                "config": asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_auroc": best_auroc,
                "elapsed": elapsed,
                "python_rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )

    # Thresholds come from the shipped (fp16-stored, fp32-run) weights, exactly as users will run them.
    shipped = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in shipped["state_dict"].items()})
    frame = holdout_images[["path", "study_type", "patient", "study", "study_path", "label"]].assign(
        probability=predict_canvases(model, holdout_canvases, config.arch)
    )
    atomic.write_text(files.holdout_predictions, frame.to_csv(index=False))
    thresholds, holdout_metrics = holdout_summary(pd.read_csv(files.holdout_predictions))
    log = pd.read_csv(files.training_log)
    card = training_card(config, arch_config, name=out.name, images=images, fit=train_images, holdout=holdout_images,
                         class_weights=weights, elapsed=elapsed, thresholds=thresholds,
                         holdout_metrics=holdout_metrics,
                         best_epoch=int(log.loc[log["holdout_study_auroc"].idxmax(), "epoch"]))
    write_card(files.card, card)
    return out


def _recipe(config: dict) -> dict:
    """A config without its runtime settings: what must match for a run to resume."""
    return {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}


def _study_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                study_codes: torch.Tensor) -> torch.Tensor:
    """Weighted BCE on each study's mean view probability (views of a study share label and weight)."""
    # Hand-written: no library pools per-group probabilities before a loss; index_add_ sums by study.
    _, group = torch.unique(study_codes, return_inverse=True)
    count = torch.zeros(int(group.max()) + 1, device=logits.device).index_add_(0, group, torch.ones_like(logits))

    def per_study(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(count).index_add_(0, group, values) / count

    probability = per_study(torch.sigmoid(logits)).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(probability, per_study(targets), weight=per_study(weights))


def holdout_summary(holdout: pd.DataFrame) -> tuple[dict[str, float], dict[str, dict]]:
    """Per-body-part thresholds (max study kappa) and study AUROCs on the holdout predictions."""
    studies = study_table(holdout)
    everything = choose_threshold(studies["label"].to_numpy(), studies["probability"].to_numpy())
    thresholds = {DEFAULT_THRESHOLD_KEY: everything}
    metrics = {}
    for study_type, group in studies.groupby("study_type"):
        thresholds[study_type] = choose_threshold(group["label"].to_numpy(), group["probability"].to_numpy())
        predicted = (group["probability"] >= thresholds[study_type]).astype(int)
        metrics[study_type] = {
            "study_auroc": round(roc_auc_score(group["label"], group["probability"]), 4),
            "study_kappa_at_threshold": round(cohen_kappa_score(group["label"], predicted), 4),
            "studies": int(len(group)),
        }
    return thresholds, metrics


def _append_log(path: Path, row: dict, restart: bool) -> None:
    mode = "w" if restart or not path.exists() else "a"
    with path.open(mode, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if mode == "w":
            writer.writeheader()
        writer.writerow(row)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.train``; returns the exit status (2 on bad settings or data)."""
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--out", required=True, help="output folder, e.g. runs/fold0")
    parser.add_argument("--study-types", nargs="+", default=list(TrainConfig.study_types))
    parser.add_argument("--device", default=TrainConfig.device, help="cpu (default) or a CUDA device, e.g. cuda")
    for name in ("input_size", "epochs", "batch_size", "seed", "split_seed", "folds", "fold", "threads", "workers"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(TrainConfig, name))
    for name in ("max_lr", "weight_decay", "label_smoothing", "rotation", "holdout_fraction", "train_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(TrainConfig, name))
    parser.add_argument("--duplicates", help="core.embeddings' duplicates.csv: keep patients sharing copies together")
    parser.add_argument("--study-loss", action="store_true",
                        help="batches of whole studies, loss on each study's mean view probability")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="train in fp32 (bf16 autocast is the default: about 3x faster on AVX512-BF16 CPUs)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="random initialisation instead of torchvision's ImageNet weights")
    args = vars(parser.parse_args(argv))
    args["study_types"] = tuple(args["study_types"])
    try:
        get_config(args["arch"])
        train(TrainConfig(**args))
    except Exception as exc:  # noqa: BLE001 - a CLI prints one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
