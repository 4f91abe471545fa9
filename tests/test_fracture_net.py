"""The fracture branch: MURA output untouched, the map is the Grad-CAM, the outline loss moves the peak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core.model.fracture_net import TwoOutputNet, lse_pool, outline_loss, outline_targets
from core.model.registry import create_model


@pytest.fixture(scope="module")
def member() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet_lite0").eval()


def test_lse_pool_lies_between_mean_and_max() -> None:
    score_map = torch.randn(3, 1, 5, 5)
    pooled = lse_pool(score_map).squeeze(1)
    assert torch.all(pooled >= score_map.flatten(1).mean(1) - 1e-6)
    assert torch.all(pooled <= score_map.flatten(1).amax(1) + 1e-6)


def test_outline_targets_spread_sums_to_one_and_skip_empty_masks() -> None:
    masks = torch.zeros(2, 1, 32, 32)
    masks[0, 0, :8, :8] = 1.0
    targets, has_outline = outline_targets(masks, (4, 4))
    assert has_outline.tolist() == [True, False]
    assert targets[0].sum().item() == pytest.approx(1.0)
    assert targets[0].view(4, 4)[0, 0].item() == pytest.approx(1.0)


def test_outline_loss_is_zero_without_outlines_and_lower_when_the_map_peaks_inside() -> None:
    masks = torch.zeros(1, 1, 16, 16)
    assert outline_loss(torch.randn(1, 1, 4, 4), masks).item() == 0.0
    masks[0, 0, 12:, 12:] = 1.0
    inside, outside = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    inside[0, 0, 3, 3], outside[0, 0, 0, 0] = 5.0, 5.0
    assert outline_loss(inside, masks) < outline_loss(outside, masks)


def test_training_on_the_outline_loss_alone_moves_the_peak_to_the_outline() -> None:
    """A known answer: a free map trained against a corner outline ends up peaking in that corner."""
    torch.manual_seed(0)
    score_map = torch.nn.Parameter(torch.randn(1, 1, 7, 7))
    masks = torch.zeros(1, 1, 70, 70)
    masks[0, 0, 50:70, 0:20] = 1.0  # cells (5..6, 0..1)
    optimiser = torch.optim.SGD([score_map], lr=1.0)
    for _ in range(200):
        optimiser.zero_grad()
        outline_loss(score_map, masks).backward()
        optimiser.step()
    row, column = divmod(int(score_map.detach().flatten().argmax()), 7)
    assert row >= 5 and column <= 1


def test_two_output_net_keeps_the_member_output_exactly(member: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = member(x)
        net = TwoOutputNet(member)
        both = net.eval()(x)
    assert both.shape == (2, 2)
    assert torch.equal(both[:, :1], expected)


def test_training_the_branch_moves_neither_mura_weights_nor_statistics(member: torch.nn.Module) -> None:
    net = TwoOutputNet(member)
    before = {k: v.clone() for k, v in net.mura.state_dict().items()}
    optimiser = torch.optim.SGD(net.fracture.parameters(), lr=0.1)
    net.train()
    assert not net.mura.training
    x = torch.randn(2, 3, 224, 224)
    loss = net(x)[:, 1].sum()
    loss.backward()
    optimiser.step()
    assert all(torch.equal(before[k], v) for k, v in net.mura.state_dict().items())
    assert all(p.grad is None for p in net.mura.parameters())
    assert any(p.grad is not None for p in net.fracture.parameters())


def test_grad_cam_at_the_hidden_layer_is_the_branch_score_map(member: torch.nn.Module) -> None:
    """Faithful by construction: Grad-CAM on the fracture output at ``fracture.act`` = ReLU(map - bias)."""
    torch.manual_seed(1)
    net = TwoOutputNet(member).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():  # statistics of this input, so the hidden layer is neither all 0 nor all 6
        features = net.shared_features(x)
        for block in net.fracture._blocks:
            features = block(features)
        hidden = net.fracture.hidden(features)
        net.fracture.bn.running_mean.copy_(hidden.mean((0, 2, 3)))
        net.fracture.bn.running_var.copy_(hidden.var((0, 2, 3)))
    with GradCAM(model=net, target_layers=[net.fracture.act]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
    with torch.no_grad():
        score_map = net.fracture.score_map(net.shared_features(x))[0, 0]
    expected = torch.relu(score_map - net.fracture.score.bias).detach().numpy()
    cell = grayscale.reshape(14, 16, 14, 16).mean(axis=(1, 3))  # the upsampled map, back on its cells
    assert expected.max() > 0
    assert np.unravel_index(cell.argmax(), cell.shape) == np.unravel_index(expected.argmax(), expected.shape)
    assert np.corrcoef(cell.ravel(), expected.ravel())[0, 1] > 0.95
