"""The shipped model's numbers as the pages print them (issue 13): plain readings and the trained-parts
pool on Overview, "too few to estimate" instead of intervals from a handful of studies, no "None" in any
table, and a Model card that says what its count rows are. Reads only the shipped caches (no network,
no MURA folder)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import SHIPPED_WEIGHTS_DIR
from dashboard.charts import INTERVAL_WIDTH, TOO_FEW
from tests.app_pages import assert_clean, start_app

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

SHIPPED = SHIPPED_WEIGHTS_DIR / DEFAULT_MODEL
TINY = ("XR_ELBOW", "XR_FINGER", "XR_HAND", "XR_SHOULDER", "XR_WRIST")  # 2-5 studies each in the shipped copy


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The app on the shipped weights and no MURA folder; the shipped metrics_valid.json."""
    if not (SHIPPED / "metrics_valid.json").is_file():
        pytest.skip(f"no cached evaluation in {SHIPPED}")
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return json.loads((SHIPPED / "metrics_valid.json").read_text())


def _cells(app: AppTest) -> list[object]:
    return [value for frame in app.dataframe for value in frame.value.astype(object).to_numpy().ravel()]


def _assert_no_none(app: AppTest) -> None:
    cells = _cells(app)
    assert not [cell for cell in cells if cell is None or (isinstance(cell, float) and pd.isna(cell))]
    assert not [cell for cell in cells if isinstance(cell, str) and "None" in cell]


def _table_with(app: AppTest, column: str) -> pd.DataFrame:
    return next(frame.value for frame in app.dataframe if column in frame.value.columns)


def test_overview_pools_only_trained_parts_reads_in_plain_words_and_sets_context(shipped: dict) -> None:
    app = start_app()
    assert_clean(app)
    headline, out_of_scope = [frame.value for frame in app.dataframe if "AUROC (95% CI)" in frame.value.columns]
    assert list(headline["Body part"]) == ["Forearm", "Humerus", "All trained body parts"]
    pooled = headline.set_index("Body part").loc["All trained body parts"]
    trained_studies = shipped["study"]["XR_FOREARM"]["n"] + shipped["study"]["XR_HUMERUS"]["n"]
    assert pooled["Studies"] == trained_studies < shipped["study"]["overall"]["n"]
    assert pooled["Cohen's kappa (95% CI)"].startswith(f"{shipped['trained']['study']['kappa']['point']:.3f} (")
    # The few studies of other body parts: counts, and no figure at all.
    assert set(out_of_scope["Body part"]) == {part.removeprefix("XR_").capitalize() for part in TINY}
    assert (out_of_scope[["AUROC (95% CI)", "Cohen's kappa (95% CI)"]] == TOO_FEW).all().all()
    forearm = shipped["study"]["XR_FOREARM"]
    text = " ".join(markdown.value for markdown in app.markdown)
    assert (
        f"of 100 abnormal forearm studies it flags about **{round(100 * forearm['sensitivity']['point'])}**; "
        f"of 100 normal ones it wrongly flags about **{round(100 * (1 - forearm['specificity']['point']))}**" in text
    )
    assert "below the paper's best radiologist" in text or "below every one of the paper's radiologists" in text
    assert "mura_mobilenet_v2: AUROC" in text  # the other shipped model, as the quick baseline
    _assert_no_none(app)


def test_performance_scores_only_trained_parts_and_never_prints_none(shipped: dict) -> None:
    """Issue 27: the tiny groups of untrained parts are counted apart, not scored; the pool is the trained
    parts', with the figures Overview and the report show."""
    app = start_app().switch_page("../pages/performance.py").run()
    assert_clean(app)
    live = _table_with(app, "TP").set_index("Body part")
    cached = _table_with(app, "AUROC").set_index("Body part")
    assert set(live.index) == set(cached.index) == {"All trained body parts", "Forearm", "Humerus"}
    assert any(c.value.startswith("Out of scope, not scored: ") and "wrist" in c.value for c in app.caption)
    pooled = shipped["trained"]["study"]
    assert cached.loc["All trained body parts", "AUROC"].startswith(f"{pooled['auroc']['point']:.3f} (")
    assert live.loc["All trained body parts", "TP"] == pooled["confusion"]["tp"]
    assert cached.loc["Forearm", "AUROC"].startswith(f"{shipped['study']['XR_FOREARM']['auroc']['point']:.3f} (")
    assert live.loc["All trained body parts", "Threshold"] == "per part"
    _assert_no_none(app)


def test_model_card_labels_its_rows_keeps_the_legend_short_and_never_prints_none(shipped: dict) -> None:
    app = start_app().switch_page("../pages/model_card.py").run()
    assert_clean(app)
    counts = _table_with(app, "Subset")
    assert set(counts["Subset"]) == {"All training studies", "Holdout: out-of-fold (4 folds)"}
    captions = " ".join(caption.value for caption in app.caption)
    assert "every training study is in exactly one holdout fold" in captions
    assert "Holdout loss was not logged" in captions
    (chart,) = app.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    assert len([trace for trace in figure["data"] if trace.get("showlegend", True)]) == 3  # was 12
    results = _table_with(app, "Kappa").set_index("Body part")
    assert list(results.index) == ["All trained body parts", "Forearm", "Humerus"]  # the others: not scored
    assert "Out of scope, not scored: elbow 5" in captions
    _assert_no_none(app)


def _column_config(frame: object) -> dict:
    return json.loads(frame.proto.columns)


def test_interval_columns_are_wide_enough_for_every_value(shipped: dict) -> None:
    app = start_app().switch_page("../pages/performance.py").run()
    app.toggle(key="performance_bootstrap").set_value(True).run()
    assert_clean(app)
    longest = len("0.000 (0.000–0.000)")  # the widest interval, and as long as TOO_FEW
    assert len(TOO_FEW) <= longest
    for frame in app.dataframe:
        config = _column_config(frame)
        for column in ("Sensitivity", "Specificity", "Kappa", "AUROC"):
            if column in frame.value.columns:
                assert config[column]["width"] == INTERVAL_WIDTH, column
                assert frame.value[column].str.len().max() <= longest, column
        assert "each at its ow" not in " ".join(frame.value.astype(str).to_numpy().ravel())


def test_error_analysis_list_gives_the_study_path_the_room(shipped: dict) -> None:
    app = start_app().switch_page("../pages/error_analysis.py").run()
    assert_clean(app)
    (frame,) = [frame for frame in app.dataframe if {"study_path", "threshold"} <= set(frame.value.columns)]
    shown = list(frame.proto.column_order)
    assert shown[0] == "study_path" and "patient" not in shown and "study" not in shown  # both are in the path
    # About 7 px a character in the table font: the longest path fits whole.
    assert _column_config(frame)["study_path"]["width"] >= 7 * frame.value["study_path"].str.len().max()
