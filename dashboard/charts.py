"""Plotly figure builders for the evaluation pages: ROC and PR curves per body part, a clickable
confusion matrix, a reliability diagram and training curves.

Every builder is a pure function of arrays and tables (no Streamlit, no model), so pages can cache
the inputs, rebuild only what a threshold changes, and tests can check figures directly.
Groups are named as in ``metrics_valid.json``: ``"overall"`` and the MURA study types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from core.eval.evaluation import REGION_LABELS
from core.eval.metrics import Confusion, PrCurve, RocCurve, format_interval

__all__ = [
    "OVERALL",
    "CELLS",
    "CELL_NAMES",
    "Interval",
    "group_label",
    "TRAINED_POOL",
    "UPPER_LIMB_POOL",
    "format_interval",
    "MIN_CASES",
    "MIN_PER_CLASS",
    "TOO_FEW",
    "INTERVAL_WIDTH",
    "too_few",
    "format_estimate",
    "operating_point",
    "roc_figure",
    "pr_figure",
    "confusion_figure",
    "selected_cell",
    "reliability_figure",
    "score_histogram",
    "member_dash",
    "training_curves_figure",
]

#: The group that pools every body part, as core.eval.metrics and metrics_valid.json name it.
OVERALL = "overall"
#: Confusion-matrix cells in reading order of the matrix (actual normal row first).
CELLS = ("TN", "FP", "FN", "TP")
CELL_NAMES = {
    "TN": "true negatives (normal, called normal)",
    "FP": "false positives (normal, called abnormal)",
    "FN": "false negatives (abnormal, called normal)",
    "TP": "true positives (abnormal, called abnormal)",
}
#: A bootstrap interval as metrics_valid.json stores it: {"point", "low", "high", ...}.
Interval = Mapping[str, Any]

_OVERALL_COLOUR = "#9e9e9e"  # readable on the dark theme and on white
_CLASSES = ["Normal", "Abnormal"]
_DASHES = ("solid", "dash", "dot", "dashdot")


#: What "overall" pools on MURA pages: the body parts the model was trained on, the one headline definition
#: on every page and in the report (issue 27). Pages showing another pool pass its own words as ``pool``.
TRAINED_POOL = "All trained body parts"
#: FracAtlas's pool: every upper-limb image (no FracAtlas region is a trained body part).
UPPER_LIMB_POOL = "All upper-limb images"


def group_label(group: str, pool: str = TRAINED_POOL) -> str:
    """'XR_HUMERUS' -> 'Humerus', 'overall' -> ``pool`` (the trained body parts unless said otherwise),
    FracAtlas 'hand' -> 'Hand/wrist/forearm'."""
    if group == OVERALL:
        return pool
    if group in REGION_LABELS:
        return REGION_LABELS[group].capitalize()
    return group.removeprefix("XR_").replace("_", " ").capitalize()


#: Below these counts (cases at the level shown; cases of the rarer class) a rate or its bootstrap
#: interval says more about chance than about the model ("-0.333 (-1.000–0.000)" from 4 studies),
#: so tables show the counts and :data:`TOO_FEW` instead.
MIN_CASES = 20
MIN_PER_CLASS = 5
TOO_FEW = "too few to estimate"
#: Table column width (px) that shows "0.809 (0.739–0.866)" and TOO_FEW whole: an auto-sized column
#: keeps the width of its first values, so a column that turns into intervals was cut off.
INTERVAL_WIDTH = 130


def too_few(n: int | None, n_positive: int | None) -> bool:
    """Whether ``n`` cases with ``n_positive`` positives are too few for a rate or an interval."""
    if n is None or n_positive is None:
        return True
    return n < MIN_CASES or min(n_positive, n - n_positive) < MIN_PER_CLASS


def format_estimate(summary: Mapping[str, Any], name: str, digits: int = 3) -> str:
    """One statistic of a metrics_valid.json group summary ({"n", "n_abnormal", name: interval}) as
    :func:`format_interval` writes it, or :data:`TOO_FEW` for a group below the minimum counts."""
    if too_few(summary.get("n"), summary.get("n_abnormal")):
        return TOO_FEW
    return format_interval(summary.get(name), digits)


def operating_point(confusion: Confusion) -> dict[str, float | None]:
    """Where a confusion sits on the ROC and PR planes: fpr, tpr (= recall) and precision."""
    precision = confusion.tp / (confusion.tp + confusion.fp) if confusion.tp + confusion.fp else None
    fpr = None if confusion.specificity is None else 1.0 - confusion.specificity
    return {"fpr": fpr, "tpr": confusion.sensitivity, "precision": precision}


def _colours(groups: list[str]) -> dict[str, str]:
    """One stable colour per group (overall in grey), so a body part looks the same in every chart."""
    palette = qualitative.Plotly
    body_parts = [g for g in groups if g != OVERALL]
    colours = {g: palette[i % len(palette)] for i, g in enumerate(sorted(body_parts))}
    colours[OVERALL] = _OVERALL_COLOUR
    return colours


def _threshold_text(thresholds: Mapping[str, float | None], group: str) -> str:
    value = thresholds.get(group)
    return "each body part at its own threshold" if value is None else f"threshold {value:.3f}"


def _operating_point_traces(
    colours: Mapping[str, str],
    confusions: Mapping[str, Confusion],
    thresholds: Mapping[str, float | None],
    x_key: str,
    y_key: str,
    drawn: set[str],
    pool: str = TRAINED_POOL,
) -> list[dict]:
    """One diamond per drawn curve at its group's current operating point, in the curve's legend group."""
    traces = []
    for group, confusion in confusions.items():
        if group not in drawn:
            continue
        point = operating_point(confusion)
        if point[x_key] is None or point[y_key] is None:
            continue
        traces.append(
            {
                "type": "scatter",
                "x": [point[x_key]],
                "y": [point[y_key]],
                "mode": "markers",
                "marker": {
                    "symbol": "diamond",
                    "size": 12,
                    "color": colours[group],
                    "line": {"width": 1.5, "color": "white"},
                },
                "legendgroup": group,
                "showlegend": False,
                "name": f"{group_label(group, pool)} operating point",
                "hovertemplate": (
                    f"{group_label(group, pool)}, {_threshold_text(thresholds, group)}<br>"
                    f"sensitivity {confusion.sensitivity:.3f}<br>"
                    + ("" if confusion.specificity is None else f"specificity {confusion.specificity:.3f}<br>")
                    + f"TP {confusion.tp} · FP {confusion.fp} · FN {confusion.fn} · TN {confusion.tn}<extra></extra>"
                ),
            }
        )
    return traces


def _square_figure(traces: list[dict], title: str, x_title: str, y_title: str) -> go.Figure:
    # One constructor call validates everything once; incremental update_layout/add_trace calls
    # cost several times more, and these figures are rebuilt whenever a threshold moves.
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": title},
            "height": 430,
            "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
            "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
            "xaxis": {"title": {"text": x_title}, "range": [-0.01, 1.01], "constrain": "domain"},
            "yaxis": {"title": {"text": y_title}, "range": [-0.01, 1.01], "scaleanchor": "x", "scaleratio": 1},
        },
    )


def roc_figure(
    curves: Mapping[str, RocCurve],
    confusions: Mapping[str, Confusion],
    thresholds: Mapping[str, float | None],
    auc_intervals: Mapping[str, Interval | None] | None = None,
    *,
    title: str = "ROC",
    pool: str = TRAINED_POOL,
) -> go.Figure:
    """ROC curve per group with its AUC (and 95% CI when given) in the legend, and a diamond at
    each group's operating point; ``thresholds`` label the diamonds (None: per body part)."""
    colours = _colours(list(curves))
    traces = [
        {
            "type": "scatter",
            "x": [0, 1],
            "y": [0, 1],
            "mode": "lines",
            "name": "chance",
            "line": {"dash": "dot", "color": "#bbbbbb"},
            "hoverinfo": "skip",
            "showlegend": False,
        }
    ]
    for group, curve in curves.items():
        if curve.auc is None:
            continue
        interval = (auc_intervals or {}).get(group) or {"point": curve.auc}
        traces.append(
            {
                "type": "scatter",
                "x": curve.fpr,
                "y": curve.tpr,
                "mode": "lines",
                "line": {"color": colours[group], "width": 2},
                "legendgroup": group,
                "name": f"{group_label(group, pool)} · AUC {format_interval(interval)}",
                "customdata": curve.thresholds,
                "hovertemplate": "threshold %{customdata:.3f}<br>FPR %{x:.3f} · TPR %{y:.3f}<extra></extra>",
            }
        )
    drawn = {group for group, curve in curves.items() if curve.auc is not None}
    traces += _operating_point_traces(colours, confusions, thresholds, "fpr", "tpr", drawn, pool)
    return _square_figure(traces, title, "1 − specificity (false-positive rate)", "Sensitivity")


def pr_figure(
    curves: Mapping[str, PrCurve],
    confusions: Mapping[str, Confusion],
    thresholds: Mapping[str, float | None],
    ap_intervals: Mapping[str, Interval | None] | None = None,
    *,
    title: str = "Precision–recall",
    pool: str = TRAINED_POOL,
) -> go.Figure:
    """Precision–recall curve per group with its average precision (and CI when given) in the
    legend, the abnormal prevalence as a dotted baseline, and each group's operating point."""
    colours = _colours(list(curves))
    traces = []
    for group, curve in curves.items():
        if curve.average_precision is None:
            continue
        interval = (ap_intervals or {}).get(group) or {"point": curve.average_precision}
        traces.append(
            {
                "type": "scatter",
                "x": curve.recall,
                "y": curve.precision,
                "mode": "lines",
                "line_shape": "hv",
                "line": {"color": colours[group], "width": 2},
                "legendgroup": group,
                "name": f"{group_label(group, pool)} · AP {format_interval(interval)}",
                # sklearn's curve ends at recall 0 with precision 1 and no threshold: pad to align.
                "customdata": np.append(curve.thresholds, np.nan),
                "hovertemplate": "threshold %{customdata:.3f}<br>recall %{x:.3f} · precision %{y:.3f}<extra></extra>",
            }
        )
        if curve.recall[0] == 1.0:  # sklearn starts at recall 1, where precision is the prevalence
            prevalence = float(curve.precision[0])
            traces.append(
                {
                    "type": "scatter",
                    "x": [0, 1],
                    "y": [prevalence, prevalence],
                    "mode": "lines",
                    "legendgroup": group,
                    "line": {"dash": "dot", "color": colours[group], "width": 1},
                    "showlegend": False,
                    "name": f"{group_label(group, pool)} prevalence",
                    "hovertemplate": f"{group_label(group, pool)}: share abnormal {prevalence:.3f}<extra></extra>",
                }
            )
    drawn = {group for group, curve in curves.items() if curve.average_precision is not None}
    traces += _operating_point_traces(colours, confusions, thresholds, "tpr", "precision", drawn, pool)
    return _square_figure(traces, title, "Recall (sensitivity)", "Precision (PPV)")


def confusion_figure(
    confusion: Confusion,
    *,
    title: str = "",
    selected: str | None = None,
    height: int = 320,
    classes: Sequence[str] = _CLASSES,
) -> go.Figure:
    """2x2 confusion matrix (rows: truth, columns: call) coloured by row share, counts in cells;
    ``classes`` names the negative and positive class (FracAtlas: "No fracture", "Fracture").

    Plotly heat maps emit no selection events in Streamlit (streamlit#8760), so an invisible
    square marker sits on each cell: clicking a cell selects that marker, whose customdata is the
    cell name (read it back with :func:`selected_cell`).
    """
    counts = np.array([[confusion.tn, confusion.fp], [confusion.fn, confusion.tp]])
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    names = np.array([["TN", "FP"], ["FN", "TP"]])
    text = [
        [f"<b>{names[r, c]}</b><br>{counts[r, c]}<br>{shares[r, c]:.0%} of row" for c in range(2)] for r in range(2)
    ]
    heatmap = {
        "type": "heatmap",
        "z": shares,
        "x": list(classes),
        "y": list(classes),
        "text": text,
        "texttemplate": "%{text}",
        "colorscale": "Blues",
        "zmin": 0,
        "zmax": 1,
        "showscale": False,
        "hoverinfo": "skip",
    }
    cells = {
        "type": "scatter",
        "mode": "markers",
        "showlegend": False,
        "name": "cells",
        "x": [classes[c] for r in range(2) for c in range(2)],
        "y": [classes[r] for r in range(2) for c in range(2)],
        "customdata": names.ravel().tolist(),
        "marker": {"symbol": "square", "size": 70, "color": "rgba(0,0,0,0)"},
        "selected": {"marker": {"opacity": 1}},
        "unselected": {"marker": {"opacity": 1}},
        "hovertemplate": "%{customdata}: click to list these studies<extra></extra>",
    }
    shapes = []
    if selected in CELLS:
        row, column = divmod(CELLS.index(selected), 2)
        shapes.append(
            {
                "type": "rect",
                "x0": column - 0.48,
                "x1": column + 0.48,
                "y0": row - 0.48,
                "y1": row + 0.48,
                "line": {"color": "#d62728", "width": 3},
            }
        )
    return go.Figure(
        data=[heatmap, cells],
        layout={
            "title": {"text": title},
            "height": height,
            "shapes": shapes,
            "margin": {"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
            # Fixed ranges: autorange would pad the axes to fit the large click markers.
            "xaxis": {
                "title": {"text": "Called by the model"},
                "fixedrange": True,
                "tickangle": 0,
                "range": [-0.5, 1.5],
            },
            "yaxis": {"title": {"text": "Truth"}, "fixedrange": True, "range": [1.5, -0.5]},
            "clickmode": "event+select",
            "dragmode": False,
        },
    )


def selected_cell(event: Mapping[str, Any] | None) -> str | None:
    """The cell a Streamlit plotly selection event picked on a :func:`confusion_figure`, if any."""
    selection = event.get("selection") if isinstance(event, Mapping) else None
    points = selection.get("points") if isinstance(selection, Mapping) else None
    for point in points if isinstance(points, list) else []:  # from the browser: anything may come
        cell = point.get("customdata") if isinstance(point, Mapping) else None
        if isinstance(cell, list):
            cell = cell[0] if cell else None
        if isinstance(cell, str) and cell in CELLS:
            return cell
    return None


def reliability_figure(
    bins: Mapping[str, tuple[pd.DataFrame, float | None]], *, title: str = "Calibration", pool: str = TRAINED_POOL
) -> go.Figure:
    """Reliability diagram: observed share abnormal against mean predicted probability per bin,
    with each group's ECE in the legend, above a bar chart of how many cases fall in each bin."""
    colours = _colours(list(bins))
    traces = [
        {
            "type": "scatter",
            "x": [0, 1],
            "y": [0, 1],
            "mode": "lines",
            "name": "perfect calibration",
            "line": {"dash": "dot", "color": "#bbbbbb"},
            "hoverinfo": "skip",
        }
    ]
    for group, (table, ece) in bins.items():
        if table.empty:
            continue
        ece_text = "—" if ece is None else f"{ece:.3f}"
        traces.append(
            {
                "type": "scatter",
                "x": table["mean_predicted"],
                "y": table["fraction_positive"],
                "mode": "lines+markers",
                "line": {"color": colours[group]},
                "legendgroup": group,
                "name": f"{group_label(group, pool)} · ECE {ece_text}",
                "customdata": table["count"],
                "hovertemplate": (
                    "mean predicted %{x:.3f}<br>share abnormal %{y:.3f}<br>%{customdata} cases<extra></extra>"
                ),
            }
        )
        traces.append(
            {
                "type": "bar",
                "x": (table["bin_low"] + table["bin_high"]) / 2,
                "y": table["count"],
                "width": (table["bin_high"] - table["bin_low"]) * 0.9,
                "marker": {"color": colours[group]},
                "opacity": 0.45,
                "legendgroup": group,
                "showlegend": False,
                "name": f"{group_label(group, pool)} count",
                "hovertemplate": "%{y} cases<extra></extra>",
                "xaxis": "x2",
                "yaxis": "y2",
            }
        )
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": title},
            "height": 480,
            "barmode": "overlay",
            "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
            "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
            "xaxis": {"range": [0, 1], "matches": "x2", "showticklabels": False, "anchor": "y"},
            "yaxis": {"range": [0, 1], "title": {"text": "Observed share abnormal"}, "domain": [0.3, 1.0]},
            "xaxis2": {"range": [0, 1], "title": {"text": "Predicted probability of abnormal"}, "anchor": "y2"},
            "yaxis2": {"title": {"text": "Cases"}, "domain": [0.0, 0.24], "anchor": "x2"},
        },
    )


def score_histogram(
    table: pd.DataFrame,
    *,
    classes: Sequence[str] = _CLASSES,
    title: str = "",
    bins: int = 20,
    score: str = "P(abnormal)",
) -> go.Figure:
    """Overlaid histograms of ``probability`` (the ``score`` named on the axis) for label 0 and label 1
    (named by ``classes``), on [0, 1] in ``bins`` equal bins: the score distribution where no AUROC is
    meaningful."""
    traces = [
        go.Histogram(
            x=table.loc[table["label"] == label, "probability"],
            name=classes[label],
            opacity=0.7,
            xbins={"start": 0.0, "end": 1.0, "size": 1.0 / bins},
        )
        for label in (0, 1)
    ]
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": title},
            "barmode": "overlay",
            "height": 320,
            "xaxis": {"title": {"text": score}, "range": [0, 1]},
            "yaxis": {"title": {"text": "Images"}},
            "margin": {"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        },
    )


def member_dash(index: int) -> str:
    """The line dash of ensemble member ``index`` in :func:`training_curves_figure`."""
    return _DASHES[index % len(_DASHES)]


def training_curves_figure(log: pd.DataFrame, *, kept_epochs: Sequence[int | None] = ()) -> go.Figure:
    """Training log per epoch: loss columns on the left, holdout scores on the right, and a dotted
    line at each epoch that was kept. Bookkeeping columns (lr, seconds) are left out.

    An ensemble's log has a "member" column (0, 1, ... as in the card's "members"): each member gets
    its own line per metric (same colour, another dash: :func:`member_dash`) and ``kept_epochs[i]`` is
    member i's kept epoch. The legend names each metric once (clicking it toggles every member's line);
    the member is in the hover text. A single run passes ``kept_epochs=[best_epoch]``.
    """
    skipped = {"epoch", "lr", "seconds", "member"}
    numeric = [c for c in log.columns if c not in skipped and pd.api.types.is_numeric_dtype(log[c])]
    losses = [c for c in numeric if "loss" in c]
    scores = [c for c in numeric if c not in losses]
    runs = list(log.groupby("member", sort=True)) if "member" in log.columns else [(None, log)]
    metric_colours = {column: qualitative.Plotly[i % len(qualitative.Plotly)] for i, column in enumerate(numeric)}
    traces = []
    for index, (member, run) in enumerate(runs):
        epochs = run["epoch"] if "epoch" in run.columns else pd.Series(np.arange(1, len(run) + 1))
        suffix = "" if member is None else f" · member {member}"
        for axis, columns in (("x", losses), ("x2", scores)):
            traces += [
                {
                    "type": "scatter",
                    "x": epochs,
                    "y": run[column],
                    "mode": "lines+markers",
                    "name": column.replace("_", " "),
                    "legendgroup": column,
                    "showlegend": index == 0,
                    "hovertemplate": f"{column.replace('_', ' ')}{suffix}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
                    "xaxis": axis,
                    "yaxis": axis.replace("x", "y"),
                    "line": {"color": metric_colours[column], "dash": member_dash(index)},
                }
                for column in columns
            ]
    all_epochs = log["epoch"] if "epoch" in log.columns else pd.Series([1, max(1, len(log))])
    first_epoch, last_epoch = float(all_epochs.min()), float(all_epochs.max())
    # Fixed ranges, or plotly's autorange would stretch the axis to fit the annotations.
    epoch_range = [first_epoch - 0.3, last_epoch + 0.3]
    shapes, annotations = (
        [],
        [
            {
                "text": text,
                "x": x,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "showarrow": False,
                "xanchor": "center",
                "yanchor": "bottom",
                "font": {"size": 13},
            }
            for text, x in (("Loss", 0.225), ("Holdout scores", 0.775))
        ],
    )
    for index, epoch in enumerate(kept_epochs):
        if epoch is None:
            continue
        member = "" if len(kept_epochs) == 1 else f" (member {index})"
        shapes += [
            {
                "type": "line",
                "x0": epoch,
                "x1": epoch,
                "y0": 0,
                "y1": 1,
                "xref": axis,
                "yref": f"{axis.replace('x', 'y')} domain",
                "line": {"dash": "dot", "color": "#888888"},
            }
            for axis in ("x", "x2")
        ]
        late = epoch > (first_epoch + last_epoch) / 2  # label on the side with room
        annotations.append(
            {
                "text": f"kept: epoch {epoch}{member}",
                "x": epoch,
                "y": 0.02 + 0.08 * index,
                "xref": "x2",
                "yref": "y2 domain",
                "showarrow": False,
                "xanchor": "right" if late else "left",
                "font": {"size": 11},
            }
        )
    return go.Figure(
        data=traces,
        layout={
            "height": 380,
            "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
            "shapes": shapes,
            "annotations": annotations,
            "legend": {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
            "xaxis": {"domain": [0, 0.45], "title": {"text": "Epoch"}, "dtick": 1, "anchor": "y", "range": epoch_range},
            "yaxis": {"anchor": "x"},
            "xaxis2": {
                "domain": [0.55, 1],
                "title": {"text": "Epoch"},
                "dtick": 1,
                "anchor": "y2",
                "range": epoch_range,
            },
            "yaxis2": {"anchor": "x2"},
        },
    )
