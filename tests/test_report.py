"""core.report: the PDF made from the shipped caches, opened and read back for its sections and numbers;
chosen thresholds redraw the confusion matrices; the command line; the button on Overview and Model card."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from core import report as report_cli
from core.eval import metrics, report, trust
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts, read_evaluation
from dashboard import evaluation
from tests.app_pages import open_page

DATE = dt.date(2026, 11, 27)


def _text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata.title == f"MURA Lens model report: {DEFAULT_MODEL}"
    return "\n".join(page.extract_text() for page in reader.pages)


@pytest.fixture(scope="module")
def shipped_text() -> str:
    return _text(report.build_report(DEFAULT_MODEL, date=DATE))


def test_shipped_report_has_every_section_in_order(shipped_text: str) -> None:
    positions = [shipped_text.find(section) for section in report.SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(report.SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "Absent or unreadable" not in shipped_text  # every cache ships with the default model


def test_shipped_report_quotes_the_caches(shipped_text: str) -> None:
    flat = " ".join(shipped_text.split())  # the PDF wraps table cells and lines
    # docs/results.md's model-card table: humerus AUROC and forearm kappa with their 95% CIs.
    assert "0.919 (0.867-0.962)" in shipped_text and "0.681 (0.553-0.802)" in shipped_text
    assert "of 67 abnormal studies the model flagged 61" in shipped_text  # the plain-language reading
    assert "Humerus 0.332 Normal 58 10" in shipped_text  # confusion at the card's humerus threshold
    assert "At the model card's thresholds." in shipped_text
    # One pooled headline (issue 27): the trained parts', the figure Overview shows; never the all-parts pool.
    trained = read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), "valid").metrics["trained"]["study"]
    pooled = f"All trained body parts {trained['n']} ({trained['n_abnormal']}) {trained['auroc']['point']:.3f} ("
    assert pooled in flat and "All body parts" not in flat
    assert "Out of scope, not scored: 18 studies" in flat
    assert "0.639 (0.600-0.674)" in shipped_text  # FracAtlas, all upper limb
    # Issue 27, item 7: the top scorer is marked as failing the sanity checks; the recommended map passes them.
    assert "GradCAMElementWise - block 11 (112 ch, stride 16) (fails the sanity checks) 0.396 (0.348-0.447)" in flat
    assert "The best map that passes the sanity checks, LayerCAM - block 11 (112 ch, stride 16)" in flat
    assert "uniform map (chance)" in shipped_text and "flagged: 11 of 18" in shipped_text
    assert "0.986 (0.980-0.992)" in shipped_text  # out-of-scope AUROC, as in docs/results.md
    trust_headline = trust.headline(ModelArtifacts.of(DEFAULT_MODEL))
    assert trust_headline and " ".join(trust_headline.split()) in " ".join(shipped_text.split())
    assert "not a medical device" in shipped_text
    assert "CC BY 4.0" in shipped_text and "arXiv:1712.06957" in shipped_text and "doi:10.1038" in shipped_text
    checkpoint = ModelArtifacts.of(DEFAULT_MODEL).checkpoint.read_bytes()
    assert f"checkpoint sha256 {hashlib.sha256(checkpoint).hexdigest()[:12]}" in shipped_text
    assert "MURA Lens 0.1.0" in shipped_text and "Report date: 2026-11-27" in shipped_text


def test_chosen_thresholds_redraw_the_confusion_matrices() -> None:
    text = _text(report.build_report(DEFAULT_MODEL, thresholds={"XR_HUMERUS": 0.9}, date=DATE))
    studies = metrics.study_table(read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), "valid").predictions)
    humerus = studies[studies["study_type"] == "XR_HUMERUS"]
    confusion = metrics.confusion_at(humerus["label"], humerus["probability"], 0.9)
    assert "At the thresholds chosen in the app" in text
    assert f"Humerus 0.900 Normal {confusion.tn} {confusion.fp}" in text
    assert "Forearm 0.453 Normal 66 3" in text  # the untouched body part stays at the card's


def test_the_apps_kept_thresholds_reach_the_report() -> None:
    card = {"thresholds": {"XR_HUMERUS": 0.33, "default": 0.42}}
    assert evaluation.chosen_thresholds("m", card, {}) == {"XR_HUMERUS": 0.33, "default": 0.42}
    moved = {"kept:threshold:m:XR_HUMERUS": 0.6}
    assert evaluation.chosen_thresholds("m", card, moved) == {"XR_HUMERUS": 0.6, "default": 0.42}
    one = {"kept:threshold_mode:m": evaluation.GLOBAL, "kept:threshold:m:global": 0.5}
    assert evaluation.chosen_thresholds("m", card, one) == {"XR_HUMERUS": 0.5, "default": 0.5}


def test_a_model_without_external_caches_says_so(scratch_weights: Path) -> None:
    text = "\n".join(
        page.extract_text()
        for page in PdfReader(
            io.BytesIO(report.build_report(DEFAULT_MODEL, weights_root=scratch_weights, date=DATE))
        ).pages
    )
    assert all(section in text for section in report.SECTIONS)
    assert "python -m core.evaluate --dataset fracatlas" in text and "python -m core.localize" in text


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.pdf"
    assert report_cli.main(["--out", str(out), "--threshold", "XR_FOREARM=0.5"]) == 0
    assert "Forearm 0.500" in "\n".join(p.extract_text() for p in PdfReader(out).pages)
    assert report_cli.main(["--model", "no_such_model", "--out", str(tmp_path / "x.pdf")]) == 2
    assert "no_such_model/model_card.json" in capsys.readouterr().err and not (tmp_path / "x.pdf").exists()
    with pytest.raises(SystemExit):
        report_cli.main(["--out", str(out), "--threshold", "XR_FOREARM=2"])


@pytest.mark.parametrize(
    "page_file, key", [("../pages/overview.py", "overview_report"), ("../pages/model_card.py", "card_report")]
)
def test_report_button_on_overview_and_model_card(use_scratch_weights: Path, page_file: str, key: str) -> None:
    at = open_page(page_file)
    (button,) = [b for b in at.get("download_button") if key in b.proto.id]
    assert button.proto.label == "Download a report (PDF)"
    assert button.proto.HasField("deferred_file_id")  # made on click, so the page pays nothing for it
