"""Heat-map accuracy page (AppTest): the ranking and verdict from a cache, the gallery with outlines,
filters, and one sentence when there is no cache or a broken one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.eval.localization_sweep import DATASET, read_cache
from core.localize import main
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts
from dashboard import accuracy
from tests.app_pages import assert_clean, open_page
from tests.outlined_fracatlas import make_outlined_fracatlas

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGE = "../pages/heatmap_accuracy.py"
LAYER = "stage 5 (96 ch, stride 16)"
#: The shipped model that learned MURA's abnormal label only, and the fracture-aware model built on it.
BASE_MODEL, FRACTURE_MODEL = "mura_efficientnet_lite0", "mura_efficientnet_lite0_fracture"
FRACTURE_MAP = "fracture map (128 ch, stride 16)"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path) -> tuple[Path, Path]:
    """A weights folder whose scratch model has a localisation cache of a tiny outlined root."""
    weights = tmp_path_factory.mktemp("accuracy_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, weights / DEFAULT_MODEL)
    root = make_outlined_fracatlas(tmp_path_factory.mktemp("accuracy_fracatlas"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
        assert (
            main(["--root", str(root), "--methods", "GradCAM", "LayerCAM", "--layers", LAYER, "--bootstrap", "50"]) == 0
        )
    return weights, root


def _open(monkeypatch: pytest.MonkeyPatch, weights: Path, fracatlas_root: Path | None) -> AppTest:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.setenv("FRACATLAS_ROOT", str(fracatlas_root or ""))
    monkeypatch.setattr(accuracy, "SAMPLES_ROOT", Path("/nonexistent/fracatlas"))
    return open_page(PAGE)


def test_ranking_verdict_and_gallery(monkeypatch: pytest.MonkeyPatch, swept: tuple[Path, Path]) -> None:
    weights, root = swept
    at = _open(monkeypatch, weights, root)
    summary = read_cache(ModelArtifacts.of(DEFAULT_MODEL, weights)).summary
    table = accuracy.ranking(summary, "hit")
    (ranked,) = [frame.value for frame in at.dataframe if "map" in frame.value.columns]
    assert ranked["map"].tolist() == table["map"].tolist()
    assert set(ranked["map"]) >= {f"GradCAM · {LAYER}", f"LayerCAM · {LAYER}", "uniform", "bright bone"}
    sentences = [m.value for m in [*at.success, *at.warning]]
    # No trust cache here: no map is known to pass the sanity checks, so none is recommended (issue 27).
    assert any(s.startswith("No map passes the sanity checks above, so none is recommended.") for s in sentences)
    assert len(at.get("plotly_chart")) >= 1
    # Three outlined fractures, each drawn with its outline; none listed without a picture.
    assert len(at.image) == 3
    assert not [f for f in at.dataframe if "outcome" in f.value.columns and "image" in f.value.columns]
    at.radio(key="accuracy_metric").set_value("iou").run()
    assert_clean(at)
    assert any("mIoU at Otsu" in m.value for m in [*at.success, *at.warning])
    at.multiselect(key="accuracy_region").set_value(["shoulder"]).run()
    assert_clean(at)
    assert len(at.image) == 1 and any("1 of 3 images" in c.value for c in at.caption)


def test_rows_without_pictures_are_listed(monkeypatch: pytest.MonkeyPatch, swept: tuple[Path, Path]) -> None:
    weights, _root = swept
    at = _open(monkeypatch, weights, None)
    listed = [f.value for f in at.dataframe if "outcome" in f.value.columns and "image" in f.value.columns]
    assert len(listed) == 1 and len(listed[0]) == 3
    assert not at.image


def test_no_cache_is_one_sentence(monkeypatch: pytest.MonkeyPatch, scratch_weights: Path) -> None:
    at = _open(monkeypatch, scratch_weights, None)
    assert len(at.info) == 1 and "No heat-map accuracy cache" in at.info[0].value
    assert "python -m core.localize" in at.info[0].value


def test_a_broken_cache_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, swept: tuple[Path, Path]
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(swept[0], weights)
    rows = ModelArtifacts.of(DEFAULT_MODEL, weights).localization(DATASET)
    rows.write_text(rows.read_text() + rows.read_text().splitlines()[1] + "\n")
    at = _open(monkeypatch, weights, None)
    assert len(at.error) == 1 and "core.localize" in at.error[0].value


def test_committed_cache_of_the_shipped_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.setenv("FRACATLAS_ROOT", "")
    monkeypatch.setattr(accuracy, "SAMPLES_ROOT", Path("/nonexistent/fracatlas"))
    at = open_page(PAGE)
    assert not at.info, [m.value for m in at.info]
    (ranked,) = [frame.value for frame in at.dataframe if "map" in frame.value.columns]
    assert {"uniform", "bright bone"} <= set(ranked["map"]) and len(ranked) > 10
    assert len([*at.success, *at.warning]) >= 1


@pytest.mark.parametrize("model", [BASE_MODEL, FRACTURE_MODEL])
def test_the_shipped_recommendation_passes_the_sanity_checks_and_beats_the_uniform_map(model: str) -> None:
    """Issue 27, item 7: never crown a map that fails the checks shown above it; chance is the uniform map;
    maps that coincide at a layer are one row, with the reason said. The checks consulted are those of the
    output the maps explain (P(fracture) for the fracture-aware model)."""
    from core.eval import localization, trust

    files = ModelArtifacts.of(model)
    sweep = read_cache(files)
    target = accuracy.explained_target(sweep.table)
    assert target == ("fracture" if model == FRACTURE_MODEL else "abnormal")
    checked = trust.sanity_by_map(trust.read_cache(files, target).summary)
    same = localization.coinciding_maps(sweep.table)
    table = accuracy.ranking(sweep.summary, "hit", sanity=checked, same=same)
    beats, sentence = accuracy.verdict(table, "hit")
    recommended = table[(table["sanity"] == "passes") & ~table["chance"]].iloc[0]
    assert checked[(recommended["method"], recommended["layer"])] == "passes"
    assert sentence.startswith(f"Recommended: {recommended['map']}, the best hit rate")
    assert "among the maps that pass the sanity checks" in sentence
    assert "uniform map" in sentence and beats == bool(recommended["beats_uniform"])
    top = table[~table["chance"]].iloc[0]
    assert top["sanity"] == "passes" or f"{top['map']} ({top['point']:.3f}), is not recommended: it fails" in sentence
    if model == BASE_MODEL:
        head = "head conv (1280 ch, stride 32)"
        assert (head, ("GradCAM", "HiResCAM", "XGradCAM")) in same
        assert (head, ("GradCAMElementWise", "LayerCAM")) in same
        assert f"GradCAM = HiResCAM = XGradCAM · {head}" in set(table["map"])
        assert f"HiResCAM · {head}" not in set(table["map"])  # counted once
        assert "GradCAMElementWise · block 11 (112 ch, stride 16) (0.396), is not recommended: it fails" in sentence
    else:
        # GradCAMElementWise and LayerCAM coincide at the fracture map and fail its logit check: never crowned.
        both = table.set_index("map").loc[f"GradCAMElementWise = LayerCAM · {FRACTURE_MAP}"]
        assert both["sanity"] == "fails" and checked[("LayerCAM", FRACTURE_MAP)] == "fails"
        assert recommended["map"] == f"GradCAM · {FRACTURE_MAP}"  # the map the fracture output was trained to make


def test_the_default_models_page_recommends_and_draws_maps_of_the_output_it_explains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's sentence is the one the explained output's sanity checks give, and its gallery draws maps of
    that output (a map of P(abnormal) at a layer of the fracture branch is flat)."""
    from core.eval import localization, trust
    from dashboard import views

    drawn: list[views.CamSettings] = []
    monkeypatch.setattr(views, "explanation_or_error", lambda _m, _p, _n, settings: drawn.append(settings))
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.setenv("FRACATLAS_ROOT", "")  # the gallery's radiographs: the samples shipped with the app
    at = open_page(PAGE)
    files = ModelArtifacts.of(DEFAULT_MODEL)
    sweep = read_cache(files)
    target = accuracy.explained_target(sweep.table)
    sanity = trust.sanity_by_map(trust.read_cache(files, target).summary)
    table = accuracy.ranking(sweep.summary, "hit", sanity=sanity, same=localization.coinciding_maps(sweep.table))
    _beats, sentence = accuracy.verdict(table, "hit")
    assert sentence in [m.value for m in [*at.success, *at.warning]]
    assert drawn and {settings.target for settings in drawn} == {target}
    words = accuracy.OUTPUT_WORDS[target]
    assert any(f"Each CAM method and layer explains {words}" in c.value for c in at.caption)
    assert any(f"Spearman correlation of {words} with IoU" in m.value for m in at.markdown)


def test_the_model_is_not_scored_on_fractures_without_a_fracture_output(
    monkeypatch: pytest.MonkeyPatch, swept: tuple[Path, Path]
) -> None:
    """Issue 27, item 4: the 'Model right/wrong' filter says 'not scored' for an abnormal-only model."""
    weights, root = swept
    at = _open(monkeypatch, weights, root)
    assert at.multiselect(key="accuracy_model").options == ["not scored"]
    rows = read_cache(ModelArtifacts.of(DEFAULT_MODEL, weights)).table
    two_outputs = {"training_data": {"all": {"XR_HUMERUS": {}}}, "outputs": {"abnormal": {}, "fracture": {}}}
    assert set(accuracy.with_outcomes(rows, two_outputs)["model"]) <= {"right", "wrong"}
