"""Heat-map accuracy's before/after section (AppTest): both models' numbers and the gallery from the committed
caches, and one sentence when one model's cache is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.eval import before_after
from core.eval.before_after import AFTER, BEFORE, DIFFERENCE
from core.eval.localization_sweep import DATASET
from core.model.checkpoint import DEFAULT_MODEL, list_shipped_models
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, ModelArtifacts
from dashboard import accuracy
from tests.app_pages import open_page

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGE = "../pages/heatmap_accuracy.py"


def _tables(at) -> list:
    """The before/after tables: (a), then (b) where a model has a map that passes the randomisation check."""
    return [frame.value for frame in at.dataframe if "Hit rate (95% CI)" in frame.value.columns]


def _captions(at) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def test_both_models_numbers_and_the_gallery_from_the_committed_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.setenv("FRACATLAS_ROOT", "")  # the gallery's radiographs: the samples shipped with the app
    at = open_page(PAGE)
    pair = before_after.model_pair(DEFAULT_MODEL)
    comparison = before_after.compare_models(pair)
    tables = _tables(at)
    assert len(tables) == 2  # (a) the opening maps, (b) the best passing maps (the before model's alone)
    rows = tables[0].set_index("")
    for side, model in ((BEFORE, pair.before), (AFTER, pair.after)):
        (name,) = [n for n in rows.index if n.startswith(f"{side.capitalize()}: {model} · GradCAM")]
        expected = comparison.opening.loc[side]
        assert rows.loc[name, "Hit rate (95% CI)"] == accuracy.interval_text(
            expected["hit"], expected["hit_low"], expected["hit_high"]
        )
    assert "After minus before (paired)" in rows.index
    if AFTER in comparison.unchecked:  # until core.trust checks the fracture output: said, not guessed
        assert any(
            c.value.startswith("The after model's maps of P(fracture) have not been through") for c in at.caption
        )
    assert comparison.opening.loc[DIFFERENCE, "hit_low"] > 0  # the fracture map points at fractures more often
    words = " ".join(m.value for m in at.markdown)
    assert "a model that learned MURA's *abnormal* label" in words and "a model taught with expert outlines" in words
    assert f"the same {len(comparison.images)} outlined fractures of FracAtlas's fixed test part" in words
    # The gallery: each image as the radiograph, the before map and the after map, each with its outcome.
    gallery = before_after.read_gallery(ModelArtifacts.of(pair.after))
    captions = _captions(at)
    for image, (before_outcome, after_outcome) in zip(gallery.images, gallery.outcomes, strict=True):
        name = image.removeprefix("images/")
        assert f"{name} · radiograph and expert outline" in captions
        assert f"{name} · before: {before_outcome}" in captions and f"{name} · after: {after_outcome}" in captions
    assert any(c.value.startswith("The same test radiographs under both models") for c in at.caption)
    assert len(at.get("plotly_chart")) >= 2  # the before/after figure beside the ranking


@pytest.mark.parametrize("side", [BEFORE, AFTER])
def test_a_missing_cache_of_one_model_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, side: str
) -> None:
    """One model of the pair without its localisation cache: one sentence naming it, the page goes on; the
    default model's own ranking shows when the missing cache is the other model's, and says how to make it
    when the missing cache is its own."""
    for model in list_shipped_models():
        folder = tmp_path / model
        folder.mkdir()
        for source in (SHIPPED_WEIGHTS_DIR / model).iterdir():
            (folder / source.name).symlink_to(source)
    pair = before_after.model_pair(DEFAULT_MODEL, tmp_path)
    missing = pair.before if side == BEFORE else pair.after
    files = ModelArtifacts.of(missing, tmp_path)
    files.localization(DATASET).unlink()
    files.localization_summary(DATASET).unlink()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.setenv("FRACATLAS_ROOT", "")
    monkeypatch.setattr(accuracy, "SAMPLES_ROOT", Path("/nonexistent/fracatlas"))  # no pictures: a quick page
    at = open_page(PAGE)
    assert not at.exception and not at.error
    said = [m.value for m in at.info if "cannot be compared" in m.value]
    assert said == [
        f"No heat-map accuracy cache for {missing} yet, so the two models cannot be compared: run "
        f"python -m core.localize --root ../shared/fracatlas --model {missing} and reload."
    ]
    assert not _tables(at)
    ranked = any("map" in frame.value.columns for frame in at.dataframe)
    if missing == DEFAULT_MODEL:
        assert not ranked and any(f"No heat-map accuracy cache for **{missing}** yet" in m.value for m in at.info)
    else:
        assert ranked  # the default model's ranking still shows
