"""Train a registered architecture on MURA ``train/`` with a patient-level validation split.

    python -m core.train --mura-root PATH --arch mobilenet_v2 --out runs/NAME [--device cuda --workers 6]
    python -m core.train ... --fracatlas PATH   # joint: + FracAtlas upper-limb fractures, second head

The recipe starts from the MURA paper (ImageNet initialisation, lateral flips, rotations up to
30 degrees, BCE weighted per study type) with AdamW and a one-cycle schedule, flip test-time
augmentation for validation, and the operating threshold per study type chosen on the
validation patients (never on ``valid/``). Everything is seeded; a resumable state is written
atomically after each epoch, with a CSV log beside it (rerunning the same command resumes); the
best epoch by validation study AUROC is kept as ``checkpoint.pt`` with its model card. Device
and worker count change the speed, not the augmentation drawn.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from core.data import fracatlas, mura
from core.data.augment import AugmentedCanvases, draw_augmentation, load_canvases
from core.data.preprocess import to_model_input
from core.data.splits import patient_split, patient_subset, split_groups
from core.eval.metrics import study_table
from core.model import prediction as predict
from core.model.card import NEVER_VALID, kfold_description, subset_counts, write_card
from core.model.checkpoint import save_checkpoint
from core.model.registry import ModelConfig, create_model, final_linear_name, get_config
from core.model.thresholds import holdout_summary
from core.store import atomic
from core.store.artifacts import ModelArtifacts

__all__ = [
    "FRACTURE_HOLDOUT",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "TrainingError",
    "predict_canvases",
    "split_description",
    "study_batches",
    "study_type_weights",
    "train",
    "training_card",
]


class TrainingError(Exception):
    """Settings or data that training cannot use; the CLI prints it as one line and exits with 2."""


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
    #: NHWC tensors: about 1.45x faster training on this project's CPUs (EfficientNet-Lite0, fp32);
    #: the same arithmetic in another memory order, so a resumed run may switch it.
    channels_last: bool = False
    #: A near-duplicate audit (core.embeddings' duplicates.csv): patients whose images are copies of
    #: each other are kept on one side of the split, so a copy cannot leak into the holdout.
    #: None splits by patient alone (how the shipped model was split).
    duplicates: str | None = None
    #: Joint training: a FracAtlas root whose upper-limb images join the fitted data with
    #: their fracture label on a second output. Its folds keep copy groups whole and follow
    #: ``folds``/``fold``/``split_seed``; the checkpoint keeps the MURA output only, so the model
    #: ships and ensembles as any other. Leg/hip stays out: it is the scope head's held-out set.
    fracatlas: str | None = None


#: Settings that change where and how fast training runs, not what it computes; a resumed run may
#: change them.
RUNTIME_FIELDS = ("threads", "device", "workers", "channels_last")

#: The dataset name of a joint run's FracAtlas holdout predictions (``predictions_fracatlas_holdout.csv``).
FRACTURE_HOLDOUT = "fracatlas_holdout"
#: Its columns besides ``probability`` (the fracture output's).
FRACTURE_COLUMNS = ("file", "region", "fractured", "hardware", "duplicate_of")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (model initialisation, dropout, shuffles)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def study_type_weights(images: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """MURA paper's per-study-type class weights: (w_abnormal, w_normal) = (|N|, |A|) / total."""
    weights = {}
    for study_type, group in images.groupby("study_type"):
        abnormal = float(group["label"].sum())
        total = float(len(group))
        weights[study_type] = ((total - abnormal) / total, abnormal / total)
    return weights


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


@dataclass
class _Data:
    """The images of one run: all of the chosen body parts, the fitted and held-out rows, and their
    decoded canvases (holdout canvases already on the training device)."""

    images: pd.DataFrame
    fit: pd.DataFrame
    holdout: pd.DataFrame
    fit_canvases: torch.Tensor
    fit_fills: torch.Tensor
    holdout_canvases: torch.Tensor
    #: Joint training only: FracAtlas's fitted rows follow ``fit``'s in the canvases (``head`` 1),
    #: its held-out rows and canvases are scored by the fracture output.
    fracture_fit: pd.DataFrame | None = None
    fracture_holdout: pd.DataFrame | None = None
    fracture_holdout_canvases: torch.Tensor | None = None

    @property
    def fitted(self) -> pd.DataFrame:
        """Every fitted row, in canvas order, with its output (``head``: 0 MURA, 1 FracAtlas)."""
        if self.fracture_fit is None:
            return self.fit.assign(head=0)
        return pd.concat([self.fit.assign(head=0), self.fracture_fit.assign(head=1)], ignore_index=True)


@dataclass
class _Progress:
    """Where a run stands: the next epoch, the best holdout study AUROC so far, training seconds."""

    start_epoch: int = 0
    best_auroc: float = -1.0
    elapsed: float = 0.0


def train(config: TrainConfig) -> Path:
    """Train one model as ``config`` says, resuming from its folder's state; return the folder.

    Raises TrainingError for settings or data it cannot use.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    files = ModelArtifacts(out)
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    if config.fracatlas and config.study_loss:
        raise TrainingError("--fracatlas and --study-loss cannot be combined (FracAtlas labels images, not studies)")
    data = _load_data(config, device)
    fitted = data.fitted
    weights = study_type_weights(fitted)
    model = create_model(config.arch, pretrained=config.pretrained)
    if config.fracatlas:
        model = _with_fracture_output(model)
    # Module.to takes a device and a memory_format together; torch's overloads list them apart.
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    study_plan = _study_plan(config, data.fit)
    steps_per_epoch = _steps_per_epoch(len(fitted), config.batch_size)
    total_steps = sum(map(len, study_plan)) if study_plan else config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=total_steps, pct_start=0.15
    )
    rng = random.Random(config.seed)
    progress = _resume(config, files.train_state, model, optimizer, scheduler, rng)

    labels = torch.tensor(fitted["label"].to_numpy(), dtype=torch.float32)
    positive_w = torch.tensor([weights[t][0] for t in fitted["study_type"]])
    negative_w = torch.tensor([weights[t][1] for t in fitted["study_type"]])
    sample_weights = torch.where(labels > 0.5, positive_w, negative_w).to(device)
    study_codes = torch.tensor(pd.factorize(fitted["study_path"])[0], device=device)
    heads = torch.tensor(fitted["head"].to_numpy(), device=device) if config.fracatlas else None
    labels = labels.to(device)
    dataset = AugmentedCanvases(data.fit_canvases, data.fit_fills)
    for epoch in range(progress.start_epoch, config.epochs):
        started = time.time()
        model.train()
        batches = study_plan[epoch] if study_plan else _image_batches(len(fitted), config.batch_size, steps_per_epoch)
        total_loss = _fit_epoch(
            config,
            model,
            optimizer,
            scheduler,
            dataset,
            batches,
            rng,
            epoch=epoch,
            device=device,
            labels=labels,
            sample_weights=sample_weights,
            study_codes=study_codes if study_plan else None,
            heads=heads,
        )
        holdout_prob = predict_canvases(
            _Output(model, 0) if heads is not None else model, data.holdout_canvases, config.arch, bf16=config.bf16
        )
        studies = study_table(data.holdout.assign(probability=holdout_prob))
        study_auroc = roc_auc_score(studies["label"], studies["probability"])
        progress.elapsed += time.time() - started
        row = {
            "epoch": epoch + 1,
            "train_loss": round(total_loss / len(fitted), 5),
            "holdout_image_auroc": round(roc_auc_score(data.holdout["label"], holdout_prob), 5),
            "holdout_study_auroc": round(study_auroc, 5),
        }
        if heads is not None and data.fracture_holdout is not None and data.fracture_holdout_canvases is not None:
            fracture = data.fracture_holdout[list(FRACTURE_COLUMNS)].assign(
                probability=predict_canvases(
                    _Output(model, 1), data.fracture_holdout_canvases, config.arch, bf16=config.bf16
                )
            )
            # A tiny holdout may hold one class only: no AUROC then, rather than a failed run.
            row["holdout_fracture_auroc"] = (
                round(roc_auc_score(fracture["fractured"], fracture["probability"]), 5)
                if fracture["fractured"].nunique() == 2
                else float("nan")
            )
        row |= {"lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - started, 1)}
        _append_log(files.training_log, row, restart=epoch == 0)
        print(json.dumps(row), flush=True)
        if study_auroc > progress.best_auroc:
            progress.best_auroc = study_auroc
            save_checkpoint(
                files.checkpoint,
                _mura_model(model, config.arch) if heads is not None else model,
                config.arch,
                config.input_size,
            )
            if heads is not None:
                # The fracture output is not in the checkpoint: keep the best epoch's FracAtlas holdout now.
                atomic.write_text(files.predictions(FRACTURE_HOLDOUT), fracture.to_csv(index=False))
        _save_state(files.train_state, config, model, optimizer, scheduler, rng, epoch, progress)

    _write_holdout_and_card(config, files, model, data, weights, progress.elapsed)
    return out


def _load_data(config: TrainConfig, device: torch.device) -> _Data:
    """Read train/, split it by patient and decode the images that will be fitted or scored."""
    root = mura.resolve_root(config.mura_root)
    images = mura.read_images(root, "train")
    images = images[images["study_type"].isin(config.study_types)].reset_index(drop=True)
    if images.empty:
        raise TrainingError(f"no training images of {', '.join(config.study_types)} under {root}")
    # The split has its own seed, so ensemble members trained with different seeds share one holdout.
    duplicates = pd.read_csv(config.duplicates) if config.duplicates else None
    fit_idx, holdout_idx = patient_split(
        images,
        config.holdout_fraction,
        config.split_seed,
        folds=config.folds,
        fold=config.fold,
        groups=split_groups(images, duplicates),
    )
    fit_idx = patient_subset(images, fit_idx, config.train_fraction, config.split_seed)
    # Decode only the images fitted or scored (with --train-fraction the rest are never used).
    used = np.concatenate([fit_idx, holdout_idx])
    canvases, fills = load_canvases([mura.image_file(root, p) for p in images["path"].iloc[used]], config.input_size)
    data = _Data(
        images=images,
        fit=images.iloc[fit_idx],
        holdout=images.iloc[holdout_idx],
        fit_canvases=canvases[: len(fit_idx)],
        fit_fills=fills[: len(fit_idx)],
        holdout_canvases=canvases[len(fit_idx) :].to(device),
    )
    return _add_fracatlas(config, data, device, config.fracatlas) if config.fracatlas else data


def _add_fracatlas(config: TrainConfig, data: _Data, device: torch.device, folder: str) -> _Data:
    """Append FracAtlas's upper-limb images (in ``folder``) of the fitted folds to ``data``; hold out the others."""
    root = fracatlas.resolve_root(folder)
    images = fracatlas.read_images(root)
    images = images[images["upper_limb"]].reset_index(drop=True)
    if images.empty:
        raise TrainingError(f"no FracAtlas upper-limb images under {root}")
    files = images["file"].astype(str).tolist()
    # Copies of one radiograph stay on one side (FracAtlas has no patient identifiers).
    groups = pd.Series(fracatlas.duplicate_groups(root, files))
    fit_idx, holdout_idx = patient_split(
        images, config.holdout_fraction, config.split_seed, folds=config.folds, fold=config.fold, groups=groups
    )
    # Columns the shared fitting code reads: study_type keys the class weights (per region, as
    # MURA's per study type), study_path names each image's own "study".
    images = images.assign(
        label=images["fractured"],
        study_type="FracAtlas " + images["region"].astype(str),
        study_path=images["file"],
        patient=groups,
        duplicate_of=groups,
    )
    canvases, fills = load_canvases([fracatlas.image_file(root, f) for f in files], config.input_size)
    data.fracture_fit, data.fracture_holdout = images.iloc[fit_idx], images.iloc[holdout_idx]
    data.fit_canvases = torch.cat([data.fit_canvases, canvases[fit_idx]])
    data.fit_fills = torch.cat([data.fit_fills, fills[fit_idx]])
    data.fracture_holdout_canvases = canvases[holdout_idx].to(device)
    return data


class _Output(torch.nn.Module):
    """One output column of a joint model, shaped (N, 1) as a single-output model's."""

    def __init__(self, model: torch.nn.Module, column: int) -> None:
        super().__init__()
        self.model, self.column = model, column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.column : self.column + 1]


def _final_linear(model: torch.nn.Module) -> str:
    name = final_linear_name(model)
    if name is None:
        raise TrainingError("joint training needs a model whose classifier ends in a Linear layer")
    return name


def _with_fracture_output(model: torch.nn.Module) -> torch.nn.Module:
    """The model with a second output (fracture) beside its first (MURA abnormal, unchanged)."""
    name = _final_linear(model)
    old = model.get_submodule(name)
    assert isinstance(old, torch.nn.Linear), "final_linear_name names a Linear layer"
    new = torch.nn.Linear(old.in_features, 2)
    with torch.no_grad():
        new.weight[0], new.bias[0] = old.weight[0], old.bias[0]
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, new)
    return model


def _mura_model(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """A single-output copy of a joint model holding its MURA output only (what ships)."""
    name = _final_linear(model)
    state = {key: (value[:1] if key.startswith(name + ".") else value) for key, value in model.state_dict().items()}
    single = create_model(arch)
    single.load_state_dict(state)
    return single


def _steps_per_epoch(images: int, batch_size: int) -> int:
    """Image batches per epoch; a last batch of one image breaks BatchNorm, so it joins the one before."""
    steps = math.ceil(images / batch_size)
    return steps - 1 if images % batch_size == 1 and steps > 1 else steps


def _image_batches(images: int, batch_size: int, steps: int) -> list[list[int]]:
    """One epoch's shuffled image batches (from torch's global generator, as every run has drawn them)."""
    order = torch.randperm(images).tolist()
    return [order[step * batch_size : None if step == steps - 1 else (step + 1) * batch_size] for step in range(steps)]


def _study_plan(config: TrainConfig, fit: pd.DataFrame) -> list[list[list[int]]] | None:
    """With --study-loss, every epoch's whole-study batches, drawn up front from the seed.

    Whole-study batches vary in number per epoch: drawing them all first (a resumed run draws the
    same) tells the learning-rate schedule its length.
    """
    if not config.study_loss:
        return None
    generator = torch.Generator().manual_seed(config.seed)
    studies = fit["study_path"].tolist()
    return [study_batches(studies, config.batch_size, generator) for _ in range(config.epochs)]


def _resume(
    config: TrainConfig,
    state_path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: random.Random,
) -> _Progress:
    """Restore model, optimiser, schedule and generators from the folder's state, if it has one.

    The state is read with ``weights_only=True`` (tensors and plain values only): a planted
    ``train_state.pt`` whose pickle would run code is refused in one sentence, never run.
    """
    if not state_path.is_file():
        return _Progress()
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = state["config"]
        # A JSON string since states were loaded weights-only; a plain dict in states written before.
        saved = json.loads(saved) if isinstance(saved, str) else saved
        # Through TrainConfig, so a state saved before a setting existed reads it at its default.
        recipe = _recipe(json.loads(json.dumps(asdict(TrainConfig(**saved)))))
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, the run stops with one sentence
        raise TrainingError(
            f"{state_path} is not a training state this version can resume (it holds more than "
            f"tensors and plain values, or is damaged: {type(exc).__name__}); use a new --out"
        ) from exc
    if recipe != _recipe(json.loads(json.dumps(asdict(config)))):
        raise TrainingError(f"{state_path} was written with other settings; use a new --out")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        version, internal, gauss = state["python_rng"]
        rng.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(state["torch_rng"])
        progress = _Progress(int(state["epoch"]) + 1, float(state["best_auroc"]), float(state["elapsed"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"{state_path} is damaged ({type(exc).__name__}); use a new --out") from exc
    print(f"resuming after epoch {progress.start_epoch} (best holdout study AUROC {progress.best_auroc:.4f})")
    return progress


def _fit_epoch(
    config: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dataset: AugmentedCanvases,
    batches: list[list[int]],
    rng: random.Random,
    *,
    epoch: int,
    device: torch.device,
    labels: torch.Tensor,
    sample_weights: torch.Tensor,
    study_codes: torch.Tensor | None,
    heads: torch.Tensor | None = None,
) -> float:
    """One pass over ``batches``; returns the summed per-image loss. ``study_codes`` selects the study
    loss; ``heads`` (joint training) the output each image's loss falls on."""
    arch_config = get_config(config.arch)
    keys = [[(i, draw_augmentation(rng, config.rotation, config.input_size)) for i in batch] for batch in batches]
    # Its own generator: a DataLoader seeds its workers from the global one otherwise, which
    # would shift every later draw (permutations, dropout) from those of earlier runs.
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=keys,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )
    total_loss = 0.0
    bar = tqdm(
        zip(batches, loader, strict=True),
        total=len(batches),
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="batch",
        mininterval=10,
    )
    for batch, augmented in bar:
        augmented = augmented.to(device, non_blocking=True)
        target = labels[batch] * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
        # bf16 autocast trains about 3x faster on this CPU (AVX512-BF16); weights stay fp32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            inputs = to_model_input(augmented, arch_config.mean, arch_config.std)
            if config.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            outputs = model(inputs).float()
        logits = outputs.squeeze(1) if heads is None else outputs.gather(1, heads[batch].unsqueeze(1)).squeeze(1)
        if study_codes is not None:
            loss = _study_loss(logits, target, sample_weights[batch], study_codes[batch])
        else:
            loss = F.binary_cross_entropy_with_logits(logits, target, weight=sample_weights[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach()) * len(batch)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return total_loss


def _save_state(
    path: Path,
    config: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: random.Random,
    epoch: int,
    progress: _Progress,
) -> None:
    """Everything a rerun needs to continue after ``epoch`` as if never stopped, written atomically."""
    atomic.save_torch(
        {
            "config": json.dumps(asdict(config)),  # plain text: the state loads with weights_only=True
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_auroc": progress.best_auroc,
            "elapsed": progress.elapsed,
            "python_rng": _plain_rng_state(rng),
            "torch_rng": torch.get_rng_state(),
        },
        path,
    )


def _plain_rng_state(rng: random.Random) -> tuple[int, list[int], float | None]:
    """A Python generator's state as plain values (its version, 625 ints, the cached gauss draw)."""
    version, internal, gauss = rng.getstate()
    return version, list(internal), gauss


def _write_holdout_and_card(
    config: TrainConfig,
    files: ModelArtifacts,
    model: torch.nn.Module,
    data: _Data,
    weights: dict[str, tuple[float, float]],
    elapsed: float,
) -> None:
    """Holdout predictions of the best epoch, its thresholds and the model card."""
    # Thresholds come from the shipped (fp16-stored, fp32-run) weights, exactly as users will run them.
    shipped = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    if config.fracatlas:
        model = create_model(config.arch).to(data.holdout_canvases.device)
    model.load_state_dict({k: v.float() for k, v in shipped["state_dict"].items()})
    frame = data.holdout[["path", "study_type", "patient", "study", "study_path", "label"]].assign(
        probability=predict_canvases(model, data.holdout_canvases, config.arch)
    )
    atomic.write_text(files.holdout_predictions, frame.to_csv(index=False))
    thresholds, holdout_metrics = holdout_summary(pd.read_csv(files.holdout_predictions))
    log = pd.read_csv(files.training_log)
    card = training_card(
        config,
        get_config(config.arch),
        name=files.directory.name,
        images=data.images,
        fit=data.fit,
        holdout=data.holdout,
        class_weights=weights,
        elapsed=elapsed,
        thresholds=thresholds,
        holdout_metrics=holdout_metrics,
        best_epoch=int(log.loc[log["holdout_study_auroc"].idxmax(), "epoch"]),
        fracture_fit=data.fracture_fit,
        fracture_holdout=data.fracture_holdout,
    )
    write_card(files.card, card)


def _recipe(config: dict) -> dict:
    """A config without its runtime settings: what must match for a run to resume."""
    return {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}


def _study_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, study_codes: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE on each study's mean view probability (views of a study share label and weight)."""
    # Hand-written: no library pools per-group probabilities before a loss; index_add_ sums by study.
    _, group = torch.unique(study_codes, return_inverse=True)
    count = torch.zeros(int(group.max()) + 1, device=logits.device).index_add_(0, group, torch.ones_like(logits))

    def per_study(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(count).index_add_(0, group, values) / count

    probability = per_study(torch.sigmoid(logits)).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(probability, per_study(targets), weight=per_study(weights))


def _append_log(path: Path, row: dict, restart: bool) -> None:
    mode = "w" if restart or not path.exists() else "a"
    with path.open(mode, newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if mode == "w":
            writer.writeheader()
        writer.writerow(row)


def split_description(config: TrainConfig) -> str:
    """How the holdout was drawn, in the words the model card uses."""
    if config.folds > 1:
        split = f"{kfold_description(config.folds, config.split_seed)}, fold {config.fold} held out"
    else:
        split = (
            f"patient-level GroupShuffleSplit, {config.holdout_fraction:.0%} of patients held out, "
            f"seed {config.split_seed}"
        )
    if config.train_fraction < 1:
        split += f"; fitted on {config.train_fraction:.0%} of the other patients (seeded shuffle)"
    return f"{split}; {NEVER_VALID}"


def _machine_description(config: TrainConfig) -> str:
    if torch.device(config.device).type == "cuda":
        return f"{torch.cuda.get_device_name(config.device)} GPU, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {config.threads} threads, torch {torch.__version__}"


def training_card(
    config: TrainConfig,
    architecture: ModelConfig,
    *,
    name: str,
    images: pd.DataFrame,
    fit: pd.DataFrame,
    holdout: pd.DataFrame,
    class_weights: dict[str, tuple[float, float]],
    elapsed: float,
    best_epoch: int,
    thresholds: dict[str, float],
    holdout_metrics: dict[str, dict],
    fracture_fit: pd.DataFrame | None = None,
    fracture_holdout: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The card of one core.train run at its best epoch: data, recipe, holdout metrics and thresholds.

    ``fracture_fit``/``fracture_holdout``: a joint run's FracAtlas rows (its second, unshipped output).
    """
    card: dict[str, Any] = {
        "name": name,
        "architecture": config.arch,
        "description": architecture.description,
        "initialisation": architecture.initialisation if config.pretrained else "random",
        "input": f"{config.input_size}x{config.input_size} greyscale letterboxed (padding = median border value), "
        "copied to 3 channels, normalised as the pretrained weights expect",
        "output": "one logit; sigmoid = probability the radiograph is abnormal; study = mean of its views",
        "training_data": {
            "source": "MURA v1.1 train/ (Stanford AIMI), study types " + ", ".join(config.study_types),
            "all": subset_counts(images),
            "fit": subset_counts(fit),
            "holdout": subset_counts(holdout),
            "split": split_description(config),
        },
        "recipe": {k: v for k, v in asdict(config).items() if k not in ("mura_root", "out", "fracatlas")}
        | {
            "optimizer": "AdamW",
            "schedule": "one-cycle",
            "loss": ("BCE on each study's mean view probability" if config.study_loss else "BCE on each image")
            + ", weighted per study type (MURA paper)",
            "class_weights": {
                t: {"abnormal": round(a, 4), "normal": round(n, 4)} for t, (a, n) in class_weights.items()
            },
            "augmentation": f"lateral flip, rotation up to ±{config.rotation:g}°, scale 0.9-1.15, shift ±6%, "
            "brightness/contrast ±20%",
            "test_time_augmentation": "mean of the image and its lateral flip",
            "selection": "epoch with the best holdout study AUROC",
        },
        "training_time_seconds": round(elapsed),
        "training_machine": _machine_description(config),
        "best_epoch": best_epoch,
        "holdout_metrics": holdout_metrics,
        "thresholds": thresholds,
        "threshold_rule": "maximise study-level Cohen's kappa on the holdout patients of train/",
        "tta": True,
        "limitations": [
            "Trained only on "
            + " and ".join(t.removeprefix("XR_").lower() for t in config.study_types)
            + " radiographs; other body parts are out of distribution.",
            "MURA's 'abnormal' label includes metal hardware; the model leans on it.",
            "Research and teaching tool; not a medical device and not for diagnosis.",
        ],
    }
    if fracture_fit is not None and fracture_holdout is not None:
        card["training_data"]["fracatlas"] = {
            "source": "FracAtlas upper-limb radiographs (CC BY 4.0), fracture label, on a second output that "
            "the checkpoint does not keep",
            "fit_images": int(len(fracture_fit)),
            "fit_fractured": int(fracture_fit["label"].sum()),
            "holdout_images": int(len(fracture_holdout)),
            "split": "copy groups kept whole, same folds and seed as the MURA split",
        }
    return card
