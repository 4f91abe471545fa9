"""The real FracAtlas radiographs in the app (Explain, Browse) and the FracAtlas dataset choice on
Performance and Browse, on the scratch model with no MURA folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.data import fracatlas
from core.eval import evaluation as evaluate
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts, read_evaluation, write_evaluation
from dashboard import state, studies
from dashboard.charts import TOO_FEW, format_estimate
from tests.app_pages import assert_clean, start_app

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

EXPLAIN = "../pages/explain.py"
PERFORMANCE = "../pages/performance.py"
BROWSE = "../pages/browse.py"


def _captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_explain_opens_on_a_real_radiograph_without_mura(use_scratch_weights: Path) -> None:
    at = start_app().switch_page(EXPLAIN).run()
    assert_clean(at)
    first = studies.fracatlas_samples().iloc[0]
    assert any("real radiograph" in i.value and first["title"] in i.value for i in at.info)
    assert f"Image: {fracatlas.CREDIT}" in _captions(at)
    assert any("Reference label: **fracture**" in c for c in _captions(at))
    image_captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith(f"{Path(first['file']).name} · P(abnormal)") for c in image_captions), image_captions


def test_sample_list_puts_real_radiographs_first_and_leg_is_out_of_scope(use_scratch_weights: Path) -> None:
    at = start_app().switch_page(EXPLAIN).run()
    at.radio(key="explain_source").set_value("Sample or MURA study").run()
    choice = at.selectbox(key="explain_study_choice")
    real = studies.fracatlas_samples()
    synthetic = studies.synthetic_studies()["ref"].tolist()
    assert choice.options[: len(real)] == [str(t) for t in real["title"]]
    assert choice.value == real["ref"].iloc[0]
    assert len(choice.options) == len(real) + len(synthetic)
    leg = real.loc[real["region"] == "leg/hip", "ref"].iloc[0]
    choice.set_value(leg).run()
    assert_clean(at)
    assert at.selectbox(key=f"explain_body_part_{leg}").value == "unknown"
    assert any(w.value.startswith("No verdict") for w in at.warning)
    assert not any(m.label == "Verdict" for m in at.metric)


def test_a_forged_fracatlas_reference_is_one_sentence(use_scratch_weights: Path) -> None:
    at = start_app()
    at.session_state[state.EXPLAIN_STUDY_KEY] = "fracatlas/../labels.csv"
    at.switch_page(EXPLAIN).run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "'fracatlas/../labels.csv' is not one of the FracAtlas radiographs shipped with the app."
    ]


@pytest.fixture(scope="module")
def fracatlas_weights(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path) -> Path:
    """scratch_weights plus a cached FracAtlas evaluation of the shipped samples' files (seeded
    probabilities that lean towards the fracture label), written as core.evaluate writes it."""
    directory = tmp_path_factory.mktemp("fracatlas_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, directory / DEFAULT_MODEL)
    images = fracatlas.read_images(fracatlas.resolve_root(studies.FRACATLAS_SAMPLES_DIR))
    card = json.loads((directory / DEFAULT_MODEL / "model_card.json").read_text())
    rng = np.random.default_rng(5)
    logits = 1.5 * (2 * images["fractured"].to_numpy() - 1) + rng.normal(0.0, 1.5, len(images))
    predictions = images.assign(
        duplicate_of=images["file"],
        threshold=images["region"].map(evaluate.region_thresholds(card)),
        probability=np.round(1 / (1 + np.exp(-logits)), 6),
    )
    for column in evaluate.FRACATLAS_COLUMNS:
        predictions[column] = predictions.get(column, 0)
    predictions = predictions[evaluate.FRACATLAS_COLUMNS]
    metrics = evaluate.summarise_fracatlas(predictions, evaluate.region_thresholds(card), n_boot=30)
    write_evaluation(ModelArtifacts(directory / DEFAULT_MODEL), evaluate.FRACATLAS, predictions, metrics)
    return directory


@pytest.fixture
def use_fracatlas_weights(monkeypatch: pytest.MonkeyPatch, fracatlas_weights: Path) -> Path:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(fracatlas_weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return fracatlas_weights


def test_performance_switches_to_fracatlas_and_says_what_the_label_is(use_fracatlas_weights: Path) -> None:
    at = start_app().switch_page(PERFORMANCE).run()
    assert_clean(at)
    at.radio(key="performance_dataset").set_value(evaluate.FRACATLAS).run()
    assert_clean(at)
    assert any("label here is **fracture**" in i.value and "MURA's broader **abnormal**" in i.value for i in at.info)
    evaluation = read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), evaluate.FRACATLAS)
    upper = evaluation.predictions[evaluation.predictions["upper_limb"].astype(bool)]
    live = at.dataframe[0].value.set_index("Body part")
    # The live table counts every upper-limb image, each at its region's threshold.
    predicted = upper["probability"] >= upper["threshold"]
    assert live.at["All upper-limb images", "TP"] == int((predicted & (upper["fractured"] == 1)).sum())
    assert live.at["All upper-limb images", "Images"] == len(upper)
    cached = at.dataframe[1].value.set_index("Body part")
    # The shipped samples are a dozen upper-limb images: too few for an AUROC (issue 13.7).
    assert cached.at["All upper-limb images", "AUROC"] == format_estimate(evaluation.metrics["all"]["overall"], "auroc")
    assert set(live.index) == {"All upper-limb images", "Hand/wrist/forearm", "Shoulder", "Whole arm"}
    # Hardware apart: its table holds only the hardware images.
    at.radio(key="performance_stratum").set_value("hardware").run()
    assert_clean(at)
    live = at.dataframe[0].value.set_index("Body part")
    assert live.at["All upper-limb images", "Images"] == int(upper["hardware"].sum())
    # Leg/hip is described, not scored.
    assert any("leg/hip images" in c.value and "no AUROC" in c.value for c in at.caption)
    at.radio(key="performance_dataset").set_value("valid").run()
    assert_clean(at)
    assert not any("fracture" in i.value for i in at.info)


def test_performance_without_a_fracatlas_cache_says_how_to_make_it(use_scratch_weights: Path) -> None:
    at = start_app().switch_page(PERFORMANCE).run()
    at.radio(key="performance_dataset").set_value(evaluate.FRACATLAS).run()
    assert_clean(at)
    assert any("--dataset fracatlas --root PATH" in i.value for i in at.info)


def test_browse_shows_real_radiographs_with_cached_probabilities(use_fracatlas_weights: Path) -> None:
    at = start_app().switch_page(BROWSE).run()
    assert_clean(at)
    assert at.radio(key="browse_dataset").value == evaluate.FRACATLAS
    predictions = read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), evaluate.FRACATLAS).predictions
    samples = studies.fracatlas_samples().merge(predictions[["file", "probability", "threshold"]], on="file")
    assert f"Images: {fracatlas.CREDIT}" in [c.value for c in at.caption]
    assert f"{len(samples)} of {len(samples)} studies match." in [c.value for c in at.caption]
    titles = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**FracAtlas")]
    assert len(titles) == min(len(samples), 12) and set(titles) <= set(samples["title"])
    # The label is fracture, the model's abnormal: no image is judged right or wrong (issue 27, item 4).
    cards = [m.value for m in at.markdown if m.value.startswith("P(abnormal)")]
    assert len(cards) == len(titles) and all(card.endswith("no verdict.") for card in cards)
    at.multiselect(key="browse_types").set_value(["leg/hip"]).run()
    leg = samples[samples["region"] == "leg/hip"].iloc[0]
    assert f"P(abnormal) = **{leg['probability']:.3f}**: no verdict." in [m.value for m in at.markdown]
    assert any(c.value.startswith("Not scored") for c in at.caption)
    at.multiselect(key="browse_types").set_value(sorted(samples["region"].unique())).run()
    at.multiselect(key="browse_labels").set_value(["fracture"]).run()
    assert sorted(m.value.split("**")[1] for m in at.markdown if m.value.startswith("**FracAtlas")) == sorted(
        samples.loc[samples["fractured"] == 1, "title"]
    )
    first = next(b for b in at.button if b.label == "Open in Explain")
    first.click().run()
    assert_clean(at)
    assert at.selectbox(key="explain_study_choice").value == first.key.removeprefix("browse_open_")


def test_overview_credits_the_real_samples_and_quotes_the_external_check(use_fracatlas_weights: Path) -> None:
    at = start_app()
    assert_clean(at)
    assert f"Images: {fracatlas.CREDIT}" in [c.value for c in at.caption]
    metrics = read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), evaluate.FRACATLAS).metrics
    overall = metrics["all"]["overall"]
    quoted = (
        "too few images to estimate an AUROC"
        if format_estimate(overall, "auroc") == TOO_FEW
        else f"AUROC {overall['auroc']['point']:.3f}"
    )
    assert any("External check on FracAtlas" in c.value and quoted in c.value for c in at.caption)
