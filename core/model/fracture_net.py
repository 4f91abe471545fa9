"""A second output, P(fracture), beside an unchanged MURA network, whose own map is its CAM.

The two-output network keeps a trained single-output EfficientNet-Lite member whole (its logit is
P(abnormal), bit for bit) and adds a *fracture branch* that starts from the member's stride-8
features: a trainable copy of the stride-16 blocks, a 1x1 "hidden" layer, and a 1x1 score layer
that gives one logit per stride-16 cell (14 x 14 at 224 px: about 37 px of a 512 px radiograph).
The image's fracture logit is the log-sum-exp pool of that map. The score layer is linear and the
pool's weights sum to one, so Grad-CAM at the hidden layer *is* ``ReLU(map - bias)``: training the
map against expert outlines trains the map a user sees.

Why a branch rather than joint fine-tuning: the joint run (docs/experiments.md) moved MURA by
+0.001, i.e. not at all; freezing the MURA path makes "MURA no worse" exact instead of a
bootstrap question, and trains in minutes per fold on a CPU since the shared trunk runs without
gradients.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BRANCH_FIRST_BLOCK",
    "BRANCH_LAST_BLOCK",
    "FractureBranch",
    "TwoOutputNet",
    "branch_state",
    "joined_state",
    "lse_pool",
    "outline_loss",
    "outline_targets",
]

#: The branch copies the member's blocks BRANCH_FIRST_BLOCK..BRANCH_LAST_BLOCK (EfficientNet-Lite0's
#: 80- and 112-channel stages, stride 16) and takes the output of the block before as its input.
BRANCH_FIRST_BLOCK = 5
BRANCH_LAST_BLOCK = 10
#: Sharpness of the log-sum-exp pool: 0 would be the mean of the map, infinity its maximum; a
#: fracture covers a few of 196 cells, so the pool leans towards the maximum.
LSE_SHARPNESS = 5.0
HIDDEN_CHANNELS = 128


def lse_pool(score_map: torch.Tensor, sharpness: float = LSE_SHARPNESS) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1): log-mean-exp of ``sharpness * map`` divided by ``sharpness``."""
    flat = score_map.flatten(1) * sharpness
    count = torch.tensor(float(flat.shape[1]), device=flat.device).log()
    return ((torch.logsumexp(flat, dim=1) - count) / sharpness).unsqueeze(1)


class FractureBranch(nn.Module):
    """Stride-16 blocks (copied from a trained member), a 1x1 hidden layer and a 1x1 score map."""

    def __init__(self, blocks: list[nn.Module], in_channels: int, hidden: int = HIDDEN_CHANNELS) -> None:
        super().__init__()
        self._blocks = nn.ModuleList(copy.deepcopy(block) for block in blocks)
        # The copies train even when the source member has been frozen already.
        self._blocks.requires_grad_(True)
        self.hidden = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        #: The default fracture CAM layer: Grad-CAM here equals ReLU(score map - bias).
        self.act = nn.ReLU6()
        self.score = nn.Conv2d(hidden, 1, 1)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, H/8, W/8) stride-8 features -> (N, 1, H/16, W/16) fracture logits per cell."""
        for block in self._blocks:
            features = block(features)
        return self.score(self.act(self.bn(self.hidden(features))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The image's fracture logit, (N, 1)."""
        return lse_pool(self.score_map(features))


def _parts(member: nn.Module) -> Any:
    """An EfficientNet-Lite member's named parts (core.model.registry's wrapper, which imports this
    module, so its type cannot be named here)."""
    return member


class TwoOutputNet(nn.Module):
    """An EfficientNet-Lite member (output 0: abnormal, unchanged) plus a fracture branch (output 1).

    ``mura`` stays in eval mode and holds no gradients, whatever mode the whole network is put in,
    so training the branch cannot move P(abnormal) (its BatchNorm statistics included).
    """

    def __init__(self, mura: nn.Module) -> None:
        super().__init__()
        self.mura = mura
        blocks = list(_parts(mura)._blocks)
        in_channels = blocks[BRANCH_LAST_BLOCK]._project_conv.out_channels
        self.fracture = FractureBranch(blocks[BRANCH_FIRST_BLOCK : BRANCH_LAST_BLOCK + 1], in_channels)
        for parameter in self.mura.parameters():
            parameter.requires_grad_(False)
        self.mura.eval()

    def train(self, mode: bool = True) -> TwoOutputNet:
        """Set the branch's mode; the MURA member stays in eval mode."""
        super().train(mode)
        self.mura.eval()
        return self

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        """The member's stride-8 features, the fracture branch's input."""
        m = _parts(self.mura)
        x = m._stem_act(m._bn0(m._conv_stem(x)))
        for block in m._blocks[:BRANCH_FIRST_BLOCK]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) logits: column 0 abnormal (the member's own), column 1 fracture."""
        m = _parts(self.mura)
        shared = self.shared_features(x)
        deep = shared
        for block in m._blocks[BRANCH_FIRST_BLOCK:]:
            deep = block(deep)
        deep = m._head_act(m._bn1(m._conv_head(deep)))
        abnormal = m._fc(m._dropout(torch.flatten(F.adaptive_avg_pool2d(deep, 1), 1)))
        return torch.cat([abnormal, self.fracture(shared)], dim=1)


#: The attribute names of TwoOutputNet's two parts, the prefixes of its state dict's keys.
_MURA, _BRANCH = "mura.", "fracture."


def branch_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fracture branch's tensors of a TwoOutputNet state dict (keys without the ``fracture.`` prefix):
    what a checkpoint stores beside the name and hash of the base model that holds the MURA part."""
    return {k.removeprefix(_BRANCH): v for k, v in state.items() if k.startswith(_BRANCH)}


def joined_state(mura: dict[str, torch.Tensor], branch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TwoOutputNet state dict from its MURA member's state dict and its branch's (:func:`branch_state`)."""
    return {f"{_MURA}{k}": v for k, v in mura.items()} | {f"{_BRANCH}{k}": v for k, v in branch.items()}


def outline_targets(masks: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Canvas-sized outline masks (N, 1, S, S) in [0, 1] -> (the share of each image's outline in
    each map cell, summing to 1 over the grid; whether the image has any outline at all)."""
    cells = F.adaptive_avg_pool2d(masks.float(), grid).flatten(1)
    total = cells.sum(1, keepdim=True)
    has_outline = total.squeeze(1) > 0
    return cells / total.clamp_min(1e-12), has_outline


def outline_loss(score_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the outline's spread over the cells and the map's spatial softmax.

    It asks where the map peaks, not how high: the image label already sets the level through the
    pool, and the hit rate is a pointing game (where is the maximum). Images without an outline
    (no fracture, or an unoutlined one) add nothing; with none in the batch the loss is 0.
    """
    targets, has_outline = outline_targets(masks, (score_map.shape[-2], score_map.shape[-1]))
    if not bool(has_outline.any()):
        return score_map.sum() * 0.0
    log_share = F.log_softmax(score_map.flatten(1)[has_outline], dim=1)
    return -(targets[has_outline] * log_share).sum(1).mean()
