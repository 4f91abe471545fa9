"""Train the fracture branch of one member on FracAtlas, for several candidates at once.

    python -m core.train_fracture --fracatlas PATH --fold K --out runs/fracture_fK [--candidates J G]

Member K of the shipped ensemble keeps its MURA output unchanged (core.model.fracture_net); each
candidate trains its own fracture branch on FracAtlas upper-limb images of every fold but K (the
split file of core.data.fracture_split), with weighted image BCE through the log-sum-exp pool, plus,
for a candidate with an outline weight, core.model.fracture_net.outline_loss on outlined fractures. All
candidates see the same batches and augmentations (one frozen trunk pass feeds every branch), so
their comparison is paired. Fixed epochs, no selection on the held-out fold; after the last epoch
each candidate's held-out fold is predicted (flip TTA) for out-of-fold figures. A weights-only
state after each epoch lets a rerun resume.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from core.data import fracatlas, fracture_split
from core.data.augment import augment, draw_augmentation, warp
from core.data.preprocess import border_fill_value, letterbox, to_model_input
from core.model.fracture_net import TwoOutputNet, lse_pool, outline_loss
from core.model.registry import create_model, get_config
from core.store import atomic
from core.store.artifacts import weights_dir

__all__ = ["CANDIDATES", "FractureConfig", "branch_file", "load_member", "oof_file", "train_fold"]

#: Candidate name -> weight of the outline loss. J: the image label alone; G: label + outlines.
CANDIDATES = {"J": 0.0, "G": 1.0}
#: The shipped ensemble whose members the branches start from and sit on (not "the default model",
#: which may become the fracture model itself).
FRACTURE_BASE_MODEL = "mura_efficientnet_lite0"
STATE_FILE = "fracture_state.pt"
LOG_FILE = "fracture_log.csv"


@dataclass
class FractureConfig:
    """Every setting of one fold's run; all but the runtime ones must match on resume."""

    fracatlas: str
    fold: int
    out: str
    split: str
    base_model: str = FRACTURE_BASE_MODEL
    candidates: tuple[str, ...] = ("J", "G")
    outline_weights: dict[str, float] = field(default_factory=lambda: dict(CANDIDATES))
    epochs: int = 10
    batch_size: int = 32
    max_lr: float = 1e-3
    weight_decay: float = 1e-4
    rotation: float = 30.0
    seed: int = 0
    threads: int = 1
    channels_last: bool = True


_RUNTIME = ("threads", "channels_last")


def branch_file(out: Path, candidate: str) -> Path:
    """Where a candidate's trained branch (state dict, weights only) is written."""
    return out / f"branch_{candidate}.pt"


def oof_file(out: Path, candidate: str) -> Path:
    """Where a candidate's held-out-fold predictions are written."""
    return out / f"oof_{candidate}.csv"


def load_member(base_model: str, fold: int, directory: Path | None = None) -> torch.nn.Module:
    """Member ``fold`` of a shipped ensemble checkpoint, as a single-output network in fp32."""
    checkpoint = torch.load(
        (directory or weights_dir()) / base_model / "checkpoint.pt", map_location="cpu", weights_only=True
    )
    states = checkpoint.get("members") or [checkpoint["state_dict"]]
    member = create_model(checkpoint["arch"])
    member.load_state_dict({k: v.float() for k, v in states[fold].items()})
    return member


def _canvases(
    root: Path, rows: pd.DataFrame, outlines: fracatlas.Outlines, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 letterboxed images, their fill values, and uint8 outline masks on the same canvases."""
    images = torch.empty((len(rows), 1, size, size), dtype=torch.uint8)
    masks = torch.zeros((len(rows), 1, size, size), dtype=torch.uint8)
    fills = torch.empty(len(rows))
    for i, file in enumerate(tqdm(rows["file"].tolist(), desc="decode", unit="img", leave=False)):
        with Image.open(fracatlas.image_file(root, file)) as image:
            pixels = np.asarray(image.convert("L"))
        images[i], placement = letterbox(pixels, size)
        fills[i] = border_fill_value(pixels)
        if outlines.polygons.get(file):
            mask = torch.tensor(outlines.mask(file), dtype=torch.float32)[None, None]
            resized = F.interpolate(mask, size=(placement.height, placement.width), mode="area")
            masks[
                i,
                :,
                placement.top : placement.top + placement.height,
                placement.left : placement.left + placement.width,
            ] = (resized[0] * 255).round().to(torch.uint8)
    return images, fills, masks


class _Run:
    """The branches, optimisers and schedules of every candidate of one fold."""

    def __init__(self, config: FractureConfig, member: torch.nn.Module, steps: int) -> None:
        self.nets = {name: TwoOutputNet(member) for name in config.candidates}
        if config.channels_last:
            for net in self.nets.values():
                net.to(memory_format=torch.channels_last)
        self.optimizers = {
            name: torch.optim.AdamW(net.fracture.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
            for name, net in self.nets.items()
        }
        self.schedules = {
            name: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.max_lr, total_steps=steps, pct_start=0.15)
            for name, opt in self.optimizers.items()
        }

    def state(self) -> dict:
        """Tensors and plain values only, so the state loads with ``weights_only=True``."""
        return {
            name: {
                "branch": self.nets[name].fracture.state_dict(),
                "optimizer": self.optimizers[name].state_dict(),
                "schedule": self.schedules[name].state_dict(),
            }
            for name in self.nets
        }

    def load(self, state: dict) -> None:
        """Restore :meth:`state`'s output."""
        for name in self.nets:
            self.nets[name].fracture.load_state_dict(state[name]["branch"])
            self.optimizers[name].load_state_dict(state[name]["optimizer"])
            self.schedules[name].load_state_dict(state[name]["schedule"])


def _recipe(config: FractureConfig) -> str:
    return json.dumps({k: v for k, v in asdict(config).items() if k not in _RUNTIME}, sort_keys=True)


def train_fold(config: FractureConfig) -> Path:
    """Train every candidate's branch for ``config.fold``; write branches, held-out predictions, log."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    root = fracatlas.resolve_root(config.fracatlas)
    split = fracture_split.read_split(Path(config.split))
    fit, held = fracture_split.training_rows(split, config.fold)
    member = load_member(config.base_model, config.fold)
    arch = get_config("efficientnet_lite0")
    size = 224
    outlines = fracatlas.read_outlines(root)
    images, fills, masks = _canvases(root, fit, outlines, size)
    labels = torch.tensor(fit["fractured"].to_numpy(), dtype=torch.float32)
    positive_share = float(labels.mean())
    # The MURA paper's class weights: each class weighted by the other's share.
    weights = torch.where(labels > 0.5, 1 - positive_share, positive_share)
    steps = config.epochs * (len(fit) // config.batch_size)
    run = _Run(config, member, steps)
    rng = random.Random(config.seed)
    start = 0
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["recipe"] != _recipe(config):
            raise ValueError(f"{state_path} was written with other settings; use a new --out")
        run.load(state["candidates"])
        rng.setstate(_tuple_state(state["python_rng"]))
        torch.set_rng_state(state["torch_rng"])
        start = int(state["epoch"]) + 1
        print(f"resuming after epoch {start}", flush=True)
    trunk = next(iter(run.nets.values()))
    for epoch in range(start, config.epochs):
        started = time.time()
        for net in run.nets.values():
            net.train()
        order = torch.randperm(len(fit))
        totals = dict.fromkeys(run.nets, 0.0)
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(fit) - config.batch_size + 1, config.batch_size)
        ]
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", mininterval=30):
            draws = [draw_augmentation(rng, config.rotation, size) for _ in batch]
            x = torch.stack(
                [augment(images[i], float(fills[i]), d) for i, d in zip(batch.tolist(), draws, strict=True)]
            )
            m = torch.stack([warp(masks[i], 0.0, d) for i, d in zip(batch.tolist(), draws, strict=True)])
            x = to_model_input(x, arch.mean, arch.std)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                shared = trunk.shared_features(x)
            for name, net in run.nets.items():
                score_map = net.fracture.score_map(shared)
                loss = F.binary_cross_entropy_with_logits(
                    lse_pool(score_map).squeeze(1), labels[batch], weight=weights[batch]
                )
                if config.outline_weights[name] > 0:
                    loss = loss + config.outline_weights[name] * outline_loss(score_map, m.float() / 255)
                run.optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                run.optimizers[name].step()
                run.schedules[name].step()
                totals[name] += float(loss.detach()) * len(batch)
        row = {
            "epoch": epoch + 1,
            **{f"loss_{k}": round(v / (len(batches) * config.batch_size), 5) for k, v in totals.items()},
            "seconds": round(time.time() - started, 1),
        }
        _append_log(out / LOG_FILE, row, restart=epoch == 0)
        print(json.dumps(row), flush=True)
        atomic.save_torch(
            {
                "recipe": _recipe(config),
                "epoch": epoch,
                "candidates": run.state(),
                "python_rng": list(_list_state(rng.getstate())),
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )
    held_images, _, _ = _canvases(root, held, outlines, size)
    for name, net in run.nets.items():
        atomic.save_torch(
            {k: v.half() if v.is_floating_point() else v for k, v in net.fracture.state_dict().items()},
            branch_file(out, name),
        )
        probability = _predict_fracture(net, held_images, arch.mean, arch.std)
        frame = held[["file", "region", "fractured", "hardware", "copy_group"]].assign(probability=probability)
        atomic.write_text(oof_file(out, name), frame.to_csv(index=False))
    return out


@torch.inference_mode()
def _predict_fracture(net: TwoOutputNet, canvases: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """P(fracture) with flip TTA, in batches (the branch's weights as trained, fp32)."""
    net.eval()
    out = []
    for start in range(0, len(canvases), 32):
        x = to_model_input(canvases[start : start + 32], mean, std)
        both = [torch.sigmoid(net.fracture(net.shared_features(v))).squeeze(1) for v in (x, torch.flip(x, [-1]))]
        out.append(((both[0] + both[1]) / 2).numpy())
    return np.concatenate(out) if out else np.empty(0)


def _list_state(state: tuple) -> list:
    """random.Random's state as nested lists (a weights-only checkpoint holds no tuples of tuples safely)."""
    return [state[0], list(state[1]), state[2]]


def _tuple_state(state: list) -> tuple:
    return (int(state[0]), tuple(int(v) for v in state[1]), state[2])


def _append_log(path: Path, row: dict, restart: bool) -> None:
    frame = pd.DataFrame([row])
    if restart or not path.exists():
        atomic.write_text(path, frame.to_csv(index=False))
    else:
        atomic.write_text(path, path.read_text(encoding="utf-8") + frame.to_csv(index=False, header=False))
