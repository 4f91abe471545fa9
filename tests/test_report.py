"""core.report: the PDF made from the shipped caches, opened and read back for its sections and numbers;
chosen thresholds redraw the confusion matrices; the command line; the button on Overview and Model card."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from core import report as report_cli
from core.data import fracture_split
from core.eval import metrics, report, trust
from core.eval.evaluation import FRACATLAS
from core.eval.localization_sweep import read_cache as read_localization
from core.eval.metrics import format_interval
from core.model.card import FRACATLAS_LABEL, model_outputs
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts, read_evaluation, read_json_object
from dashboard import accuracy, evaluation
from tests.app_pages import open_page
from tests.test_fracture_model import two_output  # noqa: F401 - the module fixture this file reuses

DATE = dt.date(2026, 11, 27)
#: The shipped two-output model (issue 28), and the model it is built on (MURA's abnormal label only).
FRACTURE_MODEL = "mura_efficientnet_lite0_fracture"
BASE_MODEL = "mura_efficientnet_lite0"


def _text(pdf: bytes, model: str = DEFAULT_MODEL) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata.title == f"MURA Lens model report: {model}"
    return "\n".join(page.extract_text() for page in reader.pages)


def _interval(summary: dict) -> str:
    """An interval as the PDF prints it (Latin-1: the en dash becomes a hyphen)."""
    return format_interval(summary).replace("–", "-")


def _images(pdf: bytes) -> int:
    return sum(len(page.images) for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.fixture(scope="module")
def shipped_text() -> str:
    return _text(report.build_report(DEFAULT_MODEL, date=DATE))


@pytest.fixture(scope="module")
def base_text() -> str:
    """The report of the shipped model that learned MURA's abnormal label only."""
    return _text(report.build_report(BASE_MODEL, date=DATE), BASE_MODEL)


def _sections_in_order(text: str) -> None:
    """Every section heading, each on a line of its own (the summary may name a later section), in order."""
    lines = [line.strip() for line in text.splitlines()]
    positions = [lines.index(section) if section in lines else -1 for section in report.SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(report.SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "Absent or unreadable" not in text  # every cache ships with the model


def test_shipped_report_has_every_section_in_order(shipped_text: str, base_text: str) -> None:
    _sections_in_order(shipped_text)
    _sections_in_order(base_text)


def _quotes_the_mura_caches(text: str, model: str) -> None:
    """P(abnormal)'s figures, which the fracture-aware model shares with its base (the same network)."""
    flat = " ".join(text.split())  # the PDF wraps table cells and lines
    # docs/results.md's model-card table: humerus AUROC and forearm kappa with their 95% CIs.
    assert "0.919 (0.867-0.962)" in text and "0.681 (0.553-0.802)" in text
    assert "of 67 abnormal studies the model flagged 61" in text  # the plain-language reading
    assert "Humerus 0.332 Normal 58 10" in text  # confusion at the card's humerus threshold
    assert "At the model card's thresholds." in text
    # One pooled headline (issue 27): the trained parts', the figure Overview shows; never the all-parts pool.
    trained = read_evaluation(ModelArtifacts.of(model), "valid").metrics["trained"]["study"]
    pooled = f"All trained body parts {trained['n']} ({trained['n_abnormal']}) {trained['auroc']['point']:.3f} ("
    assert pooled in flat and "All body parts" not in flat
    assert "Out of scope, not scored: 18 studies" in flat
    assert "0.639 (0.600-0.674)" in text  # FracAtlas, all upper limb, P(abnormal)
    assert "uniform map (chance)" in text and "flagged: 11 of 18" in text
    assert "0.986 (0.980-0.992)" in text  # out-of-scope AUROC, as in docs/results.md
    assert "not a medical device" in text
    assert "CC BY 4.0" in text and "arXiv:1712.06957" in text and "doi:10.1038" in text
    checkpoint = ModelArtifacts.of(model).checkpoint.read_bytes()
    assert f"checkpoint sha256 {hashlib.sha256(checkpoint).hexdigest()[:12]}" in text
    assert "MURA Lens 0.1.0" in text and "Report date: 2026-11-27" in text


def test_shipped_report_quotes_the_caches(base_text: str) -> None:
    _quotes_the_mura_caches(base_text, BASE_MODEL)
    flat = " ".join(base_text.split())
    # Issue 27, item 7: the top scorer is marked as failing the sanity checks; the recommended map passes them.
    assert "GradCAMElementWise - block 11 (112 ch, stride 16) (fails the sanity checks) 0.396 (0.348-0.447)" in flat
    assert "The best map that passes the sanity checks, LayerCAM - block 11 (112 ch, stride 16)" in flat
    trust_headline = trust.headline(ModelArtifacts.of(BASE_MODEL))
    assert trust_headline and " ".join(trust_headline.split()) in flat


def test_the_default_models_report_quotes_its_caches(shipped_text: str) -> None:
    """The default model's report: P(abnormal)'s figures as above; its localisation table marked from the sanity
    checks of the output its maps explain; a trust headline per output it has."""
    _quotes_the_mura_caches(shipped_text, DEFAULT_MODEL)
    flat = " ".join(shipped_text.split())
    files = ModelArtifacts.of(DEFAULT_MODEL)
    sweep = read_localization(files)
    target = accuracy.explained_target(sweep.table)
    sanity = trust.sanity_by_map(trust.read_cache(files, target).summary)
    table = accuracy.ranking(sweep.summary, "hit", sanity=sanity)
    maps = table[~table["chance"]]
    top, best = maps.iloc[0], maps[maps["sanity"] == "passes"].iloc[0]
    if top["sanity"] == "fails":
        shown = top["map"].replace(" · ", " - ")
        assert f"{shown} (fails the sanity checks) {top['point']:.3f} ({top['low']:.3f}-{top['high']:.3f})" in flat
    assert f"The best map that passes the sanity checks, {best['map'].replace(' · ', ' - ')}" in flat
    outputs = model_outputs(json.loads(files.card.read_text(encoding="utf-8")))
    for output in outputs:
        headline = trust.headline(files, output)
        assert headline and " ".join(headline.split()) in flat
    if FRACATLAS_LABEL in outputs:
        assert "P(fracture)'s maps:" in flat and "P(abnormal)'s maps:" in flat
        assert "Maps of P(fracture), the fracture output." in flat
        assert "This model has no fracture output" not in flat


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


@pytest.mark.slow  # loads the shipped four-member model to draw two fracture maps
def test_a_fracture_models_report_gives_p_fracture_and_the_test_part_figures() -> None:
    """Issue 28, items 3 and 5: P(fracture) per image with its verdict at the fracture threshold, the fracture
    map, and the headline figures of metrics_fracatlas.json's test-part summary, said to be the test part's."""
    pdf = report.build_report(FRACTURE_MODEL, date=DATE)
    text = _text(pdf, FRACTURE_MODEL)
    flat = " ".join(text.split())
    files = ModelArtifacts.of(FRACTURE_MODEL)
    cached = read_evaluation(files, FRACATLAS)
    summary = cached.metrics["fracture_output"]
    overall = summary["all"]["overall"]
    assert report.SECTIONS[4] in text and f"called fracture at or above {summary['threshold']:.3f}" in flat
    assert f"Test part only: {summary['images']} upper-limb radiographs ({overall['n_abnormal']} fractured)" in flat
    assert f"All upper limb {overall['n']} ({overall['n_abnormal']}) {_interval(overall['auroc'])}" in flat
    hand = summary["all"]["hand"]
    assert f"Hand/wrist/forearm {hand['n']} ({hand['n_abnormal']}) {_interval(hand['auroc'])}" in flat
    # The fracture map's hit rate, from the localisation cache (the test part's outlined fractures).
    localization = read_json_object(files.localization_summary(FRACATLAS))
    (ours,) = [
        g
        for g in localization["groups"]
        if (g["method"], g["layer"]) == ("GradCAM", "fracture map (128 ch, stride 16)")
    ]
    assert f"on {_interval(ours['hit'])} of the {ours['n_images']} outlined fractures" in flat
    assert "radiographs of the test part only" in flat and "never trained on" in flat
    # Per image: the cached P(abnormal) and P(fracture) of a shipped sample, and its verdict at its threshold.
    row = cached.predictions.set_index("file").loc["images/IMG0002334.jpg"]
    probabilities = f"{row['probability']:.3f} {row['fracture_probability']:.3f}"
    assert f"IMG0002334.jpg Hand/wrist/forearm fracture {probabilities} fracture no" in flat
    assert "images/IMG0002313.jpg (hand/wrist/forearm; expert: fracture, outline in cyan)" in flat
    assert "GradCAM on fracture map (128 ch, stride 16) -> fracture" in flat
    assert _images(pdf) == 4  # two samples, each as a radiograph and under the fracture map


@pytest.fixture
def trained_sample(two_output: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The small two-output test model with the shipped fracture model's FracAtlas caches, and a split
    that puts the first fractured sample (the one the report draws) in a training fold."""
    model = tmp_path / "two"
    shutil.copytree(two_output / "two", model)
    card = json.loads((model / "model_card.json").read_text(encoding="utf-8"))
    card["outputs"] = {"abnormal": {}, "fracture": {}}
    (model / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    shipped = ModelArtifacts.of(FRACTURE_MODEL)
    for path in (shipped.predictions(FRACATLAS), shipped.metrics(FRACATLAS), shipped.localization(FRACATLAS)):
        shutil.copyfile(path, model / path.name)
    shutil.copyfile(shipped.localization_summary(FRACATLAS), model / shipped.localization_summary(FRACATLAS).name)
    split = pd.read_csv(shipped.directory / fracture_split.SPLIT_FILE, dtype=str, encoding="utf-8")
    split.loc[split["file"] == "images/IMG0002313.jpg", "part"] = fracture_split.fold_name(0)
    split.to_csv(model / fracture_split.SPLIT_FILE, index=False, encoding="utf-8")
    # Sanity verdicts of the fracture output's maps only (the abnormal output's cache is absent).
    groups = [{"method": "GradCAM", "layer": "fracture map (128 ch, stride 16)", "randomisation": "passes"}]
    groups[0]["logit_check"] = "passes"
    summary = json.dumps({"groups": groups})
    ModelArtifacts(model).trust_summary("fracture").write_text(summary, encoding="utf-8")
    return tmp_path


def test_a_sample_the_fracture_output_trained_on_says_so(trained_sample: Path) -> None:
    pdf = report.build_report("two", weights_root=trained_sample, date=DATE)
    flat = " ".join(_text(pdf, "two").split())
    assert "called fracture at or above 0.300" in flat
    assert "IMG0002313.jpg Hand/wrist/forearm fracture" in flat and "yes: not a test" in flat
    assert "1 of them were trained on by the fracture output: marked, and not a test." in flat
    assert "The fracture output was trained on this radiograph: its score and map are not a test." in flat
    # The localisation's radiographs include it too: its figures are no longer called the test part's.
    assert "1 of the localisation's radiographs were trained on by the fracture output" in flat
    assert "radiographs of the test part only" not in flat
    assert _images(pdf) == 4
    # The localisation explains P(fracture): its maps are marked from the fracture output's sanity checks.
    assert "The best map that passes the sanity checks, GradCAM - fracture map (128 ch, stride 16)" in flat


def test_a_model_without_a_fracture_output_says_so_in_its_section(scratch_weights: Path) -> None:
    text = _text(report.build_report(DEFAULT_MODEL, weights_root=scratch_weights, date=DATE))
    assert "This model has no fracture output" in " ".join(text.split())
