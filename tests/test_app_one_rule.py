"""Issue 27, items 4 and 5: one rule on every page (a verdict only for a body part and a label the model
was trained on) and one pooled definition for headlines (the trained body parts), on a scratch model whose
cached MURA valid/ predictions also hold two wrist studies (out of scope)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.data import fracture_split
from core.eval.evaluation import FRACATLAS, summarise_trained
from core.eval.metrics import summarise
from core.model.card import FRACATLAS_LABEL, model_outputs, out_of_scope_reason
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, ModelArtifacts, read_evaluation
from tests.app_pages import open_page

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

WRIST_STUDIES = [
    "MURA-v1.1/valid/XR_WRIST/patient99001/study1_positive/",
    "MURA-v1.1/valid/XR_WRIST/patient99002/study1_negative/",
]
#: The shipped model that learned MURA's abnormal label only, and the fracture-aware model built on it.
BASE_MODEL, FRACTURE_MODEL = "mura_efficientnet_lite0", "mura_efficientnet_lite0_fracture"
CARD = {"training_data": {"all": {"XR_FOREARM": {}, "XR_HUMERUS": {}}}}


@pytest.fixture
def with_wrists(tmp_path: Path, scratch_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """scratch_weights plus two confidently called wrist studies in its cached evaluation."""
    directory = tmp_path / "weights"
    shutil.copytree(scratch_weights, directory)
    model_dir = directory / DEFAULT_MODEL
    predictions = pd.read_csv(model_dir / "predictions_valid.csv")
    wrists = pd.DataFrame(
        {
            "path": [study + "image1.png" for study in WRIST_STUDIES],
            "study_type": "XR_WRIST",
            "patient": ["patient99001", "patient99002"],
            "study": "study1",
            "study_path": WRIST_STUDIES,
            "label": [1, 0],
            "probability": [0.97, 0.96],
        }
    )
    predictions = pd.concat([predictions, wrists], ignore_index=True)
    predictions.to_csv(model_dir / "predictions_valid.csv", index=False)
    card = json.loads((model_dir / "model_card.json").read_text())
    thresholds = {t: v for t, v in card["thresholds"].items() if t != "default"} | {"default": 0.5}
    metrics = summarise(predictions, thresholds, n_boot=50, seed=0)
    metrics["trained"] = summarise_trained(predictions, thresholds, card, n_boot=50)
    (model_dir / "metrics_valid.json").write_text(json.dumps(metrics, allow_nan=False))
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(directory))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return directory


@pytest.mark.parametrize(
    ("body_part", "label", "outputs", "scored"),
    [
        ("XR_HUMERUS", "abnormal", None, True),
        ("XR_FOREARM", "abnormal", None, True),
        ("XR_WRIST", "abnormal", None, False),
        ("XR_SHOULDER", "abnormal", None, False),
        (None, "abnormal", None, False),
        ("hand", FRACATLAS_LABEL, None, False),  # MURA's abnormal is not FracAtlas's fracture
        ("leg/hip", FRACATLAS_LABEL, None, False),
        ("hand", FRACATLAS_LABEL, ("abnormal", "fracture"), True),  # a fracture output (issue 28)
        ("shoulder", FRACATLAS_LABEL, ("abnormal", "fracture"), True),
        ("leg/hip", FRACATLAS_LABEL, ("abnormal", "fracture"), False),
        ("XR_WRIST", "abnormal", ("abnormal", "fracture"), False),
    ],
)
def test_one_rule_decides_what_is_scored(body_part, label, outputs, scored) -> None:
    reason = out_of_scope_reason(CARD, body_part, label, outputs=outputs)
    assert (reason is None) == scored
    assert reason is None or reason.startswith("Not scored")


def test_a_two_output_card_puts_fracatlas_upper_limb_in_scope_for_fracture() -> None:
    """The fracture-aware model's card (core.fracture_model.fracture_card) names its outputs by label."""
    card = CARD | {"outputs": {"abnormal": {}, "fracture": {"threshold": 0.4}}}
    assert out_of_scope_reason(card, "hand", FRACATLAS_LABEL) is None
    assert out_of_scope_reason(card, "leg/hip", FRACATLAS_LABEL) is not None
    assert out_of_scope_reason(CARD, "hand", FRACATLAS_LABEL) is not None


def test_error_analysis_puts_no_wrist_study_in_a_cell(with_wrists: Path) -> None:
    app = open_page("../pages/error_analysis.py")
    assert "XR_WRIST" not in app.selectbox(key="error_body_part").options
    for cell in ("TN", "FP", "FN", "TP"):
        app.radio(key="error_cell").set_value(cell).run()
        assert not app.exception
        listed = [f.value for f in app.dataframe if "study_path" in f.value.columns and "threshold" in f.value.columns]
        assert listed and not set(WRIST_STUDIES) & set(listed[0]["study_path"])
    (out_of_scope,) = [
        f.value for f in app.dataframe if "study_path" in f.value.columns and "threshold" not in f.value.columns
    ]
    assert set(out_of_scope["study_path"]) == set(WRIST_STUDIES)
    assert any("Out of scope, not scored: 2 studies" in e.label for e in app.expander)


@pytest.mark.parametrize("model", sorted({DEFAULT_MODEL, BASE_MODEL, FRACTURE_MODEL}))
def test_data_map_scores_no_fracatlas_image_against_the_abnormal_label(
    monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    """The shipped models' maps: FracAtlas is never scored against the abnormal label (leg/hip is no false
    positive); a fracture output is judged by P(fracture) at its fracture threshold on the test part only, and
    an image it trained on says so instead of a right/wrong; MURA keeps its own four cells."""
    from dashboard import data_map

    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    table = data_map.map_table(model)
    atlas = table[(table["dataset"] == "fracatlas") & table["probability"].notna()]
    assert len(atlas) and not set(atlas["error"]) & {"TP", "TN", "FP", "FN"}
    files = ModelArtifacts.of(model)
    card = json.loads(files.card.read_text(encoding="utf-8"))
    if FRACATLAS_LABEL not in model_outputs(card):
        assert set(atlas["error"]) == {data_map.NOT_SCORED} and atlas["threshold"].isna().all()
    else:
        cached = pd.read_csv(files.predictions("fracatlas")).set_index("file")
        split = fracture_split.read_split(files.directory / fracture_split.SPLIT_FILE).set_index("file")
        assert (atlas["output"] == data_map.P_FRACTURE).all()
        assert atlas["probability"].tolist() == cached.loc[atlas["key"], "fracture_probability"].tolist()
        upper = atlas[atlas["scope_part"] != "leg/hip"]
        assert set(atlas.loc[atlas["scope_part"] == "leg/hip", "error"]) == {data_map.NOT_SCORED}
        trained = upper["key"].isin(fracture_split.trained_files(split.reset_index()))
        assert trained.any() and set(upper.loc[trained, "error"]) == {data_map.TRAINED_ON}
        tested = upper[~trained]
        assert set(split.loc[tested["key"], "part"]) == {fracture_split.TEST}
        assert set(tested["error"]) == {f"{cell} (fracture)" for cell in ("TP", "TN", "FP", "FN")}
        assert (tested["threshold"] == card["fracture_threshold"]).all()
        fractures = tested[tested["label"] == 1]
        sensitivity = read_evaluation(files, FRACATLAS).metrics["fracture_output"]["all"]["overall"]["sensitivity"]
        assert (fractures["error"] == "TP (fracture)").mean() == pytest.approx(sensitivity["point"], abs=1e-3)
    mura = table[table["dataset"] != "fracatlas"]
    assert set(mura["error"]) <= {"TP", "TN", "FP", "FN", "n/a"} and set(mura["output"]) == {data_map.P_ABNORMAL}


@pytest.mark.parametrize("damage", ["no P(fracture) cached", "damaged split"])
def test_data_map_scores_no_fracatlas_image_it_cannot_judge_by_p_fracture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str
) -> None:
    """The fracture-aware model with a FracAtlas cache that lacks P(fracture), or a split that cannot say which
    images it trained on: no FracAtlas image is scored (never by P(abnormal), never as a test unsaid)."""
    from dashboard import data_map

    for model in (BASE_MODEL, FRACTURE_MODEL):
        (tmp_path / model).mkdir()
        for source in (SHIPPED_WEIGHTS_DIR / model).iterdir():
            (tmp_path / model / source.name).symlink_to(source)
    files = ModelArtifacts.of(FRACTURE_MODEL, tmp_path)
    if damage == "damaged split":
        split = files.directory / fracture_split.SPLIT_FILE
        split.unlink()
        split.write_text("not,a\nsplit\n", encoding="utf-8")
    else:
        cached = pd.read_csv(files.predictions(FRACATLAS))
        files.predictions(FRACATLAS).unlink()
        cached.drop(columns="fracture_probability").to_csv(files.predictions(FRACATLAS), index=False)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    table = data_map.map_table(FRACTURE_MODEL)
    atlas = table[(table["dataset"] == "fracatlas") & table["probability"].notna()]
    assert len(atlas) and set(atlas["error"]) == {data_map.NOT_SCORED} and atlas["threshold"].isna().all()


def test_browse_follows_the_users_thresholds_and_scores_no_fracatlas_image(
    use_scratch_weights: Path, scratch_mura_root: Path
) -> None:
    """Issue 27, item 10: Browse judges at the thresholds set on Performance, as every other page does, and
    says so; FracAtlas's fracture label is never scored against an abnormal-only model (item 4)."""
    from tests.test_app_browse_overview import match_count, scratch_studies, set_mura_root

    at = set_mura_root(open_page("../pages/performance.py"), scratch_mura_root)
    at.radio(key=f"performance:threshold_mode:{DEFAULT_MODEL}").set_value("global").run()
    at.slider(key=f"performance:threshold:{DEFAULT_MODEL}:global").set_value(0.3).run()
    at.switch_page("../pages/browse.py").run()
    assert not at.exception
    assert any(c.value.startswith("Verdicts at **your** thresholds") for c in at.caption)
    studies = scratch_studies(use_scratch_weights)
    at.radio(key="browse_outcome").set_value("Wrong").run()
    wrong = (studies["probability"] >= 0.3) != studies["label"].astype(bool)
    assert match_count(at) == int(wrong.sum())
    assert all("at threshold 0.300" in m.value for m in at.markdown if m.value.startswith("P(abnormal)"))
    at.radio(key="browse_dataset").set_value("fracatlas").run()
    assert not at.exception
    cards = [m.value for m in at.markdown if m.value.startswith("P(abnormal)")]
    assert cards and all(card.endswith("no verdict.") for card in cards)
    assert any("not fracture" in c.value for c in at.caption)


def test_browse_judges_fracatlas_by_the_output_that_learned_its_label(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped default on Browse's FracAtlas gallery: with a fracture output, each card is P(fracture) (the
    cached value) at the fracture threshold, or no verdict; P(abnormal) is never right or wrong there."""
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    at = open_page("../pages/browse.py")
    at.radio(key="browse_dataset").set_value("fracatlas").run()
    assert not at.exception
    cards = [m.value for m in at.markdown if m.value.startswith("P(")]
    assert cards and not [c for c in cards if c.startswith("P(abnormal)") and not c.endswith("no verdict.")]
    files = ModelArtifacts.of(DEFAULT_MODEL)
    card = json.loads(files.card.read_text(encoding="utf-8"))
    if FRACATLAS_LABEL in model_outputs(card):
        cached = set(pd.read_csv(files.predictions(FRACATLAS))["fracture_probability"].round(3))
        threshold = f"at threshold {card['fracture_threshold']:.3f}: "
        assert all(c.startswith("P(fracture) = **") and (threshold in c or c.endswith("no verdict.")) for c in cards)
        assert {float(c.split("**")[1]) for c in cards} <= cached
        assert at.slider(key="browse_confidence").label == "P(fracture) between"


def test_performance_on_fracatlas_says_which_output_saw_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a model whose fracture output trained on FracAtlas, "never seen in training" would be false."""
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    at = open_page("../pages/performance.py")
    assert not at.exception
    card = json.loads(ModelArtifacts.of(DEFAULT_MODEL).card.read_text(encoding="utf-8"))
    help_text = at.radio(key="performance_dataset").help
    two_outputs = FRACATLAS_LABEL in model_outputs(card)
    assert help_text.endswith("the fracture output trained on part of it; its test part is scored).") == two_outputs
    assert help_text.endswith("never seen in training.") != two_outputs


def test_overview_speaks_plainly_before_the_technical_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27: squeeze-excitation, logit and letterboxed wait in an expander; AUROC and kappa are explained
    before the table that uses them."""
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    app = open_page("../pages/overview.py")
    technical = ("squeeze-excitation", "logit", "letterboxed")
    (details,) = [e for e in app.expander if e.label.startswith("Technical details")]
    inside = " ".join(m.value for m in details.markdown)
    assert all(word in inside for word in technical)
    plain = [m.value for m in app.markdown if m.value.startswith("Looks at one arm radiograph")]
    assert plain and not any(word in plain[0] for word in technical)
    assert any(
        "**AUROC**, how often the model ranks" in c.value and "**Cohen's kappa**" in c.value for c in app.caption
    )


def test_overview_says_what_the_shipped_models_are_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fracture-aware model's two outputs said plainly; the model it is built on stays the 'before', its
    abnormal output that model's network (never "the default model's own" about itself); the architecture
    of the abnormal network it carries is in the technical details."""
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    app = open_page("../pages/overview.py")
    (which,) = [box.value for box in app.info if box.value.startswith("**Which model for what:**")]
    default = " (the default)" if DEFAULT_MODEL == FRACTURE_MODEL else ""
    assert f"**{FRACTURE_MODEL}**{default} has two outputs" in which
    assert f"Its *abnormal* output is **{BASE_MODEL}**'s own network, unchanged" in which
    assert "*before* of Heat-map accuracy's before/after" in which and "default model's own" not in which
    card = json.loads(ModelArtifacts.of(DEFAULT_MODEL).card.read_text(encoding="utf-8"))
    plain = " ".join(m.value for m in app.markdown)
    assert ("P(fracture), from 0 to 1" in plain) == (FRACATLAS_LABEL in model_outputs(card))
    (details,) = [e for e in app.expander if e.label.startswith("Technical details")]
    inside = " ".join(m.value for m in details.markdown)
    base_card = json.loads(ModelArtifacts.of(BASE_MODEL).card.read_text(encoding="utf-8"))
    assert card["description"] in inside and base_card["description"] in inside
    # The model it is built on has the same abnormal network: said, not compared as another model.
    twin = BASE_MODEL if DEFAULT_MODEL == FRACTURE_MODEL else FRACTURE_MODEL
    assert f"**{twin}**: the same *abnormal* network as this model, so the same figures." in plain
    assert f"{twin}: AUROC" not in plain and "mura_mobilenet_v2: AUROC" in plain
