"""A self-contained PDF report of one model for people who will not open the app: from its caches only.

What a hospital manager or a release reviewer asks for, on a few pages: the model card's headline,
per-body-part results on MURA valid/ with 95% CIs and a plain-language reading, the confusion
matrices at the chosen thresholds, the external FracAtlas check, heat-map localisation and the
scope head's measurement where their caches exist, the limitations, the data credits, and the
model, code and date it describes. Nothing is recomputed but the confusion counts at the chosen
thresholds (from the cached predictions).

A model with a fracture output gets its own section: the cached test-part figures of P(fracture)
(metrics_fracatlas.json's ``fracture_output``, and the localisation cache), the shipped FracAtlas
samples with their cached P(abnormal), P(fracture) and fracture verdict, and two of them under the
fracture map: the one thing the report computes with the model (no cache holds a map), on images
chosen by file name, blind to the model. A radiograph the fracture output trained on says so.

The PDF is drawn with fpdf2 (pure Python, no browser or system library), in its core Helvetica font:
text is folded to Latin-1 first (en dashes become hyphens, >= for the sign), so any reader opens it.

Command line (CI, a release): ``python -m core.report --model mura_efficientnet_lite0 --out report.pdf``
with ``--threshold XR_HUMERUS=0.4`` to report other operating points than the card's.

Example:
    >>> pdf = build_report("mura_efficientnet_lite0")  # doctest: +SKIP
    >>> Path("report.pdf").write_bytes(pdf)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from fpdf import FPDF
from fpdf.fonts import FontFace
from PIL import Image

from core.cam.explain import DEFAULT_METHOD, explain
from core.cam.overlay import overlay
from core.data import fracatlas, fracture_split
from core.data.imaging import load_radiograph
from core.eval import metrics, trust
from core.eval.evaluation import FRACATLAS, FRACTURE_COLUMN, REGION_LABELS
from core.eval.localization import BASELINES, BRIGHT_BONE, UNIFORM
from core.eval.metrics import format_interval
from core.model.card import (
    DEFAULT_THRESHOLD_KEY,
    FRACATLAS_LABEL,
    ModelCardError,
    card_thresholds,
    model_outputs,
    read_card,
    trained_study_types,
)
from core.model.checkpoint import DEFAULT_MODEL, file_sha256, load_model
from core.model.registry import FRACTURE, ModelLoadError, get_config
from core.store.artifacts import (
    Evaluation,
    EvaluationMismatchError,
    ModelArtifacts,
    display_name,
    read_evaluation,
    read_json_object,
)

__all__ = [
    "MURA_CREDIT",
    "SECTIONS",
    "ReportError",
    "ReportInputs",
    "FractureExample",
    "FractureFigure",
    "FractureOutput",
    "code_version",
    "model_version",
    "gather",
    "render_pdf",
    "build_report",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The FracAtlas radiographs shipped with the project: the report's per-image examples.
SAMPLES_ROOT = PROJECT_ROOT / "data_samples" / "fracatlas"
MURA_CREDIT = (
    "MURA v1.1: Rajpurkar P, Irvin J, Bagul A, et al. MURA: Large Dataset for Abnormality Detection in "
    "Musculoskeletal Radiographs. arXiv:1712.06957 (2017). Stanford AIMI, research use under its own "
    "licence; no MURA image is in this report or the project."
)
#: Section headings in the order the report prints them; tests and readers look for these.
SECTIONS = (
    "Summary",
    "Results on MURA valid/ (the test set)",
    "Confusion matrices at the chosen thresholds",
    "External check on FracAtlas",
    "The fracture output on FracAtlas's test part",
    "Do the heat maps point at the fracture?",
    "Can the heat maps be trusted?",
    "Does an image belong to the model?",
    "Limitations",
    "Data and credits",
    "Versions",
)
_LATIN1 = str.maketrans(
    {
        "–": "-",
        "—": "-",
        "−": "-",
        "≥": ">=",
        "≤": "<=",
        "’": "'",
        "‘": "'",
        "“": '"',
        "”": '"',
        "…": "...",
        "→": "->",
        "≈": "~",
    }
)
_MISSING = "Absent or unreadable in this model's folder: run {command} to make it."


class ReportError(ValueError):
    """The report cannot be made (a missing or damaged card or cache); one sentence naming the file."""


@dataclass(frozen=True)
class FractureExample:
    """A shipped FracAtlas sample as core.evaluate cached it (None where no cache covers it); ``trained``:
    the fracture output was fitted on it, so its figures are not a test."""

    file: str
    region: str
    fractured: bool
    abnormal_probability: float | None
    fracture_probability: float | None
    trained: bool


@dataclass(frozen=True)
class FractureFigure:
    """One sample drawn twice (its expert outline alone, and under the fracture map) with its caption."""

    example: FractureExample
    radiograph: np.ndarray
    mapped: np.ndarray
    caption: str


@dataclass(frozen=True)
class FractureOutput:
    """What the report says of a fracture output, read from the model folder's caches.

    ``summary``: metrics_fracatlas.json's ``fracture_output`` (the test part only), None before it exists;
    ``trained``: the files the output was fitted on (its split file), None without one;
    ``localized_targets`` / ``localized_trained``: what the cached localisation rows explain, and how many of
    their radiographs the output was fitted on; ``figure_problem``: why the maps are missing, if they are.
    """

    threshold: float
    summary: dict | None
    trained: frozenset[str] | None
    localized_targets: frozenset[str]
    localized_trained: int
    examples: list[FractureExample]
    figures: list[FractureFigure]
    figure_problem: str | None


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, read from a model folder; ``thresholds``: what the confusion
    matrices are drawn at (the card's unless someone chose others)."""

    model: str
    card: dict[str, Any]
    thresholds: dict[str, float]
    valid: metrics.pd.DataFrame | None
    valid_metrics: dict | None
    fracatlas_metrics: dict | None
    localization: dict | None
    #: core.trust's one-sentence headline; None before the trust cache exists.
    trust: str | None
    #: (method, layer) -> core.eval.trust.sanity_by_map's result; empty before the trust cache exists.
    sanity: dict[tuple[str, str], str]
    scope: dict | None
    model_version: str
    code_version: str
    date: dt.date
    #: The fracture output's section; None for a model without one.
    fracture: FractureOutput | None = None


def code_version() -> str:
    """The project's version and git commit ("0.1.0, git 7556e81"; "+ local changes" when dirty)."""
    try:
        version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        version = "unknown version"
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty=+"],
            cwd=PROJECT_ROOT,
            text=True,
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    commit = described.removesuffix("+")
    return f"{version}, git {commit}" + (" + local changes" if described.endswith("+") else "")


def model_version(files: ModelArtifacts) -> str:
    """The checkpoint's SHA-256 (first 12 hex digits): which weights the numbers come from."""
    try:
        digest = file_sha256(files.checkpoint)
    except OSError:
        return "no checkpoint in the folder"
    return f"checkpoint sha256 {digest[:12]}"


def gather(
    model: str = DEFAULT_MODEL,
    *,
    thresholds: Mapping[str, float] | None = None,
    weights_root: Path | None = None,
    date: dt.date | None = None,
) -> ReportInputs:
    """Read what the report needs from ``model``'s folder.

    Raises:
        ReportError: no or a damaged card, or a cached valid/ evaluation whose two files disagree (the
        optional caches, FracAtlas, localisation and scope, only leave their section saying so).
    """
    files = ModelArtifacts.of(model, weights_root)
    try:
        card = read_card(files.card)
        valid = read_evaluation(files, "valid")
    except (ModelCardError, EvaluationMismatchError) as exc:
        raise ReportError(str(exc)) from exc
    try:
        external = read_evaluation(files, FRACATLAS)
    except EvaluationMismatchError:
        external = None  # an optional section: it says the cache is absent or unreadable
    chosen = card_thresholds(card) | dict(thresholds or {})
    fracture = (
        _fracture_output(model, card, files, external, weights_root) if FRACATLAS_LABEL in model_outputs(card) else None
    )
    # The sanity marks of the localisation table come from the trust cache of the output it explains.
    explained = FRACTURE if fracture is not None and fracture.localized_targets == {FRACTURE} else "abnormal"
    return ReportInputs(
        model=model,
        card=card,
        thresholds=chosen,
        valid=None if valid is None else valid.predictions,
        valid_metrics=None if valid is None else valid.metrics,
        fracatlas_metrics=None if external is None else external.metrics,
        localization=read_json_object(files.localization_summary(FRACATLAS)),
        trust=_trust_headline(files, fracture is not None),
        sanity=trust.sanity_by_map(read_json_object(files.resolve(files.trust_summary(explained)))),
        scope=read_json_object(files.resolve(files.scope_metrics)),
        model_version=model_version(files),
        code_version=code_version(),
        date=date or dt.datetime.now(dt.UTC).date(),
        fracture=fracture,
    )


def _trust_headline(files: ModelArtifacts, two_outputs: bool) -> str | None:
    """core.trust's headline; for a model with a fracture output, one per output's cache, each named."""
    if not two_outputs:
        return trust.headline(files)
    lines = [
        f"{words}'s maps: {line}"
        for words, target in (("P(fracture)", FRACTURE), ("P(abnormal)", "abnormal"))
        if (line := trust.headline(files, target))
    ]
    return " ".join(lines) or None


def _fracture_output(
    model: str, card: dict, files: ModelArtifacts, external: Evaluation | None, weights_root: Path | None
) -> FractureOutput:
    """The fracture section's inputs: caches read, and the two sample maps drawn.

    Raises:
        ReportError: the card gives no fracture threshold, or the split file is damaged.
    """
    threshold = card.get("fracture_threshold")
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise ReportError(f"The model card {display_name(files.card)} gives its fracture output no fracture_threshold.")
    split = files.directory / fracture_split.SPLIT_FILE
    try:
        trained = fracture_split.trained_files(fracture_split.read_split(split)) if split.is_file() else None
    except fracture_split.SplitError as exc:
        raise ReportError(str(exc)) from exc
    summary = None if external is None else external.metrics.get("fracture_output")
    targets, images = _localized(files.localization(FRACATLAS))
    examples = _examples(None if external is None else external.predictions, trained or frozenset())
    figures, problem = _figures(model, examples, float(threshold), weights_root)
    return FractureOutput(
        threshold=float(threshold),
        summary=summary if isinstance(summary, dict) else None,
        trained=trained,
        localized_targets=targets,
        localized_trained=len(images & (trained or frozenset())),
        examples=examples,
        figures=figures,
        figure_problem=problem,
    )


def _localized(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(targets, images) of the cached localisation rows; the chance maps' rows name no target."""
    try:
        rows = pd.read_csv(path, usecols=["image", "target"], dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError):
        return frozenset(), frozenset()
    return frozenset(t for t in rows["target"] if t), frozenset(rows["image"])


def _examples(predictions: pd.DataFrame | None, trained: frozenset[str]) -> list[FractureExample]:
    """The shipped upper-limb samples with core.evaluate's cached probabilities of the same FracAtlas files."""
    try:
        samples = fracatlas.read_images(SAMPLES_ROOT)
    except fracatlas.FracAtlasError:
        return []
    rows = {} if predictions is None else {str(r["file"]): r for r in predictions.to_dict("records")}

    def probability(file: str, column: str) -> float | None:
        value = rows.get(file, {}).get(column)
        return None if value is None or pd.isna(value) else float(value)

    return [
        FractureExample(
            str(row.file),
            str(row.region),
            bool(row.fractured),
            probability(str(row.file), "probability"),
            probability(str(row.file), FRACTURE_COLUMN),
            str(row.file) in trained,
        )
        for row in samples[samples["upper_limb"].astype(bool)].sort_values("file").itertuples()
    ]


def _verdict(probability: float | None, threshold: float) -> str:
    return "-" if probability is None else "fracture" if probability >= threshold else "no fracture"


_TRAINED_NOTICE = "The fracture output was trained on this radiograph: its score and map are not a test."
_OUTLINE_COLOUR = (0, 255, 255)  # cyan, as the app draws expert outlines


def _figures(
    model: str, examples: list[FractureExample], threshold: float, weights_root: Path | None
) -> tuple[list[FractureFigure], str | None]:
    """The first fractured and the first unfractured sample by file name, each under the fracture map
    (GradCAM on the fracture output's default layer), with its expert outline; or ([], why not)."""
    chosen = [e for e in examples if e.fractured][:1] + [e for e in examples if not e.fractured][:1]
    if not chosen:
        return [], "No FracAtlas sample is shipped with this copy of the project."
    try:
        loaded = load_model(model, directory=weights_root)
        outlines = fracatlas.read_outlines(SAMPLES_ROOT)
    except (ModelLoadError, fracatlas.FracAtlasError) as exc:
        return [], f"The fracture maps could not be drawn: {exc}"
    figures = []
    for example in chosen:
        try:
            pixels = load_radiograph(fracatlas.image_file(SAMPLES_ROOT, example.file)).pixels
            explanation = explain(loaded, pixels, method=DEFAULT_METHOD, target=FRACTURE)
        except (OSError, ValueError, RuntimeError) as exc:  # an unreadable sample, a map that fails
            return [], f"The fracture map of {example.file} could not be drawn: {exc}"
        radiograph, mapped = np.stack([pixels] * 3, axis=-1), overlay(pixels, explanation.heatmap)
        if example.file in outlines.files():
            mask = outlines.mask(example.file)
            if mask.shape == pixels.shape:
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                radiograph, mapped = (
                    cv2.drawContours(np.ascontiguousarray(p), contours, -1, _OUTLINE_COLOUR, 3)
                    for p in (radiograph, mapped)
                )
        p = example.fracture_probability
        caption = (
            f"{example.file} ({_label(example.region).lower()}; expert: "
            f"{'fracture' if example.fractured else 'no fracture'}"
            f"{', outline in cyan' if example.fractured else ''}). "
            + ("P(fracture) not cached" if p is None else f"P(fracture) {p:.3f}")
            + f" (cached): {_verdict(p, threshold)} at the fracture threshold {threshold:.3f}. Left, the radiograph; "
            f"right, {explanation.method} on {', '.join(explanation.layers)} -> fracture, drawn for this report on the "
            "shipped copy." + (f" {_TRAINED_NOTICE}" if example.trained else "")
        )
        figures.append(FractureFigure(example, radiograph, mapped, caption))
    return figures, None


# --- wording ------------------------------------------------------------------------------------

#: The one pooled headline: the body parts the model was trained on, as on every app page.
TRAINED_POOL = "All trained body parts"


def _label(group: str) -> str:
    if group == metrics.OVERALL:
        return TRAINED_POOL
    return REGION_LABELS.get(group, group.removeprefix("XR_").replace("_", " ").lower()).capitalize()


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _reading(group: str, summary: Mapping) -> str:
    """One body part's results in words a non-statistician can check against the table."""
    confusion = summary.get("confusion") or {}
    tp, fn, tn, fp = (int(confusion.get(k, 0)) for k in ("tp", "fn", "tn", "fp"))
    auroc = (summary.get("auroc") or {}).get("point")
    kappa = (summary.get("kappa") or {}).get("point")
    parts = [
        f"{_label(group)}: of {tp + fn} abnormal studies the model flagged {tp} ({_share(_ratio(tp, tp + fn))}), "
        f"and of {tn + fp} normal studies it cleared {tn} ({_share(_ratio(tn, tn + fp))})."
    ]
    if auroc is not None:
        parts.append(
            f"An AUROC of {auroc:.2f} means a randomly chosen abnormal study scores higher than a randomly "
            f"chosen normal one {auroc:.0%} of the time."
        )
    if kappa is not None:
        strength = (
            "almost perfect"
            if kappa > 0.8
            else "substantial"
            if kappa > 0.6
            else "moderate"
            if kappa > 0.4
            else "fair"
            if kappa > 0.2
            else "slight"
        )
        parts.append(
            f"Kappa {kappa:.2f} is {strength} agreement with the radiologists' label beyond chance (Landis and Koch)."
        )
    return " ".join(parts)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- drawing ------------------------------------------------------------------------------------


class _Report(FPDF):
    """An A4 page with the report's running footer."""

    footer_text = ""

    def footer(self) -> None:
        """Model, date and page on every page, so a printed page still says what it describes."""
        self.set_y(-12)
        self.set_font("Helvetica", size=7)
        self.set_text_color(110)
        self.cell(0, 5, _latin1(f"{self.footer_text} - page {self.page_no()}/{{nb}}"), align="C")


def _latin1(text: str) -> str:
    return str(text).translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


class _Writer:
    """Headings, paragraphs, bullets and tables on a _Report."""

    def __init__(self, pdf: _Report) -> None:
        self.pdf = pdf

    def heading(self, text: str, size: int = 13) -> None:
        pdf = self.pdf
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", size)
        pdf.set_text_color(20, 60, 110)
        pdf.multi_cell(0, size * 0.5, _latin1(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        pdf.ln(1)

    def text(self, text: str, *, size: float = 9.5, style: str = "") -> None:
        self.pdf.set_font("Helvetica", style, size)
        self.pdf.multi_cell(0, size * 0.5, _latin1(text), align="L", new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def bullets(self, items: Sequence[str]) -> None:
        for item in items:
            self.text(f"- {item}")

    def pictures(self, pictures: Sequence[np.ndarray], width: float = 70.0) -> None:
        """RGB pictures side by side, ``width`` mm each, on a new page when they would not fit."""
        pdf = self.pdf
        height = max(width * p.shape[0] / p.shape[1] for p in pictures)
        if pdf.get_y() + height > pdf.h - pdf.b_margin:
            pdf.add_page()
        top = pdf.get_y()
        for index, picture in enumerate(pictures):
            pdf.image(Image.fromarray(picture), x=pdf.l_margin + index * (width + 4), y=top, w=width)
        pdf.set_y(top + height + 1)

    def table(self, rows: Sequence[Sequence[object]], widths: Sequence[int] | None = None) -> None:
        pdf = self.pdf
        pdf.set_font("Helvetica", size=8.5)
        with pdf.table(
            col_widths=widths,
            text_align="LEFT",
            line_height=4.6,
            headings_style=FontFace(emphasis="BOLD", fill_color=(225, 232, 242)),
        ) as table:
            for row in rows:
                cells = table.row()
                for value in row:
                    cells.cell(_latin1(str(value)))
        pdf.ln(2)


def _summary(out: _Writer, inputs: ReportInputs) -> None:
    card = inputs.card
    trained = ", ".join(_label(t).lower() for t in trained_study_types(card)) or "unknown body parts"
    out.heading(SECTIONS[0])
    out.text(f"{card.get('description', card.get('architecture', 'A radiograph classifier'))}", style="")
    out.bullets(
        [
            "Reads one upper-limb radiograph at a time and gives the probability it is abnormal; a study's "
            f"probability is the mean of its views', as in the MURA paper. Trained on {trained} radiographs only.",
            f"Input: {card.get('input', 'not stated')}.",
            "Operating thresholds (a study is called abnormal at or above): "
            + ", ".join(
                f"{_label(k) if k != DEFAULT_THRESHOLD_KEY else 'any other body part'} {v:.3f}"
                for k, v in sorted(card_thresholds(card).items(), key=lambda kv: kv[0] == DEFAULT_THRESHOLD_KEY)
            )
            + (f"; chosen to {card['threshold_rule']}." if card.get("threshold_rule") else "."),
            *(
                [
                    "A second output gives the probability of a fracture (FracAtlas's label: an expert saw a broken "
                    f"bone), called fracture at or above {inputs.fracture.threshold:.3f}; see "
                    f'"{SECTIONS[4]}".'
                ]
                if inputs.fracture
                else []
            ),
            "A research and teaching tool: not a medical device, not for diagnosis.",
        ]
    )


def _results(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[1])
    valid_metrics = inputs.valid_metrics or {}
    study = valid_metrics.get("study")
    if not study:
        out.text(_MISSING.format(command="python -m core.evaluate --mura-root PATH --split valid"))
        return
    trained = [g for g in trained_study_types(inputs.card) if g in study]
    others = [g for g in study if g != metrics.OVERALL and g not in trained]
    # The pool of the trained parts: cached apart when the folder holds other parts, else "overall" is it.
    pooled = (valid_metrics.get("trained") or {}).get("study") or (None if others else study.get(metrics.OVERALL))
    summaries = [(g, study[g]) for g in trained] + ([(metrics.OVERALL, pooled)] if pooled else [])
    rows = [("Body part", "Studies (abnormal)", "AUROC", "Kappa", "Sensitivity", "Specificity")]
    rows += [
        (
            _label(g),
            f"{s['n']} ({s['n_abnormal']})",
            format_interval(s.get("auroc")),
            format_interval(s.get("kappa")),
            format_interval(s.get("sensitivity")),
            format_interval(s.get("specificity")),
        )
        for g, s in summaries
    ]
    out.table(rows, widths=(26, 24, 30, 30, 30, 30))
    n_boot = valid_metrics.get("n_boot", "?")
    untrained = sum(int(study[g]["n"]) for g in others)
    out.text(
        f"Study level, each body part at the model card's threshold; 95% bootstrap intervals over studies "
        f"({n_boot} resamples). MURA valid/ was never used for training or for choosing thresholds. "
        f"'{TRAINED_POOL}' pools the body parts above, as every page of the app does."
        + (
            f" Out of scope, not scored: {untrained} studies of other body parts in the evaluated folder."
            if others
            else ""
        ),
        size=8,
    )
    out.text("Plain-language reading", style="B")
    out.bullets([_reading(g, study[g]) for g in trained])


def _confusions(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[2])
    if inputs.valid is None:
        out.text(_MISSING.format(command="python -m core.evaluate --mura-root PATH --split valid"))
        return
    table = metrics.study_table(inputs.valid)
    card = card_thresholds(inputs.card)
    trained = [g for g in trained_study_types(inputs.card) if g in set(table["study_type"])]
    chosen = {g: metrics.row_thresholds(table[table["study_type"] == g].head(1), inputs.thresholds)[0] for g in trained}
    moved = any(
        abs(chosen[g] - metrics.row_thresholds(table[table["study_type"] == g].head(1), card)[0]) > 1e-9
        for g in trained
    )
    out.text(
        "At the thresholds chosen in the app (the intervals above are at the card's)."
        if moved
        else "At the model card's thresholds.",
        size=8.5,
    )
    rows: list[tuple[object, ...]] = [
        ("Body part", "Threshold", "Label", "Called normal", "Called abnormal", "Sensitivity", "Specificity", "Kappa")
    ]
    for group in trained:
        studies = table[table["study_type"] == group]
        confusion = metrics.confusion_at(studies["label"], studies["probability"], chosen[group])
        kappa = "-" if confusion.kappa is None else f"{confusion.kappa:.3f}"
        rows.append(
            (
                _label(group),
                f"{chosen[group]:.3f}",
                "Normal",
                confusion.tn,
                confusion.fp,
                _share(confusion.sensitivity),
                _share(confusion.specificity),
                kappa,
            )
        )
        rows.append(("", "", "Abnormal", confusion.fn, confusion.tp, "", "", ""))
    out.table(rows, widths=(24, 18, 18, 24, 26, 22, 22, 16))
    out.text(
        "Rows: the radiologists' label; columns: the model's call. False negatives (abnormal, called normal) "
        "are missed findings; false positives (normal, called abnormal) are extra reads.",
        size=8,
    )


def _external(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[3])
    cached = inputs.fracatlas_metrics
    if not cached or not cached.get("all"):
        out.text(_MISSING.format(command="python -m core.evaluate --dataset fracatlas --root DIR"))
        return
    out.table(_fracatlas_rows(cached), widths=(46, 26, 36, 36, 36))
    auroc = ((cached["all"].get(metrics.OVERALL) or {}).get("auroc") or {}).get("point")
    reading = (
        f" On another hospital group's radiographs the model ranks a fractured image above an unfractured "
        f"one {auroc:.0%} of the time."
        if auroc is not None
        else ""
    )
    out.text(
        "FracAtlas (CC BY 4.0): another group's radiographs, image level, label fracture rather than MURA's "
        "broader abnormal; each region judged at the card's threshold of the nearest trained part." + reading,
        size=8.5,
    )
    if inputs.fracture:
        out.text(
            "These are P(abnormal)'s figures, an output that never saw FracAtlas. The fracture output's, on the "
            "test part only, are in the next section.",
            size=8.5,
        )


def _fracatlas_rows(cached: Mapping) -> list[tuple[str, ...]]:
    """Rows of a FracAtlas summary (core.eval.evaluation.summarise_fracatlas's shape): every upper-limb region,
    then the pools with and without metal hardware."""
    rows: list[tuple[str, ...]] = [("Images", "n (fractured)", "AUROC", "Sensitivity", "Specificity")]
    for stratum, title in (
        ("all", "upper limb"),
        ("without_hardware", "without hardware"),
        ("hardware", "with hardware"),
    ):
        for group, summary in (cached.get(stratum) or {}).items():
            if stratum != "all" and group != metrics.OVERALL:
                continue
            name = ("All " + title) if group == metrics.OVERALL else _label(group)
            rows.append(
                (
                    name,
                    f"{summary['n']} ({summary['n_abnormal']})",
                    format_interval(summary.get("auroc")),
                    format_interval(summary.get("sensitivity")),
                    format_interval(summary.get("specificity")),
                )
            )
    return rows


def _fracture(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[4])
    fracture = inputs.fracture
    if fracture is None:
        out.text(
            "This model has no fracture output: it predicts MURA's abnormal only, so the external check above is "
            "its only FracAtlas figure.",
            size=8.5,
        )
        return
    out.text(
        "P(fracture) is the model's second output, trained on FracAtlas's fracture label (an expert saw a broken "
        "bone; MURA's abnormal is broader). A radiograph is called fracture at or above "
        f"{fracture.threshold:.3f}, a threshold chosen on FracAtlas's training folds.",
        size=8.5,
    )
    summary = fracture.summary
    if not summary or not summary.get("all"):
        out.text(_MISSING.format(command="python -m core.evaluate --dataset fracatlas --root DIR"))
    else:
        overall = summary["all"].get(metrics.OVERALL) or {}
        out.text(
            f"Test part only: {summary.get('images', '?')} upper-limb radiographs ({overall.get('n_abnormal', '?')} "
            "fractured) that no member trained on or was tuned on; every region at the one fracture threshold.",
            style="B",
            size=9,
        )
        out.table(_fracatlas_rows(summary), widths=(46, 26, 36, 36, 36))
    _fracture_localization(out, inputs, fracture)
    _fracture_examples(out, fracture)


def _fracture_localization(out: _Writer, inputs: ReportInputs, fracture: FractureOutput) -> None:
    """The fracture map's hit rate on the test part, from the localisation cache, if it explains P(fracture)."""
    localization = inputs.localization or {}
    groups = localization.get("groups") or []
    if not groups:
        return
    if fracture.localized_targets != {FRACTURE}:
        explained = ", ".join(sorted(fracture.localized_targets)) or "no stated output"
        out.text(
            f"The cached heat-map localisation explains {explained}, not P(fracture): run python -m core.localize "
            "--root DIR (it explains P(fracture) by default for this model).",
            size=8.5,
        )
        return
    layer = _default_layer(inputs.card, FRACTURE)
    ours = next((g for g in groups if g["method"] == DEFAULT_METHOD and g["layer"] == layer), None)
    if ours is not None:
        out.text(
            f"The fracture map ({DEFAULT_METHOD} - {layer}, the map the app opens on) points within "
            f"{localization.get('tolerance_px', '?')} px of the expert outline on "
            f"{format_interval(ours['hit'])} of the {ours.get('n_images', '?')} outlined fractures it was "
            f"scored on; energy inside the outline {format_interval(ours['energy'])}.",
            size=8.5,
        )
    if fracture.localized_trained:
        out.text(
            f"{fracture.localized_trained} of the localisation's radiographs were trained on by the fracture "
            "output: its heat-map figures are not a test.",
            style="B",
            size=8.5,
        )
    elif fracture.trained is not None:
        out.text("Every radiograph of the localisation figures is one the fracture output never trained on.", size=8)


def _fracture_examples(out: _Writer, fracture: FractureOutput) -> None:
    """The shipped samples, per image: cached probabilities, the fracture verdict, and whether it was trained on."""
    if not fracture.examples:
        return
    out.text("Per image: the radiographs shipped with MURA Lens", style="B")
    rows: list[tuple[str, ...]] = [
        ("Radiograph", "Region", "Expert", "P(abnormal)", "P(fracture)", "Fracture verdict", "Trained on?")
    ]
    for e in fracture.examples:
        rows.append(
            (
                e.file.rsplit("/", 1)[-1],
                _label(e.region),
                "fracture" if e.fractured else "no fracture",
                "-" if e.abnormal_probability is None else f"{e.abnormal_probability:.3f}",
                "-" if e.fracture_probability is None else f"{e.fracture_probability:.3f}",
                _verdict(e.fracture_probability, fracture.threshold),
                "yes: not a test" if e.trained else "-" if fracture.trained is None else "no",
            )
        )
    out.table(rows, widths=(30, 30, 22, 24, 24, 28, 32))
    trained = sum(e.trained for e in fracture.examples)
    out.text(
        "core.evaluate's cached probabilities of the same FracAtlas files; the verdict is at the fracture threshold. "
        + (
            "The model folder has no FracAtlas split, so which radiographs the fracture output trained on is unknown."
            if fracture.trained is None
            else f"{trained} of them were trained on by the fracture output: marked, and not a test."
            if trained
            else "The fracture output was trained on none of them."
        ),
        size=8,
    )
    if fracture.figure_problem:
        out.text(fracture.figure_problem, size=8.5)
    for figure in fracture.figures:
        out.pictures([figure.radiograph, figure.mapped])
        out.text(figure.caption, size=8)


def _default_layer(card: Mapping, output: str) -> str | None:
    """The CAM layer the app opens on for ``output`` of the card's architecture; None for an unknown one."""
    try:
        return get_config(str(card.get("architecture"))).cam_layer_for(output)
    except (KeyError, ValueError, ModelLoadError):
        return None


def _localization(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[5])
    summary = inputs.localization or {}
    groups = summary.get("groups") or []
    if not groups:
        out.text(_MISSING.format(command="python -m core.localize --root DIR"))
        return
    maps = sorted((g for g in groups if g["method"] not in BASELINES), key=lambda g: -(g["hit"]["point"] or 0.0))
    fracture = inputs.fracture
    on_fracture = fracture is not None and fracture.localized_targets == {FRACTURE}
    default_layer = _default_layer(inputs.card, FRACTURE if on_fracture else "abnormal")
    # Only a map that passes the sanity checks is recommended: one that fails is not reading the model.
    passing = [g for g in maps if inputs.sanity.get((g["method"], g["layer"])) == "passes"]
    shown = maps[:3] + [g for g in passing[:1] if g not in maps[:3]]
    shown += [g for g in maps if g["method"] == "GradCAM" and g["layer"] == default_layer and g not in shown][:1]
    shown += [g for name in (UNIFORM, BRIGHT_BONE) for g in groups if g["method"] == name]
    rows: list[tuple[str, ...]] = [("Map", "Hit rate", "Energy inside", "mIoU at Otsu")]
    for group in shown:
        name = f"{group['method']} - {group['layer']}" if group["layer"] else f"{group['method']} map (chance)"
        if group["method"] == "GradCAM" and group["layer"] == default_layer:
            name += " (the app's default)"
        if inputs.sanity.get((group["method"], group["layer"])) == "fails":
            name += " (fails the sanity checks)"
        rows.append((name, *(format_interval(group[key]) for key in ("hit", "energy", "iou"))))
    out.table(rows, widths=(82, 36, 36, 36))
    uniform = next((g for g in groups if g["method"] == UNIFORM), None)
    chance = "" if uniform is None else f" (a uniform map, chance: {uniform['hit']['point']:.0%})"
    best = (
        f"The best map that passes the sanity checks, {passing[0]['method']} - {passing[0]['layer']}, points at "
        f"the fracture in {passing[0]['hit']['point']:.0%} of radiographs{chance}"
        if passing
        else "No map has passed the sanity checks yet, so none is recommended"
    )
    tested = on_fracture and fracture is not None and not fracture.localized_trained
    out.text(
        ("Maps of P(fracture), the fracture output. " if on_fracture else "")
        + f"Scored against FracAtlas's expert fracture outlines on {summary.get('n_images', '?')} radiographs"
        + (" of the test part only. " if tested else ". ")
        + f"Hit: the map's peak within {summary.get('tolerance_px', '?')} px of an outline. {best}; "
        + (
            "a heat map shows where the model looked, and the hit rate how often that was the fracture."
            if on_fracture
            else "heat is spread far wider than the fracture, so a heat map shows where the model looked, not where "
            "the fracture is."
        ),
        size=8.5,
    )


def _trust(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[6])
    if inputs.trust is None:
        out.text(_MISSING.format(command="python -m core.trust --mura-root PATH --fracatlas-root DIR"))
        return
    out.text(
        inputs.trust + " Sanity checks (Adebayo et al. 2018): a map that barely changes when the model's upper "
        "layers are randomised, or when the other class is explained, is not reading the model.",
        size=8.5,
    )


def _scope(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[7])
    summary = (inputs.scope or {}).get("summary")
    if not summary:
        out.text(_MISSING.format(command="python -m core.scope"))
        return
    flagged = summary.get("mura_valid_other_parts_flagged") or {}
    auroc = summary.get("out_of_scope_auroc") or {}
    accuracy = summary.get("body_part_accuracy_humerus_vs_forearm_study") or {}
    kept = summary.get("mura_valid_humerus_forearm_kept_in_scope") or {}
    out.bullets(
        [
            f"Out-of-scope AUROC (MURA valid/ humerus and forearm against other MURA parts, FracAtlas hand, shoulder "
            f"and leg/hip, non-radiographs): {format_interval(auroc)}.",
            f"MURA valid/ views of other body parts flagged: {flagged.get('hits', '?')} of {flagged.get('of', '?')}; "
            f"humerus and forearm views kept in scope: "
            f"{format_interval(kept)}.",
            "Humerus vs forearm, per study: "
            f"{format_interval(accuracy)}: below the 0.98 the "
            "project set, so the app suggests the body part and the user names it; a flagged image gets no verdict.",
        ]
    )


def _limitations(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[8])
    out.bullets(
        [
            *inputs.card.get("limitations", []),
            "FracAtlas's label is fracture, MURA's is abnormal (hardware, arthritis, lesions): external figures "
            "mix a shift of hospitals with a shift of label.",
            "Heat maps (CAMs) are a summary of the model's evidence, not a segmentation of the lesion.",
        ]
    )


def _credits(out: _Writer) -> None:
    out.heading(SECTIONS[9])
    out.bullets([MURA_CREDIT, fracatlas.CREDIT])


def _versions(out: _Writer, inputs: ReportInputs) -> None:
    out.heading(SECTIONS[10])
    out.bullets(
        [
            f"Model: {inputs.model} ({inputs.model_version})",
            f"Code: MURA Lens {inputs.code_version}",
            f"Report date: {inputs.date.isoformat()} (UTC)",
        ]
    )


def render_pdf(inputs: ReportInputs) -> bytes:
    """The report as PDF bytes."""
    pdf = _Report(format="A4")
    pdf.footer_text = f"MURA Lens report - {inputs.model} - {inputs.date.isoformat()}"
    pdf.set_title(_latin1(f"MURA Lens model report: {inputs.model}"))
    pdf.set_author("MURA Lens")
    pdf.set_creation_date(dt.datetime.combine(inputs.date, dt.time(), dt.UTC))
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    out = _Writer(pdf)
    out.heading(f"MURA Lens model report: {inputs.card.get('name', inputs.model)}", size=17)
    out.text(f"{inputs.date.isoformat()} - {inputs.model_version} - code {inputs.code_version}", size=8.5)
    _summary(out, inputs)
    _results(out, inputs)
    _confusions(out, inputs)
    _external(out, inputs)
    _fracture(out, inputs)
    _localization(out, inputs)
    _trust(out, inputs)
    _scope(out, inputs)
    _limitations(out, inputs)
    _credits(out)
    _versions(out, inputs)
    return bytes(pdf.output())


def build_report(
    model: str = DEFAULT_MODEL,
    *,
    thresholds: Mapping[str, float] | None = None,
    weights_root: Path | None = None,
    date: dt.date | None = None,
) -> bytes:
    """:func:`gather` then :func:`render_pdf`: the PDF of ``model``'s folder.

    Raises:
        ReportError: see :func:`gather`.
    """
    return render_pdf(gather(model, thresholds=thresholds, weights_root=weights_root, date=date))
