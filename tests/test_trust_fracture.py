"""core.trust on a two-output model's fracture output: the cascade walks the fracture path, the logit
check compares P(fracture) with P(no fracture), the FracAtlas sample leaves out trained images, and the
committed cache of the fracture-aware model is the one its rule asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import core.eval.trust as trust
from core.cam.explain import OutputLogit, check_target, opposite_target
from core.data import fracture_split
from core.data.preprocess import letterbox, to_model_input
from core.model.checkpoint import LoadedModel
from core.model.fracture_net import TwoOutputNet
from core.model.registry import create_model, get_config
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, ModelArtifacts
from tests.fake_fracatlas import make_fake_fracatlas
from tests.synthetic import synthetic_radiograph

FRACTURE_MODEL = "mura_efficientnet_lite0_fracture"


@pytest.fixture(scope="module")
def two_output() -> LoadedModel:
    """One random two-output member (no checkpoint: the cascade only needs the network's layout)."""
    torch.manual_seed(0)
    network = TwoOutputNet(create_model("efficientnet_lite0").eval()).eval()
    with torch.no_grad():
        network.fracture.score.bias.fill_(-2.0)  # P(fracture) well away from 0.5
    config = get_config("efficientnet_lite0_fracture")
    return LoadedModel("two", network, config, config.input_size, {}, Path("."))


def test_the_fracture_cascade_walks_the_fracture_path(two_output: LoadedModel) -> None:
    stages = trust.cascade_cuts(two_output, "fracture")
    assert [label for label, _ in stages] == [
        "output layer",
        "fracture map (128 ch, stride 16) and up",
        "fracture block 11 (112 ch, stride 16) and up",
        "every layer",
    ]
    assert stages[0][1] == ["fracture.score"]
    assert stages[1][1] == ["fracture.hidden", "fracture.bn", "fracture.score"]
    # Above the shared stride-8 features: the whole branch (MURA's deeper blocks go too; the fracture
    # output never reads them), never the blocks the branch reads from.
    third = stages[2][1]
    assert {p for p in third if p.startswith("fracture.")} == {p for p in stages[3][1] if p.startswith("fracture.")}
    assert not any(p.startswith(f"mura._blocks.{i}.") for p in third for i in range(5))
    # The abnormal output's cascade is the MURA network's own, whatever the branch.
    abnormal = trust.cascade_cuts(two_output, "abnormal")
    assert [label for label, _ in abnormal][1] == "head conv (1280 ch, stride 32) and up"
    assert trust.default_layers(two_output, "fracture") == [
        "fracture map (128 ch, stride 16)",
        "fracture block 11 (112 ch, stride 16)",
    ]
    assert trust.default_layers(two_output, "abnormal") == [
        "head conv (1280 ch, stride 32)",
        "block 11 (112 ch, stride 16)",
    ]


def test_the_first_fracture_stages_change_only_the_fracture_output(two_output: LoadedModel) -> None:
    image = torch.from_numpy(synthetic_radiograph(3, size=224)).float().div(255).expand(1, 3, -1, -1)
    with torch.inference_mode():
        trained = two_output.model(image)
        for label, randomised in trust.randomised_models(two_output, seed=0, target="fracture")[:2]:
            logits = randomised.model(image)
            assert torch.equal(logits[:, 0], trained[:, 0]), label
            assert not torch.equal(logits[:, 1], trained[:, 1]), label


def test_the_logit_check_of_fracture_is_against_no_fracture(two_output: LoadedModel) -> None:
    assert opposite_target("fracture") == "no fracture"
    assert opposite_target("abnormal") == "normal"
    logits = torch.tensor([[1.5, -0.25]])
    assert OutputLogit("no fracture")(logits).item() == 0.25
    assert OutputLogit("fracture")(logits).item() == -0.25
    check_target(two_output, "no fracture")
    single = LoadedModel("one", two_output.model.mura, get_config("efficientnet_lite0"), 224, {}, Path("."))
    with pytest.raises(ValueError, match="not 'no fracture'"):
        check_target(single, "no fracture")


@pytest.mark.parametrize("target", ["fracture", "no fracture"])
def test_confidence_is_measured_against_the_explained_class(two_output: LoadedModel, target: str) -> None:
    """Average Drop compares P(fracture) for "fracture", 1 - P(fracture) for "no fracture": the image
    times a map of ones is the image, so neither drops."""
    pixels = synthetic_radiograph(5, size=96)
    canvas, _placement = letterbox(pixels, two_output.input_size)
    with torch.inference_mode():
        logit = two_output.model(to_model_input(canvas, two_output.config.mean, two_output.config.std)[None])[0, 1]
    probability = float(torch.sigmoid(logit))
    assert abs(probability - 0.5) > 0.05  # else either reading would pass
    whole = np.ones((96, 96), dtype=np.float32)
    (drop, increase), *_ = trust.confidence_changes(two_output, pixels, [whole], probability, target=target)
    assert drop == pytest.approx(0.0, abs=1e-3)
    assert increase == 0.0


def test_the_fracatlas_pool_limits_the_sample(tmp_path: Path) -> None:
    root = make_fake_fracatlas(tmp_path / "fracatlas")
    everything = trust.sample_images(None, root, study_types=[], per_part=0, fracatlas_n=50)
    dropped = {s.image for s in everything[::2]}
    kept = trust.sample_images(
        None,
        root,
        study_types=[],
        per_part=0,
        fracatlas_n=50,
        fracatlas_pool=lambda images: images[~images["file"].isin(dropped)],
    )
    assert kept and not {s.image for s in kept} & dropped


def test_trust_caches_are_kept_per_output(tmp_path: Path) -> None:
    files = ModelArtifacts(tmp_path)
    assert files.trust_rows().name == "trust_metrics.csv"
    assert files.trust_summary("fracture").name == "trust_metrics_fracture.json"
    with pytest.raises(ValueError, match="per output"):
        files.trust_rows("normal")


def test_the_committed_fracture_cache_checks_untrained_images_on_the_fracture_path() -> None:
    files = ModelArtifacts.of(FRACTURE_MODEL, SHIPPED_WEIGHTS_DIR)
    if not files.trust_summary("fracture").is_file():
        pytest.skip("no committed fracture trust cache")
    cache = trust.read_cache(files, "fracture")
    assert cache is not None
    summary = cache.summary
    assert summary["target"] == "fracture"
    assert summary["default_layer"] == "fracture map (128 ch, stride 16)"
    assert len(summary["stages"]) == 4
    split = fracture_split.read_split(files.directory / fracture_split.SPLIT_FILE)
    sampled = set(cache.table.loc[cache.table["source"] == "FracAtlas", "image"])
    assert sampled and not sampled & set(fracture_split.trained_files(split))
    verdicts = {(g["method"], g["layer"]): g["randomisation"] for g in summary["groups"]}
    assert set(pd.Series(list(verdicts.values()))) <= {"passes", "fails", "unclear"}


def test_the_abnormal_outputs_checks_are_the_base_models_own() -> None:
    """The abnormal output is the base network bit for bit, with the same layer names: its sanity checks
    are read from the base's folder rather than copied."""
    files = ModelArtifacts.of(FRACTURE_MODEL, SHIPPED_WEIGHTS_DIR)
    base = files.base
    assert base is not None
    if not base.trust_summary().is_file():
        pytest.skip("no committed trust cache for the base model")
    assert not files.trust_summary().exists()
    mine, theirs = trust.read_cache(files, "abnormal"), trust.read_cache(base, "abnormal")
    assert mine is not None and theirs is not None
    assert mine.summary == theirs.summary


def test_localize_sweeps_the_explained_outputs_path_by_default(two_output: LoadedModel) -> None:
    from core.eval import localization_sweep

    assert localization_sweep.default_layers(two_output, "fracture") == [
        "fracture map (128 ch, stride 16)",
        "fracture block 11 (112 ch, stride 16)",
        "block 5 (40 ch, stride 8)",
    ]
    assert "fracture map (128 ch, stride 16)" not in localization_sweep.default_layers(two_output, "abnormal")
