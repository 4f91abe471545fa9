"""The data-centric view: an embeddings map, similar studies, the label-issue queue and the
duplicate audit, all read from what ``python -m core.embeddings`` cached in the model folder.

Nothing here runs the model over a dataset: coordinates, neighbours, label quality and duplicate
groups come from the cache, joined with the cached predictions. Images (and their CAMs) are drawn
only for the few studies a user picks, from the user's own data folders, never from the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import fracture_split
from core.datamap import embeddings
from core.eval.evaluation import REGION_LABELS
from core.model.card import (
    FRACATLAS_LABEL,
    MURA_LABEL,
    card_thresholds,
    model_outputs,
    out_of_scope_reason,
    threshold_for,
)
from core.store.artifacts import ModelArtifacts, file_version
from dashboard import accuracy, fracture_view, state, studies, views

__all__ = [
    "COLOUR_OPTIONS",
    "DATASET_LABELS",
    "MAX_GALLERY",
    "CacheMissing",
    "read_embeddings",
    "map_table",
    "study_summary",
    "error_counts",
    "map_figure",
    "selected_rows",
    "table_with_download",
    "read_label_issues",
    "read_duplicates",
    "read_audit",
    "similar_table",
    "show_similar_studies",
    "similar_picker",
    "show_studies",
    "missing_cache_message",
]

DATASET_LABELS = {"mura_train": "MURA train (out of fold)", "mura_valid": "MURA valid", "fracatlas": "FracAtlas"}
#: Colour choice shown to the user -> column of :func:`map_table`.
COLOUR_OPTIONS = {
    "Error type": "error",
    "Label": "label_text",
    "Prediction": "prediction",
    "Body part": "body_part",
    "Dataset": "dataset_label",
    "Hardware (FracAtlas)": "hardware",
    "Label issue": "label_issue_text",
    "Near-duplicate": "duplicate_text",
}
#: Studies drawn with their views and CAMs at most (each costs a forward and a CAM per view).
MAX_GALLERY = 8
_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_FIXED_COLOURS = {
    "TP": "#2ca02c",
    "TN": "#1f77b4",
    "FP": "#ff7f0e",
    "FN": "#d62728",
    "abnormal": "#d62728",
    "normal": "#1f77b4",
    "fracture": "#ff7f0e",
    "no fracture": "#17becf",
    "called abnormal": "#d62728",
    "called normal": "#1f77b4",
    "n/a": "#c7c7c7",
}
#: The call and error type of an image the model is not scored on (core.model.card.out_of_scope_reason).
NOT_SCORED = "out of scope (not scored)"
_FIXED_COLOURS[NOT_SCORED] = "#c7c7c7"
#: The call and error type of a FracAtlas image the fracture output trained on: a score, but not a test.
TRAINED_ON = "trained on (not a test)"
_FIXED_COLOURS[TRAINED_ON] = "#bcbd22"
#: Error types that are mistakes, of either label.
WRONG = ("FP", "FN", "FP (fracture)", "FN (fracture)")
#: The outputs a row's probability and call can be about.
P_ABNORMAL, P_FRACTURE = "P(abnormal)", "P(fracture)"


class CacheMissing(LookupError):
    """The model has no data-map cache yet; ``str(error)`` says which command makes it."""


def missing_cache_message(model: str) -> str:
    """One sentence: how to build the cache this page reads."""
    return (
        f"No data-map cache for **{model}** yet. Run `python -m core.embeddings --mura-root PATH "
        f"--fracatlas-root PATH --model {model}` (about 20 minutes on two cores) and reload."
    )


@st.cache_data(show_spinner="Reading the embeddings…", max_entries=4)
def _read_embeddings(path: str, version: int) -> embeddings.Embeddings:
    return embeddings.load(Path(path))


def read_embeddings(model: str) -> embeddings.Embeddings:
    """The model's embeddings cache (st.cache_data per file version).

    Raises:
        CacheMissing: the file is absent or unreadable.
    """
    files = ModelArtifacts.of(model)
    path = files.resolve(files.embeddings)
    version = file_version(path)
    if not version:
        raise CacheMissing(missing_cache_message(model))
    try:
        return _read_embeddings(str(path), version)
    except (OSError, ValueError, KeyError) as exc:
        raise CacheMissing(
            f"{path.name} cannot be read ({type(exc).__name__}); rerun python -m core.embeddings."
        ) from exc


@st.cache_data(show_spinner=False, max_entries=8)
def _read_csv(path: str, version: int) -> pd.DataFrame:
    return pd.read_csv(path)


def _csv(path: Path) -> pd.DataFrame | None:
    version = file_version(path)
    return _read_csv(str(path), version) if version else None


def read_label_issues(model: str) -> pd.DataFrame | None:
    """cleanlab's ranking of studies (lowest label quality first), or None before core.embeddings ran."""
    files = ModelArtifacts.of(model)
    return _csv(files.resolve(files.label_issues))


def read_duplicates(model: str) -> pd.DataFrame | None:
    """The near-duplicate groups (one row per image), or None before core.embeddings ran."""
    files = ModelArtifacts.of(model)
    return _csv(files.resolve(files.duplicates))


def read_audit(model: str) -> dict | None:
    """The counts core.embeddings wrote (data_audit.json), or None."""
    files = ModelArtifacts.of(model)
    path = files.resolve(files.data_audit)
    version = file_version(path)
    return _read_json(str(path), version) if version else None


@st.cache_data(show_spinner=False, max_entries=8)
def _read_json(path: str, version: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _mura_rows(predictions: pd.DataFrame, thresholds: dict[str, float], dataset: str) -> pd.DataFrame:
    study_probability = predictions.groupby("study_path")["probability"].transform("mean")
    return pd.DataFrame(
        {
            "dataset": dataset,
            "key": predictions["path"],
            "study": predictions["study_path"],
            "body_part": predictions["study_type"].str.removeprefix("XR_").str.lower(),
            "study_type": predictions["study_type"],
            "scope_part": predictions["study_type"],
            "scope_label": MURA_LABEL,
            "label": predictions["label"].astype(int),
            "label_text": np.where(predictions["label"] == 1, "abnormal", "normal"),
            "probability": predictions["probability"],
            "study_probability": study_probability,
            "threshold": [threshold_for(thresholds, t) for t in predictions["study_type"]],
            "output": P_ABNORMAL,
            "hardware": "n/a",
        }
    )


def _fracatlas_rows(predictions: pd.DataFrame, card: dict) -> pd.DataFrame:
    """FracAtlas's rows: a model with a fracture output is judged by P(fracture) at its fracture threshold (the
    label is fracture); any other model's P(abnormal) is shown, and the one rule leaves it unscored."""
    threshold_given = isinstance(card.get("fracture_threshold"), int | float)
    if FRACATLAS_LABEL in model_outputs(card) and "fracture_probability" in predictions and threshold_given:
        output, probability = P_FRACTURE, predictions["fracture_probability"]
        threshold = pd.Series(float(card["fracture_threshold"]), index=predictions.index)
    else:
        output, probability = P_ABNORMAL, predictions["probability"]
        threshold = predictions["threshold"].fillna(threshold_for(card_thresholds(card), None))
    return pd.DataFrame(
        {
            "dataset": "fracatlas",
            "key": predictions["file"],
            "study": predictions["file"],
            "body_part": predictions["region"].map(REGION_LABELS).fillna(predictions["region"]),
            "study_type": None,
            "scope_part": predictions["region"],
            "scope_label": FRACATLAS_LABEL,
            "label": predictions["fractured"].astype(int),
            "label_text": np.where(predictions["fractured"] == 1, "fracture", "no fracture"),
            "probability": probability,
            "study_probability": probability,
            "threshold": threshold,
            "output": output,
            "hardware": np.where(predictions["hardware"] == 1, "hardware", "no hardware"),
        }
    )


@st.cache_data(show_spinner="Joining the map with the cached predictions…", max_entries=4)
def _map_table(model: str, versions: tuple[int, ...]) -> pd.DataFrame:
    files = ModelArtifacts.of(model)
    card = state.read_card(model) or {}
    thresholds = card_thresholds(card)
    parts = []
    for dataset, path in (
        ("mura_train", files.resolve(files.holdout_predictions)),
        ("mura_valid", files.predictions("valid")),
    ):
        if path.is_file():
            parts.append(_mura_rows(pd.read_csv(path), thresholds, dataset))
    if files.predictions("fracatlas").is_file():
        parts.append(_fracatlas_rows(pd.read_csv(files.predictions("fracatlas")), card))
    predictions = pd.concat(parts, ignore_index=True)
    images = read_embeddings(model).images
    table = images.merge(predictions.drop(columns="study"), on=["dataset", "key"], how="left", validate="1:1")
    table["output"] = table["output"].fillna(P_ABNORMAL)
    called = table["study_probability"] >= table["threshold"]
    positive = table["label"] == 1
    fracture_call = table["output"] == P_FRACTURE
    table["prediction"] = np.select(
        [called & fracture_call, fracture_call, called],
        ["called fracture", "called no fracture", "called abnormal"],
        "called normal",
    )
    table["error"] = np.select([called & positive, called & ~positive, ~called & positive], ["TP", "FP", "FN"], "TN")
    table.loc[table["probability"].isna(), ["prediction", "error"]] = "n/a"
    # One rule (issue 27): no call and no error type where the model was not trained on the body part or the
    # label (FracAtlas's fracture is not MURA's abnormal; leg/hip and wrist never); a scored fracture label
    # keeps its own error types, apart from MURA's.
    scored = pd.Series(
        [
            out_of_scope_reason(card, None if pd.isna(part) else str(part), str(label)) is None
            for part, label in zip(table["scope_part"], table["scope_label"], strict=True)
        ],
        index=table.index,
        dtype=bool,
    )
    # A fracture label is judged only by P(fracture) (never by P(abnormal), even where the card has the output).
    scored &= (table["scope_label"] != FRACATLAS_LABEL) | (table["output"] == P_FRACTURE)
    fracture = scored & (table["scope_label"] == FRACATLAS_LABEL) & (table["error"] != "n/a")
    table.loc[fracture, "error"] = table.loc[fracture, "error"] + " (fracture)"
    table.loc[~scored & table["probability"].notna(), ["prediction", "error"]] = NOT_SCORED
    table.loc[~scored, "threshold"] = np.nan  # no threshold judges them
    # An image the fracture output trained on is scored, but it is no test of the model: said, not counted.
    try:
        trained = fracture_view.trained_files(files.directory) or frozenset()
    except fracture_split.SplitError:  # which images were trained on is unknown, so none is a test
        table.loc[fracture, ["prediction", "error"]] = NOT_SCORED
        table.loc[fracture, "threshold"] = np.nan
    else:
        fitted = fracture & table["key"].isin(trained)
        table.loc[fitted, ["prediction", "error"]] = TRAINED_ON
    table["dataset_label"] = table["dataset"].map(DATASET_LABELS)
    issues = read_label_issues(model)
    flagged = set() if issues is None else set(issues.loc[issues["label_issue"], "study_path"])
    table["label_issue_text"] = np.where(table["study"].isin(flagged), "label issue (cleanlab)", "not flagged")
    duplicates = read_duplicates(model)
    scope = (
        {}
        if duplicates is None
        else dict(zip(zip(duplicates["dataset"], duplicates["key"], strict=True), duplicates["scope"], strict=True))
    )
    table["duplicate_text"] = [
        scope.get(pair, "no copy found") for pair in zip(table["dataset"], table["key"], strict=True)
    ]
    table["confidence"] = np.where(called, table["study_probability"], 1 - table["study_probability"])
    return table


def _versions(model: str) -> tuple[int, ...]:
    """The cache key of :func:`map_table`: the versions of every file it joins (a base model's where
    the model reads the MURA-path files from its base)."""
    files = ModelArtifacts.of(model)
    return tuple(
        file_version(p)
        for p in (
            files.resolve(files.embeddings),
            files.resolve(files.holdout_predictions),
            files.predictions("valid"),
            files.predictions("fracatlas"),
            files.resolve(files.label_issues),
            files.resolve(files.duplicates),
            files.card,
            files.directory / fracture_split.SPLIT_FILE,
        )
    )


def map_table(model: str) -> pd.DataFrame:
    """One row per embedded image: map coordinates, dataset, study, label, probabilities, the call
    at the card's thresholds (study level for MURA), error type and the audit flags.

    Raises:
        CacheMissing: no embeddings cache.
    """
    read_embeddings(model)  # raises CacheMissing before the join
    return _map_table(model, _versions(model))


def error_counts(errors: pd.Series) -> str:
    """The selection's count line: MURA's four cells always, the fracture label's cells, the images the
    fracture output trained on and those not scored where any are selected."""
    counts = errors.value_counts()
    fracture = [f"{cell} (fracture)" for cell in ("TP", "TN", "FP", "FN")]
    names = ["TP", "TN", "FP", "FN", *(n for n in (*fracture, TRAINED_ON, NOT_SCORED) if n in counts)]
    return " · ".join(f"{name} {int(counts.get(name, 0))}" for name in names)


def study_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per study of ``rows`` (image rows of :func:`map_table`), most confidently wrong first."""
    if rows.empty:
        return pd.DataFrame(
            columns=[
                "study",
                "dataset",
                "body_part",
                "label_text",
                "output",
                "study_probability",
                "threshold",
                "error",
                "views",
            ]
        )
    grouped = (
        rows.groupby("study", sort=False)
        .agg(
            dataset=("dataset", "first"),
            body_part=("body_part", "first"),
            label_text=("label_text", "first"),
            output=("output", "first"),
            study_probability=("study_probability", "first"),
            threshold=("threshold", "first"),
            error=("error", "first"),
            confidence=("confidence", "first"),
            views=("key", "size"),
        )
        .reset_index()
    )
    wrong = grouped["error"].isin(WRONG)
    return (
        grouped.assign(_wrong=wrong)
        .sort_values(["_wrong", "confidence"], ascending=False, kind="stable")
        .drop(columns=["_wrong", "confidence"])
        .reset_index(drop=True)
    )


def _colours(values: list[str]) -> dict[str, str]:
    free = iter(c for c in _PALETTE if c not in {_FIXED_COLOURS.get(v) for v in values})
    return {v: _FIXED_COLOURS.get(v) or next(free, "#7f7f7f") for v in values}


@st.cache_data(show_spinner=False, max_entries=16)
def _figure(model: str, versions: tuple[int, ...], colour: str, projection: str) -> go.Figure:
    table = _map_table(model, versions)
    x, y = ("x", "y") if projection == "umap" else ("pca_x", "pca_y")
    figure = go.Figure()
    values = sorted(table[colour].astype(str).unique())
    palette = _colours(values)
    for value in values:
        rows = table[table[colour].astype(str) == value]
        figure.add_trace(
            go.Scattergl(
                x=rows[x],
                y=rows[y],
                mode="markers",
                name=f"{value} ({len(rows)})",
                marker={"size": 5, "color": palette[value], "opacity": 0.75},
                customdata=np.column_stack(
                    [
                        rows.index.to_numpy(),
                        rows["study"],
                        rows["dataset_label"],
                        rows["label_text"],
                        rows["probability"].round(3),
                        rows["error"],
                        rows["output"],
                    ]
                ),
                hovertemplate=(
                    "%{customdata[1]}<br>%{customdata[2]} · label %{customdata[3]}<br>"
                    "%{customdata[6]} %{customdata[4]} · %{customdata[5]}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        height=620,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        dragmode="lasso",
        legend={"itemsizing": "constant"},
        xaxis={"visible": False},
        yaxis={"visible": False},
    )
    return figure


def map_figure(model: str, colour: str, projection: str = "umap") -> go.Figure:
    """The scatter of every image coloured by ``colour`` (a :func:`map_table` column), one WebGL trace per
    value; each point carries its row number in ``customdata[0]`` for :func:`selected_rows`."""
    return _figure(model, _versions(model), colour, projection)


def table_with_download(
    shown: pd.DataFrame, exported: pd.DataFrame, *, keys: tuple[str, str], label: str, file_name: str, columns: dict
) -> None:
    """A table of studies and a button that downloads ``exported`` (the rows behind it, all columns) as CSV.

    ``columns`` titles the columns: the first (the study) wide, the others numbers to 3 decimals;
    ``keys`` are the table's and the button's widget keys.
    """
    study, *numbers = columns
    config = {study: st.column_config.TextColumn(columns[study], width="large")}
    config |= {name: st.column_config.NumberColumn(columns[name], format="%.3f") for name in numbers}
    st.dataframe(shown, hide_index=True, width="stretch", key=keys[0], column_config=config)
    st.download_button(label, exported.to_csv(index=False).encode(), mime="text/csv", file_name=file_name, key=keys[1])


def selected_rows(event: Any, rows: int) -> list[int]:
    """Row numbers of :func:`map_table` (of ``rows`` rows) picked by a box, lasso or click on
    :func:`map_figure`. The event comes from the browser, so anything but a whole row number in
    range is ignored (a crafted -1 must not pick the last row, nor text stop the page)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError, IndexError):
        return []
    picked = set()
    for point in points if isinstance(points, list) else []:
        data = point.get("customdata") if isinstance(point, dict) else None
        if not isinstance(data, list) or not data or isinstance(data[0], bool):
            continue
        try:
            value = float(data[0])
        except (TypeError, ValueError, OverflowError):
            continue
        if value.is_integer() and 0 <= value < rows:
            picked.add(int(value))
    return sorted(picked)


def similar_table(model: str, study: str, k: int = 6) -> pd.DataFrame | None:
    """The ``k`` studies the model's features put nearest to ``study``, with dataset, label, the cached
    study probability and the call; None when there is no cache, empty when the study is not in it."""
    try:
        cache = read_embeddings(model)
        table = map_table(model)
    except CacheMissing:
        return None
    near = cache.similar(study, k)
    if near.empty:
        return near
    summary = study_summary(table[table["study"].isin(near["study"])]).set_index("study")
    return near.join(summary.drop(columns="dataset"), on="study")


def _study_ref(study: str, dataset: str) -> str:
    """The reference Explain opens: the MURA study path, or ``fracatlas/<file>``."""
    return studies.FRACATLAS_PREFIX + study if dataset == "fracatlas" else study


def show_similar_studies(model: str, study_ref: str | None, *, key: str, k: int = 6) -> None:
    """A collapsed panel: the studies nearest to ``study_ref`` in the model's feature space ("cases the
    model thinks look alike"), with labels and probabilities. One call per page; silent without a cache."""
    if not study_ref:
        return
    study = study_ref.removeprefix(studies.FRACATLAS_PREFIX)
    near = similar_table(model, study, k)
    if near is None or near.empty:
        return
    with st.expander(f"Similar studies: the {len(near)} the model thinks look most alike", expanded=False):
        st.caption(
            "Nearest by cosine distance between the studies' mean penultimate features (train/ studies "
            "embedded out of fold). Alike to the model is not alike to a radiologist: that is the point."
        )
        shown = near.assign(dataset=near["dataset"].map(DATASET_LABELS))
        st.dataframe(
            shown[["study", "dataset", "body_part", "label_text", "output", "study_probability", "error", "distance"]],
            hide_index=True,
            width="stretch",
            key=f"{key}_table",
            column_config={
                "study": st.column_config.TextColumn("Study", width="large"),
                "dataset": "Dataset",
                "body_part": "Body part",
                "label_text": "Label",
                "output": "Output",
                "study_probability": st.column_config.NumberColumn("Probability", format="%.3f"),
                "error": "Call",
                "distance": st.column_config.NumberColumn("Distance", format="%.3f"),
            },
        )


def _views(
    study: str, dataset: str, mura_root: Path | None
) -> tuple[list[tuple[str, np.ndarray]], str | None, str | None]:
    """(views, study type, why not) of a map study, read from the user's data folders (FracAtlas: the
    folder the other pages use, else the app's shipped samples)."""
    if dataset == "fracatlas":
        atlas_root = accuracy.image_root(study)
        pixels = None if atlas_root is None else accuracy.image_pixels(atlas_root, study)
        if pixels is None:
            return (
                [],
                None,
                (
                    f"{Path(study).name} is not among the FracAtlas radiographs shipped with the app: "
                    "name the full FracAtlas folder (the box above, or on Heat-map accuracy) to see it."
                ),
            )
        return [(Path(study).name, pixels)], None, None
    if mura_root is None:
        return [], None, "MURA images are read from your own copy: set the MURA folder in the sidebar."
    try:
        study_data = studies.load_study(study, mura_root)
    except studies.StudyLoadError as exc:
        return [], None, str(exc)
    return study_data.views, study_data.study_type, None


def show_studies(rows: pd.DataFrame, *, key: str, cams: bool, limit: int = MAX_GALLERY) -> None:
    """Draw the first ``limit`` studies of ``rows`` (columns ``study``, ``dataset``, and optionally
    ``label_text``/``study_probability``) with their views, and CAMs when ``cams``."""
    mura_root = state.current_mura_root()
    loaded = state.current_model() if cams else None
    for row in rows.head(limit).itertuples():
        facts = [DATASET_LABELS.get(row.dataset, row.dataset)]
        if hasattr(row, "label_text"):
            facts.append(f"label {row.label_text}")
        if hasattr(row, "study_probability"):
            facts.append(f"cached {getattr(row, 'output', P_ABNORMAL)} {row.study_probability:.3f}")
        st.markdown(f"**{row.study}** · " + " · ".join(facts))
        pictures, study_type, problem = _views(row.study, row.dataset, mura_root)
        if problem:
            st.caption(problem)
            continue
        if loaded is None:
            grid = st.columns(4)
            for index, (name, pixels) in enumerate(pictures):
                grid[index % 4].image(pixels, caption=name, width="stretch")
        else:
            views.show_study_views(loaded, pictures, study_type=study_type)
        if st.button("Open in Explain", key=f"{key}_open_{row.study}"):
            views.open_in_explain(_study_ref(row.study, row.dataset))


def group_members(model: str, group_rows: pd.DataFrame) -> pd.DataFrame:
    """The images of one near-duplicate group (rows of the duplicates table) with their labels."""
    labels = map_table(model)[["dataset", "key", "label_text"]]
    return group_rows.merge(labels, on=["dataset", "key"], how="left")


def label_conflict(members: pd.DataFrame) -> str | None:
    """One sentence when copies of one radiograph carry different labels of one dataset family (MURA's
    normal/abnormal, FracAtlas's fracture/no fracture); None when they agree."""
    family = np.where(members["dataset"] == "fracatlas", "FracAtlas", "MURA")
    for name, rows in members.groupby(family):
        labels = rows["label_text"].dropna()
        if labels.nunique() > 1:
            said = "; ".join(
                f"{label} in {', '.join(DATASET_LABELS.get(d, d) for d in sorted(set(part['dataset'])))}"
                for label, part in rows.groupby("label_text")
            )
            return (
                f"Label conflict: these near-copies carry different {name} labels ({said}). One of the labels "
                "is probably wrong, or the copies are not the same radiograph."
            )
    return None


def show_group(members: pd.DataFrame) -> None:
    """A near-duplicate group side by side, each image with its dataset and label; a conflict stands out."""
    conflict = label_conflict(members)
    if conflict:
        st.error(conflict, icon=":material/compare:")
    mura_root = state.current_mura_root()
    for start in range(0, len(members), 4):
        chunk = members.iloc[start : start + 4]
        for column, row in zip(st.columns(4), chunk.itertuples(), strict=False):
            pictures, _type, problem = _views(row.study, row.dataset, mura_root)
            name = Path(row.key).name
            picture = next((pixels for view, pixels in pictures if view == name), None)
            caption = f"{DATASET_LABELS.get(row.dataset, row.dataset)} · label {row.label_text} · {row.study}"
            if picture is None:
                column.caption(f"{caption}: {problem or 'not in your folder'}")
            else:
                column.image(picture, caption=caption, width="stretch")


def similar_picker(model: str, refs: pd.Series, *, key: str, k: int = 6) -> None:
    """For a page listing many studies (Browse, Error analysis): pick one of ``refs`` and see its
    :func:`show_similar_studies`; silent when the model has no cache or none of them is in it."""
    try:
        known = set(read_embeddings(model).studies)
    except CacheMissing:
        return
    choices = [ref for ref in dict.fromkeys(refs) if ref.removeprefix(studies.FRACATLAS_PREFIX) in known]
    if not choices:
        return
    ref = st.selectbox(
        "Similar studies of",
        choices,
        key=f"{key}_similar_study",
        format_func=studies.study_title,
        help="Its nearest studies in the model's feature space (Data map page).",
    )
    show_similar_studies(model, ref, key=key, k=k)
