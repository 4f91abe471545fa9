"""core.trust: the sanity checks and faithfulness metrics on hand-built models with known answers,
the CLI's cache (resume, integrity), and the shipped model's committed cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import core.eval.trust as trust
from core import trust as trust_cli
from core.cam.explain import explain
from core.data.preprocess import letterbox, to_model_input
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel
from core.model.registry import ModelConfig, get_config
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, CachePairError, ModelArtifacts
from tests.fake_mura import make_fake_mura
from tests.synthetic import calibrated_mobilenet

SIZE = 16
LAYER = "grey level"


class EvidenceNet(nn.Module):
    """logit = sum over locations of W(x, y) * grey(x, y): the evidence of each pixel is known exactly.

    ``features`` (a 1x1 convolution averaging the three channels) is the CAM layer; the head is one
    linear layer over the flattened map, whose weights are W. HiResCAM at ``features`` is
    ReLU(gradient x activation) = ReLU(W * grey): the positive evidence itself.
    """

    def __init__(self, evidence: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        nn.init.constant_(self.features.weight, 1 / 3)
        self.head = nn.Linear(SIZE * SIZE, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(evidence.reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def _evidence_model() -> LoadedModel:
    """Positive weight on a bright square in the upper left, nothing elsewhere."""
    evidence = torch.zeros(SIZE, SIZE)
    evidence[2:8, 2:8] = 0.05
    model = EvidenceNet(evidence).eval().requires_grad_(False)
    # mean 0, std 1: the normalised grey level is the pixel / 255, never negative.
    config = ModelConfig(
        name="evidence",
        builder=lambda _p: EvidenceNet(evidence),
        input_size=SIZE,
        cam_layers={LAYER: "features"},
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    return LoadedModel("evidence", model, config, SIZE, {}, Path("."))


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(40, 256, size=(SIZE, SIZE), dtype=np.uint8) for _ in range(count)]


def _model_ignoring_map(pixels: np.ndarray) -> np.ndarray:
    """A 'heat map' that is the image's own brightness: the same whatever the model's weights."""
    return pixels.astype(np.float32) / 255.0


# --- map similarity ---------------------------------------------------------------------------------


def test_similarity_of_a_map_with_itself_its_reverse_and_a_flat_map() -> None:
    rng = np.random.default_rng(1)
    heat = rng.random((20, 24)).astype(np.float32)
    assert trust.map_similarity(heat, heat) == pytest.approx((1.0, 1.0))
    rho, _ssim = trust.map_similarity(heat, 1.0 - heat)
    assert rho == pytest.approx(-1.0)
    rho, ssim = trust.map_similarity(heat, np.zeros_like(heat))
    assert rho == 0.0 and ssim < 0.1
    assert np.isnan(trust.map_similarity(np.zeros_like(heat), np.ones_like(heat))[0])
    with pytest.raises(ValueError, match="cannot be compared"):
        trust.map_similarity(heat, heat[:-1])


# --- randomisation ----------------------------------------------------------------------------------


def test_cascade_randomises_the_output_layer_first_then_everything() -> None:
    loaded = _evidence_model()
    trained_head = loaded.model.head.weight.clone()
    assert trust.cascade_cuts(loaded) == [("output layer", ["head"]), ("every layer", ["features", "head"])]
    stages = trust.randomised_models(loaded, seed=0)
    assert [label for label, _ in stages] == ["output layer", "every layer"]
    top, every = (model.model for _label, model in stages)
    assert torch.equal(top.features.weight, loaded.model.features.weight)  # untouched below the cut
    assert not torch.equal(top.head.weight, loaded.model.head.weight)
    assert torch.equal(every.head.weight, top.head.weight)  # cumulative: the top keeps its draw
    assert not torch.equal(every.features.weight, loaded.model.features.weight)
    assert torch.equal(loaded.model.head.weight, trained_head)  # the trained model itself is never changed


def test_the_true_evidence_passes_and_a_map_that_ignores_the_model_fails() -> None:
    loaded = _evidence_model()
    randomised = trust.randomised_models(loaded, seed=0)
    rows = []
    for index, pixels in enumerate(_images(12)):
        measured = trust.image_rows(
            loaded, pixels, methods=["HiResCAM"], layers=[LAYER], faithfulness_layers=[], randomised=randomised
        )
        # HiResCAM here is exactly the positive evidence W * grey (min-max scaled).
        evidence = np.clip(loaded.model.head.weight.reshape(SIZE, SIZE).numpy() * pixels / 255.0, 0, None)
        expected = evidence / evidence.max()
        np.testing.assert_allclose(
            explain(loaded, pixels, method="HiResCAM", layers=[LAYER]).heatmap, expected, atol=1e-5
        )
        rows += [
            {"image": f"i{index}", "source": "test", "part": "toy", "label": 0, **row, "seconds": 0.0}
            for row in measured
        ]
        # The model-ignoring map is identical before and after randomising: rank correlation 1.
        ignored = _model_ignoring_map(pixels)
        rho, ssim = trust.map_similarity(ignored, ignored)
        rows.append(
            {
                "image": f"i{index}",
                "source": "test",
                "part": "toy",
                "label": 0,
                "method": "brightness",
                "layer": LAYER,
                "probability": 0.5,
                "logit_spearman": rho,
                "logit_ssim": ssim,
                "spearman_s1": rho,
                "ssim_s1": ssim,
                "spearman_s2": rho,
                "ssim_s2": ssim,
                "seconds": 0.0,
            }
        )
    summary = trust.summary_of(
        pd.DataFrame(rows), stages=["output layer", "every layer"], layer_order=[LAYER], n_boot=200
    )
    verdicts = {g["method"]: (g["randomisation"], g["logit_check"]) for g in summary["groups"]}
    assert verdicts == {"HiResCAM": ("passes", "passes"), "brightness": ("fails", "fails")}
    sentences = trust.method_verdicts(summary)
    assert "passes the randomisation check" in sentences["HiResCAM"]
    assert "not reading the model" in sentences["brightness"]
    assert "does not know the class" in sentences["brightness"]


def _calibrated_mobilenet() -> LoadedModel:
    """A random MobileNetV2 whose batch-norm statistics come from random images (so CAMs vary)."""
    return LoadedModel("mobilenet_test", calibrated_mobilenet(), get_config("mobilenet_v2"), 64, {}, Path("."))


def test_a_class_agnostic_method_fails_the_logit_check() -> None:
    loaded = _calibrated_mobilenet()
    pixels = np.random.default_rng(3).integers(0, 256, size=(60, 50), dtype=np.uint8)
    layer = "stage 5 (96 ch, stride 16)"
    rows = trust.image_rows(
        loaded, pixels, methods=["GradCAM", "FEM"], layers=[layer], faithfulness_layers=[], randomised=[]
    )
    by_method = {row["method"]: row for row in rows}
    assert by_method["FEM"]["logit_spearman"] == pytest.approx(1.0)  # the same map for either class
    assert by_method["GradCAM"]["logit_spearman"] < 0.5  # P(normal) weighs the channels the other way


# --- faithfulness -----------------------------------------------------------------------------------


def _probability(loaded: LoadedModel, pixels: np.ndarray) -> float:
    canvas, _ = letterbox(pixels, loaded.input_size)
    with torch.inference_mode():
        return float(torch.sigmoid(loaded.model(to_model_input(canvas, loaded.config.mean, loaded.config.std)[None])))


def test_deletion_and_insertion_reward_the_true_evidence_over_its_reverse() -> None:
    loaded = _evidence_model()
    pixels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    pixels[2:8, 2:8] = 230  # bright where the evidence is, black elsewhere
    truth = explain(loaded, pixels, method="HiResCAM", layers=[LAYER]).heatmap
    (true_deletion, true_insertion), (reverse_deletion, reverse_insertion) = trust.perturbation_aucs(
        loaded, pixels, [truth, 1.0 - truth], steps=8
    )
    assert true_deletion < reverse_deletion
    assert true_insertion > reverse_insertion  # blurring spreads the square out; its pixels restore it

    # Exact for the true map: its 36 pixels go first, 32 of them at the first eighth, then all.
    def probability(pixels_left: int) -> float:
        return float(1.0 / (1.0 + np.exp(-0.05 * pixels_left * 230 / 255)))

    curve = [probability(36), probability(4)] + [0.5] * 7
    assert true_deletion == pytest.approx(np.trapezoid(curve, np.linspace(0, 1, 9)), abs=1e-5)


def test_a_model_that_ignores_the_image_gives_flat_curves_and_no_confidence_change() -> None:
    loaded = _evidence_model()
    loaded.model.head.weight.zero_()  # P = 0.5 whatever the input
    pixels = _images(1)[0]
    heat = np.random.default_rng(2).random((SIZE, SIZE)).astype(np.float32)
    [(deletion, insertion)] = trust.perturbation_aucs(loaded, pixels, [heat])
    assert deletion == pytest.approx(0.5) and insertion == pytest.approx(0.5)
    [(drop, increase)] = trust.confidence_changes(loaded, pixels, [heat], 0.5)
    assert drop == 0.0 and increase == 0.0


def test_confidence_change_of_the_whole_image_and_of_the_evidence() -> None:
    loaded = _evidence_model()
    pixels = _images(1)[0]
    probability = _probability(loaded, pixels)
    evidence = np.zeros((SIZE, SIZE), dtype=np.float32)
    evidence[2:8, 2:8] = 1.0
    elsewhere = 1.0 - evidence
    (whole_drop, whole_increase), (kept_drop, _), (lost_drop, _) = trust.confidence_changes(
        loaded, pixels, [np.ones((SIZE, SIZE), np.float32), evidence, elsewhere], probability
    )
    assert whole_drop == pytest.approx(0.0, abs=1e-4) and whole_increase == 0.0
    assert kept_drop == pytest.approx(0.0, abs=1e-4)  # keeping the evidence keeps the logit
    expected = 100.0 * (probability - 0.5) / probability  # removing it leaves logit 0: P = 0.5
    assert lost_drop == pytest.approx(expected, rel=1e-3)


def test_identical_maps_are_judged_once_and_get_the_same_rank() -> None:
    agreement = {"values": {"deletion_auc": {"A": 0.2, "B": 0.2, "C": 0.1}}}
    assert [trust.rank_of(agreement, "deletion_auc", m) for m in "ABC"] == [2, 2, 1]


# --- the CLI and its cache --------------------------------------------------------------------------


@pytest.fixture
def model_folder(tmp_path: Path, scratch_weights: Path, monkeypatch: pytest.MonkeyPatch) -> ModelArtifacts:
    """A private copy of the scratch model (checkpoint and card only), as MURA_LENS_WEIGHTS_DIR."""
    weights = tmp_path / "weights"
    (weights / DEFAULT_MODEL).mkdir(parents=True)
    for name in ("checkpoint.pt", "model_card.json"):
        (weights / DEFAULT_MODEL / name).write_bytes((scratch_weights / DEFAULT_MODEL / name).read_bytes())
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    return ModelArtifacts.of(DEFAULT_MODEL, weights)


@pytest.mark.slow  # the trust CLI end to end, twice
def test_cli_writes_resumes_and_guards_its_cache(
    tmp_path: Path, model_folder: ModelArtifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_fake_mura(tmp_path / "mura", patients_per_type=3)
    args = [
        "--mura-root",
        str(root),
        "--per-part",
        "2",
        "--fracatlas-n",
        "0",
        "--methods",
        "GradCAM",
        "LayerCAM",
        "--layers",
        "last conv (1280 ch, stride 32)",
        "stage 5 (96 ch, stride 16)",
        "--bootstrap",
        "50",
    ]
    assert trust_cli.main(args) == 0
    cache = trust.read_cache(model_folder)
    assert cache is not None
    assert set(cache.table["part"]) == {"XR_HUMERUS", "XR_FOREARM"} and cache.table["image"].nunique() == 4
    assert len(cache.table) == 4 * 2 * 2
    assert cache.table["image"].str.startswith("MURA-v1.1/valid/").all()  # official paths, no pixels
    judged = cache.table.dropna(subset=["deletion_auc"])
    assert set(judged["layer"]) == {"last conv (1280 ch, stride 32)"}  # the default layer only
    summary = cache.summary
    assert summary["n_images"] == 4 and summary["stages"][0] == "output layer"
    assert set(trust.method_verdicts(summary)) == {"GradCAM", "LayerCAM"}
    assert trust.headline(model_folder).startswith("Over 4 radiographs")

    # Resuming measures nothing new; a larger sample keeps the smaller one's images.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a finished image was measured again")

    monkeypatch.setattr(trust, "image_rows", refuse)
    assert trust_cli.main(args) == 0
    monkeypatch.undo()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(model_folder.directory.parent))
    bigger = trust.sample_images(root, None, study_types=["XR_FOREARM", "XR_HUMERUS"], per_part=3, fracatlas_n=0)
    assert set(cache.table["image"]) <= {s.image for s in bigger}

    # Rows that are not the ones summarised are refused, in one sentence.
    model_folder.trust_rows().write_text(model_folder.trust_rows().read_text() + "\n")
    with pytest.raises(CachePairError, match="is not the table"):
        trust.read_cache(model_folder)
    assert trust.headline(model_folder) is None


def test_cli_refuses_slow_methods_and_unknown_layers(
    tmp_path: Path, model_folder: ModelArtifacts, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_fake_mura(tmp_path / "mura", patients_per_type=1)
    assert trust_cli.main(["--mura-root", str(root), "--methods", "ScoreCAM"]) == 2
    assert "slow" in capsys.readouterr().err
    assert trust_cli.main(["--mura-root", str(root), "--layers", "no such layer"]) == 2
    assert "Unknown layer" in capsys.readouterr().err


# --- the shipped cache ------------------------------------------------------------------------------


def test_the_shipped_models_cache_is_whole_and_judges_every_default_method() -> None:
    files = ModelArtifacts.of(DEFAULT_MODEL, SHIPPED_WEIGHTS_DIR)
    if not files.trust_summary().is_file():
        pytest.skip("no committed trust cache for the shipped model")
    cache = trust.read_cache(files)
    assert cache is not None
    assert set(trust.method_verdicts(cache.summary)) == set(trust.default_methods())
    assert cache.summary["sources"].keys() == {"MURA", "FracAtlas"}
    assert cache.table.groupby("image").size().eq(len(trust.default_methods()) * 2).all()  # every method x layer
    tau = cache.summary["agreement"]["kendall_tau"]
    assert all(line[i] == 1.0 for i, line in enumerate(tau) if line[i] is not None)
