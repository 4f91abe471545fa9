"""core.localize and core.cam.explain.explain_grid: the sweep CLI on a tiny root and on real FracAtlas
images, resuming, the cache's integrity, and the committed cache of the shipped model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import core.eval.localization_sweep as localize_module
from core.cam.explain import METHODS, explain, explain_grid, shares_a_pass
from core.eval import localization
from core.eval.localization_sweep import DATASET, read_cache, read_rows, summary_of
from core.localize import main
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel
from core.model.registry import MeanProbabilityEnsemble, get_config
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, CachePairError, ModelArtifacts
from tests.outlined_fracatlas import make_outlined_fracatlas
from tests.synthetic import calibrated_mobilenet

SHARED_FRACATLAS = Path(
    os.environ.get("FRACATLAS_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "fracatlas"
)
SCRATCH_LAYER = "stage 5 (96 ch, stride 16)"


@pytest.mark.slow  # every CAM method and layer on a two-member ensemble
def test_explain_grid_gives_explains_maps_for_an_ensemble() -> None:
    # Two members: each layer choice averages two member layers, as explain() does.
    ensemble = MeanProbabilityEnsemble([calibrated_mobilenet(0), calibrated_mobilenet(1)]).eval()
    loaded = LoadedModel("grid_test", ensemble, get_config("mobilenet_v2"), 64, {}, Path("."))
    pixels = np.random.default_rng(0).integers(0, 256, size=(70, 50), dtype=np.uint8)
    methods = [m for m in METHODS if shares_a_pass(m)]
    layers = ["stage 3 (32 ch, stride 8)", "last conv (1280 ch, stride 32)"]
    grid = explain_grid(loaded, pixels, methods=methods, layers=layers)
    assert set(grid) == {(m, layer) for m in methods for layer in layers}
    for (method, layer), result in grid.items():
        alone = explain(loaded, pixels, method=method, layers=[layer])
        np.testing.assert_allclose(result.heatmap, alone.heatmap, atol=1e-5, err_msg=f"{method} at {layer}")
        assert result.probability == pytest.approx(alone.probability, abs=1e-6)
    assert not any(m._forward_hooks or m._backward_hooks for m in ensemble.modules())


@pytest.mark.slow  # every CAM method, one pass each
def test_methods_that_cannot_share_the_pass_run_alone() -> None:
    loaded = LoadedModel("grid_test", calibrated_mobilenet(0), get_config("mobilenet_v2"), 64, {}, Path("."))
    pixels = np.random.default_rng(1).integers(0, 256, size=(40, 40), dtype=np.uint8)
    grid = explain_grid(loaded, pixels, methods=["FullGrad", "GradCAM"], layers=[SCRATCH_LAYER])
    assert set(grid) == {("FullGrad", ""), ("GradCAM", SCRATCH_LAYER)}
    with pytest.raises(ValueError, match="Unknown CAM method"):
        explain_grid(loaded, pixels, methods=["NoSuchCAM"], layers=[SCRATCH_LAYER])


@pytest.fixture
def model_folder(tmp_path: Path, scratch_weights: Path, monkeypatch: pytest.MonkeyPatch) -> ModelArtifacts:
    """A private copy of the scratch model (checkpoint and card only), as MURA_LENS_WEIGHTS_DIR."""
    weights = tmp_path / "weights"
    (weights / DEFAULT_MODEL).mkdir(parents=True)
    for name in ("checkpoint.pt", "model_card.json"):
        shutil.copy(scratch_weights / DEFAULT_MODEL / name, weights / DEFAULT_MODEL / name)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    return ModelArtifacts.of(DEFAULT_MODEL, weights)


def test_cli_on_a_tiny_root_writes_rows_and_summary(
    tmp_path: Path, model_folder: ModelArtifacts, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_outlined_fracatlas(tmp_path / "fracatlas")
    code = main(["--root", str(root), "--methods", "GradCAM", "FEM", "--layers", SCRATCH_LAYER, "--bootstrap", "50"])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(model_folder.localization(DATASET))
    # The three upper-limb fractures; not the normal image, not the leg/hip one.
    assert sorted(rows["image"].unique()) == [f"images/IMG000000{i}.jpg" for i in (1, 2, 3)]
    assert sorted(rows["method"].unique()) == sorted(["GradCAM", "FEM", *localization.BASELINES])
    assert len(rows) == 3 * 4
    assert rows["hit"].between(0, 1).all() and rows["iou"].between(0, 1).all()
    assert (rows.query("method == 'uniform'")["layer"] == "").all()
    assert rows.set_index("image")["region"].to_dict()["images/IMG0000002.jpg"] == "shoulder"
    cache = read_cache(model_folder)
    assert cache is not None
    recomputed = summary_of(cache.table, n_boot=cache.summary["n_boot"], seed=cache.summary["seed"])
    assert {k: v for k, v in cache.summary.items() if k != "rows_sha256"} == json.loads(json.dumps(recomputed))


def test_rerun_computes_only_what_is_missing(
    tmp_path: Path, model_folder: ModelArtifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_outlined_fracatlas(tmp_path / "fracatlas")
    arguments = ["--root", str(root), "--layers", SCRATCH_LAYER, "--bootstrap", "20"]
    assert main([*arguments, "--methods", "GradCAM"]) == 0
    before = read_rows(model_folder.localization(DATASET))
    requested: list[list[str]] = []
    real_grid = localize_module.explain_grid

    def recording_grid(*args: object, methods: list[str], **kwargs: object) -> object:
        requested.append(list(methods))
        return real_grid(*args, methods=methods, **kwargs)

    monkeypatch.setattr(localize_module, "explain_grid", recording_grid)
    assert main([*arguments, "--methods", "GradCAM", "LayerCAM"]) == 0
    assert requested == [["LayerCAM"]] * 3
    after = read_rows(model_folder.localization(DATASET))
    assert len(after) == len(before) + 3
    kept = after[after["method"] != "LayerCAM"].reset_index(drop=True)
    np.testing.assert_allclose(kept["hit"], before.sort_values(localize_module.KEY_COLUMNS)["hit"])


def test_a_changed_table_is_refused(tmp_path: Path, model_folder: ModelArtifacts) -> None:
    root = make_outlined_fracatlas(tmp_path / "fracatlas")
    assert main(["--root", str(root), "--methods", "GradCAM", "--layers", SCRATCH_LAYER, "--bootstrap", "20"]) == 0
    path = model_folder.localization(DATASET)
    path.write_text(path.read_text().replace("images/IMG0000001.jpg", "images/IMG0000009.jpg"))
    with pytest.raises(CachePairError, match="not the table"):
        read_cache(model_folder)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--root", "/nonexistent/fracatlas"], "does not exist"),
        (["--methods", "NoSuchCAM"], "Unknown CAM method"),
        (["--layers", "no such layer"], "Unknown layer"),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, model_folder: ModelArtifacts, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_outlined_fracatlas(tmp_path / "fracatlas")
    assert main(["--root", str(root), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


@pytest.mark.slow  # the shipped model's CAMs on real images
def test_cli_on_real_fracatlas_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED_FRACATLAS / "fractures_coco.json").is_file():
        pytest.skip(f"FracAtlas copy not found at {SHARED_FRACATLAS} (set FRACATLAS_ROOT to run on real images)")
    weights = tmp_path / "weights"
    for path in ModelArtifacts.of(DEFAULT_MODEL, SHIPPED_WEIGHTS_DIR).model_files:
        (weights / path.parent.name).mkdir(parents=True, exist_ok=True)
        (weights / path.parent.name / path.name).symlink_to(path)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    assert (
        main(
            [
                "--root",
                str(SHARED_FRACATLAS),
                "--limit",
                "2",
                "--methods",
                "GradCAM",
                "--layers",
                "block 11 (112 ch, stride 16)",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    cache = read_cache(ModelArtifacts.of(DEFAULT_MODEL, weights))
    assert cache is not None and cache.summary["n_images"] == 2
    assert len(cache.table) == 2 * 3 and cache.table["probability"].between(0, 1).all()
    assert set(cache.table["region"]) <= {"hand", "shoulder", "hand+shoulder"}


@pytest.mark.slow  # the shipped model's CAMs on real images
def test_committed_cache_matches_its_summary() -> None:
    files = ModelArtifacts.of(DEFAULT_MODEL, SHIPPED_WEIGHTS_DIR)
    cache = read_cache(files)
    assert cache is not None, f"{files.localization(DATASET)} is not committed"
    recomputed = summary_of(cache.table, n_boot=cache.summary["n_boot"], seed=cache.summary["seed"])
    assert {k: v for k, v in cache.summary.items() if k != "rows_sha256"} == json.loads(json.dumps(recomputed))
    assert {g["method"] for g in cache.summary["groups"]} >= {"GradCAM", *localization.BASELINES}
