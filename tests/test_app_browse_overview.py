"""AppTest of the Overview and Browse pages, the shared sidebar, the Browse -> Explain handoff,
and the data_samples scripts (synthetic images, curated MURA index).

Runs on the scratch model and the scratch MURA root (synthetic pixels; tests/conftest.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data import mura
from core.eval.metrics import study_table
from core.model.checkpoint import DEFAULT_MODEL
from dashboard import state
from dashboard.markup import escape_markdown
from data_samples import make_mura_index, make_synthetic
from tests.app_pages import assert_clean, start_app

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

THRESHOLDS_BY_TYPE = ("XR_HUMERUS", "XR_FOREARM")


def set_mura_root(at: AppTest, root: Path | str) -> AppTest:
    return at.sidebar.text_input(key="mura_root_input").set_value(str(root)).run()


def card_titles(at: AppTest) -> list[str]:
    """Bold first line of each Browse card, in the order shown."""
    return [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**") and "view(s)" in m.value]


def match_count(at: AppTest) -> int:
    caption = next(c.value for c in at.caption if c.value.endswith("studies match."))
    return int(re.match(r"(\d+) of", caption).group(1))


def scratch_studies(weights: Path) -> pd.DataFrame:
    """The scratch predictions as studies, with each one's card threshold and whether it is called right."""
    card = json.loads((weights / DEFAULT_MODEL / "model_card.json").read_text())
    studies = study_table(pd.read_csv(weights / DEFAULT_MODEL / "predictions_valid.csv"))
    threshold = studies["study_type"].map(card["thresholds"])
    return studies.assign(correct=(studies["probability"] >= threshold) == studies["label"].astype(bool))


def test_overview_shows_the_card_and_the_cached_headline_metrics(use_scratch_weights: Path) -> None:
    at = start_app()
    assert_clean(at)
    metrics = json.loads((use_scratch_weights / DEFAULT_MODEL / "metrics_valid.json").read_text())
    table = next(df.value for df in at.dataframe if "AUROC (95% CI)" in df.value.columns)
    assert list(table["Body part"]) == ["Forearm", "Humerus", "All trained body parts"]
    humerus = table.set_index("Body part").loc["Humerus"]
    assert humerus["Studies"] == metrics["study"]["XR_HUMERUS"]["n"]
    assert humerus["AUROC (95% CI)"].startswith(f"{metrics['study']['XR_HUMERUS']['auroc']['point']:.3f} (")
    assert any("Random weights: for tests only." in m.value for m in at.markdown)
    assert any("synthetic" in m.value for m in at.markdown)


def test_overview_describes_the_mura_folder_in_use(use_scratch_weights: Path, scratch_mura_root: Path) -> None:
    at = set_mura_root(start_app(), scratch_mura_root)
    assert_clean(at)
    table = next(df.value for df in at.dataframe if "Images" in df.value.columns).set_index("Body part")
    present = mura.read_images(scratch_mura_root, "valid")
    assert table["Images"].sum() == len(present)
    assert table["Studies"].sum() == present["study_path"].nunique()
    assert (
        table.loc["Humerus", "Abnormal studies"]
        == present.drop_duplicates("study_path").query("study_type == 'XR_HUMERUS'")["label"].sum()
    )


def test_sidebar_refuses_a_bad_mura_folder_in_one_sentence(use_scratch_weights: Path, tmp_path: Path) -> None:
    at = set_mura_root(start_app(), tmp_path / "missing")
    assert_clean(at)
    expected = escape_markdown(f"The MURA folder {tmp_path / 'missing'} does not exist.")
    assert [e.value for e in at.sidebar.error] == [expected]
    assert at.session_state["mura_root"] is None


def test_browse_samples_sorted_by_how_confidently_wrong(use_scratch_weights: Path) -> None:
    at = start_app().switch_page("../pages/browse.py").run()
    assert_clean(at)
    at.radio(key="browse_dataset").set_value("synthetic").run()
    samples = pd.read_csv(make_synthetic.INDEX_FILE)
    assert sorted(card_titles(at)) == sorted(samples["title"])
    shown = [
        float(re.search(r"P\(abnormal\) = \*\*([0-9.]+)\*\*", m.value).group(1))
        for m in at.markdown
        if m.value.startswith("P(abnormal)")
    ]
    labels = samples.set_index("title").loc[card_titles(at), "label"].to_numpy()
    errors = np.where(labels == 1, 1 - np.array(shown), shown)
    assert list(errors) == sorted(errors, reverse=True)
    at.multiselect(key="browse_labels").set_value(["abnormal"]).run()
    assert sorted(card_titles(at)) == sorted(samples.loc[samples["label"] == 1, "title"])


def test_browse_mura_filters_match_core_metrics(use_scratch_weights: Path, scratch_mura_root: Path) -> None:
    at = set_mura_root(start_app(), scratch_mura_root).switch_page("../pages/browse.py").run()
    assert_clean(at)
    studies = scratch_studies(use_scratch_weights)
    assert match_count(at) == len(studies)
    at.radio(key="browse_outcome").set_value("Wrong").run()
    assert match_count(at) == int((~studies["correct"]).sum())
    at.multiselect(key="browse_types").set_value(["XR_HUMERUS"]).run()
    wrong_humerus = studies[~studies["correct"] & (studies["study_type"] == "XR_HUMERUS")]
    assert match_count(at) == len(wrong_humerus)
    at.slider(key="browse_confidence").set_value((0.5, 1.0)).run()
    assert match_count(at) == int((wrong_humerus["probability"] >= 0.5).sum())


def test_browse_click_opens_the_mura_study_in_explain(use_scratch_weights: Path, scratch_mura_root: Path) -> None:
    at = set_mura_root(start_app(), scratch_mura_root).switch_page("../pages/browse.py").run()
    studies = scratch_studies(use_scratch_weights)
    errors = np.where(studies["label"] == 1, 1 - studies["probability"], studies["probability"])
    most_wrong = studies.assign(error=errors).sort_values(["error", "study_path"], ascending=[False, True]).iloc[0]
    open_buttons = [b for b in at.button if b.label == "Open in Explain"]
    assert open_buttons[0].key == f"browse_open_{most_wrong['study_path']}"
    open_buttons[0].click().run()
    assert_clean(at)
    assert at.selectbox(key="explain_study_choice").value == most_wrong["study_path"]
    assert at.session_state["mura_root"] == str(scratch_mura_root)  # survives st.switch_page
    views = mura.read_images(scratch_mura_root, "valid").query("study_path == @most_wrong.study_path")
    view_captions = [c for image in at.image for c in image.captions if " · P(abnormal) = " in c]
    assert sorted(c.split(" · ")[0] for c in view_captions) == sorted(p.rsplit("/", 1)[1] for p in views["path"])


def test_a_mura_study_without_a_mura_folder_is_refused_in_one_sentence(use_scratch_weights: Path) -> None:
    at = start_app()
    at.session_state[state.EXPLAIN_STUDY_KEY] = "MURA-v1.1/valid/XR_HUMERUS/patient00041/study1_negative/"
    at.switch_page("../pages/explain.py").run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "MURA studies are read from your own copy of MURA v1.1: set the MURA "
        "folder in the sidebar (the app ships no MURA images)."
    ]


def test_synthetic_samples_are_reproducible_and_labelled() -> None:
    for study in make_synthetic.STUDIES:
        for index in range(len(study.view_angles)):
            committed = Image.open(make_synthetic.SYNTHETIC_DIR / study.name / f"view{index + 1}.png")
            assert "SYNTHETIC" in committed.text["Description"]
            assert np.array_equal(np.asarray(committed), make_synthetic.draw_view(study, index))


def test_curated_index_lists_only_present_studies_and_true_picks(
    use_scratch_weights: Path, scratch_mura_root: Path
) -> None:
    index = make_mura_index.build_index(scratch_mura_root, DEFAULT_MODEL, per_kind=2)
    studies = scratch_studies(use_scratch_weights).set_index("study_path")
    assert set(index["study_path"]) <= set(studies.index)
    wrong = index[index["reason"].str.startswith("confidently wrong")]
    assert not studies.loc[wrong["study_path"], "correct"].any()
    for study_type in THRESHOLDS_BY_TYPE:
        missed = studies[(studies["study_type"] == study_type) & ~studies["correct"]]
        expected = (
            set(missed[missed["label"] == 0].nlargest(2, "probability").index)  # false positives
            | set(missed[missed["label"] == 1].nsmallest(2, "probability").index)
        )  # false negatives
        assert set(wrong.loc[wrong["study_type"] == study_type, "study_path"]) == expected
