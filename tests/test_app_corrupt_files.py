"""Damaged model files and mismatched cached evaluations on every page (AppTest, issue 19 items 5
and 6): one st.error sentence naming the file, never Streamlit's exception box, never numbers
from a mix of two evaluation runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts, read_evaluation, write_evaluation
from tests.app_pages import start_app
from tests.test_models import DAMAGED_CHECKPOINTS

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGES = (
    "../pages/overview.py",
    "../pages/performance.py",
    "../pages/model_card.py",
    "../pages/explain.py",
    "../pages/browse.py",
    "../pages/error_analysis.py",
    "../pages/quiz.py",
)
DAMAGED_CARDS = {
    "truncated": b'{"name": "mura_eff',
    "empty": b"",
    "list": b"[]",
    "not UTF-8": b'{"name": "\xff"}',
    "100,000 nested brackets": b"[" * 100_000 + b"]" * 100_000,
}
#: The damaged checkpoints of issue 19: unreadable, not a weights dictionary, and not fitting the architecture.
APP_CHECKPOINTS = ("random bytes", "truncated", "empty", "bare tensor", "wrong keys", "wrong shape")


@pytest.fixture
def model_files(scratch_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelArtifacts:
    """A private copy of the scratch model folder, served by the app (no MURA folder)."""
    weights = tmp_path / "weights"
    shutil.copytree(scratch_weights, weights)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return ModelArtifacts.of(DEFAULT_MODEL, weights)


def _errors(app: AppTest) -> list[str]:
    assert not app.exception, [e.value for e in app.exception]
    return [error.value for error in app.error]


def _assert_pages_say_only(app: AppTest, file_name: str, pages: tuple[str, ...]) -> None:
    for page in pages:
        app.switch_page(page).run()
        errors = _errors(app)
        assert len(errors) == 1 and f"{DEFAULT_MODEL}/{file_name}" in errors[0], (page, errors)
        assert "\n" not in errors[0], errors[0]
        assert not app.dataframe, page  # the page stopped at the sentence


#: Pages reach the model one of two ways (dashboard/state.py): checked_model_name, a cheap check that
#: never builds the network (Overview, Performance, Model card, Error analysis, Quiz), and
#: current_model, a full load (Explain, Browse). Every kind of damage goes through both on one page
#: each; every page then meets one damaged card and one damaged checkpoint.
ONE_PAGE_PER_LOADER = ("../pages/overview.py", "../pages/explain.py")
EVERY_PAGE_CARD, EVERY_PAGE_CHECKPOINT = "truncated", "wrong shape"


@pytest.mark.parametrize("content", DAMAGED_CARDS.values(), ids=DAMAGED_CARDS.keys())
def test_a_damaged_card_is_one_sentence_through_both_loaders(model_files: ModelArtifacts, content: bytes) -> None:
    model_files.card.write_bytes(content)
    _assert_pages_say_only(start_app(), "model_card.json", ONE_PAGE_PER_LOADER)


@pytest.mark.parametrize("damage", APP_CHECKPOINTS)
def test_a_damaged_checkpoint_is_one_sentence_through_both_loaders(model_files: ModelArtifacts, damage: str) -> None:
    DAMAGED_CHECKPOINTS[damage](model_files.checkpoint)
    _assert_pages_say_only(start_app(), "checkpoint.pt", ONE_PAGE_PER_LOADER)


def test_a_damaged_card_is_one_sentence_on_every_page(model_files: ModelArtifacts) -> None:
    model_files.card.write_bytes(DAMAGED_CARDS[EVERY_PAGE_CARD])
    _assert_pages_say_only(start_app(), "model_card.json", PAGES)


def test_a_damaged_checkpoint_is_one_sentence_on_every_page(model_files: ModelArtifacts) -> None:
    DAMAGED_CHECKPOINTS[EVERY_PAGE_CHECKPOINT](model_files.checkpoint)
    _assert_pages_say_only(start_app(), "checkpoint.pt", PAGES)


def test_a_damaged_card_beside_no_checkpoint_is_one_sentence_on_the_cache_pages(model_files: ModelArtifacts) -> None:
    model_files.checkpoint.unlink()
    model_files.card.write_bytes(b"[]")
    app = start_app()
    for page in (
        "../pages/overview.py",
        "../pages/performance.py",
        "../pages/model_card.py",
        "../pages/error_analysis.py",
    ):
        app.switch_page(page).run()
        assert any(f"{DEFAULT_MODEL}/model_card.json" in error for error in _errors(app)), page


@pytest.fixture
def mismatched(model_files: ModelArtifacts) -> ModelArtifacts:
    """The scratch evaluation written as a pair, then its predictions replaced by another run's."""
    evaluation = read_evaluation(model_files, "valid")
    write_evaluation(model_files, "valid", evaluation.predictions, evaluation.metrics)
    other_run = pd.read_csv(model_files.predictions("valid"))
    other_run["probability"] = 1.0 - other_run["probability"]
    other_run.to_csv(model_files.predictions("valid"), index=False)
    return model_files


def _mismatch_sentence(app: AppTest) -> None:
    errors = _errors(app)
    assert len(errors) == 1 and "predictions_valid.csv and metrics_valid.json come from different runs" in errors[0]


@pytest.mark.parametrize("page", ["../pages/performance.py", "../pages/error_analysis.py"])
def test_mismatched_evaluation_stops_the_evaluation_pages(mismatched: ModelArtifacts, page: str) -> None:
    app = start_app().switch_page(page).run()
    _mismatch_sentence(app)
    assert not app.dataframe and not app.get("plotly_chart")


def test_mismatched_evaluation_shows_no_numbers_on_overview_and_model_card(mismatched: ModelArtifacts) -> None:
    app = start_app()
    _mismatch_sentence(app)
    assert not any("AUROC (95% CI)" in frame.value.columns for frame in app.dataframe)
    app.switch_page("../pages/model_card.py").run()
    _mismatch_sentence(app)
    assert app.title[0].value.startswith("Model card")  # the card itself is still shown
    assert not any("Kappa" in frame.value.columns for frame in app.dataframe)


def test_mismatched_evaluation_leaves_browse_without_probabilities(
    mismatched: ModelArtifacts, scratch_mura_root: Path
) -> None:
    app = start_app()
    app.sidebar.text_input(key="mura_root_input").set_value(str(scratch_mura_root)).run()
    app.switch_page("../pages/browse.py").run()
    _mismatch_sentence(app)
    assert not any("P(abnormal)" in block.value for block in app.markdown)
    assert any("view(s)" in block.value for block in app.markdown)  # the studies are still listed


def test_consistent_pair_still_renders(model_files: ModelArtifacts) -> None:
    """Control for the tests above: the same folder with a consistent hashed pair shows its numbers."""
    evaluation = read_evaluation(model_files, "valid")
    write_evaluation(model_files, "valid", evaluation.predictions, evaluation.metrics)
    app = start_app()
    assert not _errors(app)
    assert any("AUROC (95% CI)" in frame.value.columns for frame in app.dataframe)
