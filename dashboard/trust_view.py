"""Can the heat maps be trusted? The cached sanity checks and faithfulness of each CAM method as a
scorecard with a plain verdict, the randomisation cascade, and how far the metrics' rankings agree.

Everything comes from the cache ``python -m core.trust`` wrote (:func:`core.eval.trust.read_cache`);
nothing here runs a model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.eval import trust
from core.eval.localization_sweep import default_target
from core.eval.trust import METRICS, method_verdicts, rank_of
from core.model.card import ModelCardError, model_outputs
from core.model.registry import COMPLEMENTS, FRACTURE
from core.store.artifacts import CachedPair, CachePairError, ModelArtifacts, file_version
from dashboard import state
from dashboard.charts import format_interval

__all__ = [
    "trust_target",
    "cached_trust",
    "scorecard",
    "scorecard_line",
    "cascade_figure",
    "agreement_figure",
    "layers_table",
    "show_scorecard",
]

# Words, not emoji: a browser without an emoji font would show boxes.
_STATUS = {"passes": "passes", "fails": "FAILS", "unclear": "unclear"}


#: Plain words per explained output: (its class, the opposite class).
_CLASSES = {"abnormal": ("P(abnormal)", "P(normal)"), FRACTURE: ("P(fracture)", "P(no fracture)")}


def trust_target(model: str, cam_target: str | None = None) -> str:
    """The output whose sanity checks apply: that of ``cam_target`` ("normal" -> abnormal, "no fracture"
    -> fracture), else the model's fracture output where it has one (as core.trust), else abnormal."""
    if cam_target is not None:
        return COMPLEMENTS.get(cam_target, cam_target)
    try:
        return default_target(model_outputs(state.read_card(model) or {}))
    except ModelCardError:
        return "abnormal"


@st.cache_data(show_spinner=False)
def _read(directory: str, target: str, rows_version: int, summary_version: int) -> CachedPair | None:
    return trust.read_cache(ModelArtifacts(Path(directory)), target)


def cached_trust(model: str, target: str | None = None) -> CachedPair | None:
    """The model's cached sanity checks of ``target``'s output (default :func:`trust_target`), re-read
    when either file changes; None before the first run.

    Raises:
        CachePairError: the files are unreadable or do not belong together.
    """
    files, target = ModelArtifacts.of(model), trust_target(model, target)
    paths = files.resolve(files.trust_rows(target)), files.resolve(files.trust_summary(target))
    versions = file_version(paths[0]), file_version(paths[1])
    return _read(str(files.directory), target, *versions)


def _classes(summary: dict) -> tuple[str, str]:
    return _CLASSES[summary.get("target", "abnormal")]


def scorecard(summary: dict) -> pd.DataFrame:
    """One row per method at the default layer: both sanity checks, the faithfulness figures with
    their CIs, the FracAtlas hit rate when localisation is cached, and the verdict sentence."""
    verdicts = method_verdicts(summary)
    hits = summary["agreement"]["values"].get("localisation", {})
    explained, opposite = _classes(summary)
    rows = []
    for group in (g for g in summary["groups"] if g["layer"] == summary["default_layer"]):
        row = {
            "method": group["method"],
            "randomisation check": _STATUS[group["randomisation"]],
            "rank corr., layers above random": format_interval(group["cascade"][group["sanity_stage"]]["spearman"]),
            "logit check": _STATUS[group["logit_check"]],
            f"rank corr., {opposite} vs {explained}": format_interval(group["logit"]["spearman"]),
        }
        for key in ("deletion_auc", "insertion_auc", "drop", "increase", "road"):
            if key in group:
                row[f"{METRICS[key][0]} ({'higher' if METRICS[key][1] else 'lower'} is better)"] = format_interval(
                    group[key], digits=1 if key in ("drop", "increase") else 3
                )
        if hits:
            row["FracAtlas hit rate"] = f"{hits[group['method']]:.3f}" if group["method"] in hits else "—"
        row["verdict"] = verdicts[group["method"]]
        rows.append(row)
    return pd.DataFrame(rows)


def scorecard_line(model: str, method: str, cam_target: str | None = None) -> str | None:
    """A short line on ``method`` (explaining ``cam_target``'s output) for the Explain page's method
    picker; None without a readable cache."""
    try:
        cache = cached_trust(model, cam_target)
    except CachePairError:
        return None
    if cache is None:
        return None
    summary = cache.summary
    group = next(
        (g for g in summary["groups"] if g["method"] == method and g["layer"] == summary["default_layer"]), None
    )
    if group is None:
        return f"{method} is not in the trust scorecard (slow and layer-free methods are opt-in)."
    checks = (
        "passes both sanity checks"
        if group["randomisation"] == group["logit_check"] == "passes"
        else f"randomisation check: {group['randomisation']}, logit check: {group['logit_check']}"
    )
    agreement = summary["agreement"]
    ranks = [
        f"{METRICS[k][0]} {rank_of(agreement, k, method)}/{len(agreement['values'][k])}"
        for k in ("deletion_auc", "insertion_auc")
        if method in agreement["values"].get(k, {})
    ]
    return (
        f"Trust scorecard ({summary['n_images']} radiographs, default layer): {checks}"
        + (f"; ranks {', '.join(ranks)}" if ranks else "")
        + "."
    )


def cascade_figure(summary: dict, layer: str) -> go.Figure:
    """Adebayo's cascade: rank correlation of trained and randomised maps as layers are re-initialised."""
    figure = go.Figure()
    stages = ["trained", *summary["stages"]]
    for group in (g for g in summary["groups"] if g["layer"] == layer):
        points = [1.0] + [s["spearman"]["point"] for s in group["cascade"]]
        high = [0.0] + [(s["spearman"]["high"] or p) - p for s, p in zip(group["cascade"], points[1:], strict=True)]
        low = [0.0] + [p - (s["spearman"]["low"] or p) for s, p in zip(group["cascade"], points[1:], strict=True)]
        figure.add_trace(
            go.Scatter(
                x=stages,
                y=points,
                name=group["method"],
                mode="lines+markers",
                error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
            )
        )
    figure.add_hline(y=summary["sanity_threshold"], line_dash="dash", annotation_text="sanity threshold")
    figure.update_layout(
        xaxis_title="weights re-initialised (top down)",
        yaxis_title="Spearman vs trained map",
        yaxis_range=[-0.5, 1.05],
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
    )
    return figure


def agreement_figure(agreement: dict) -> go.Figure:
    """Kendall's tau between every two metrics' rankings of the methods (1: same order, -1: reversed)."""
    names = [METRICS[k][0] for k in agreement["metrics"]]
    figure = go.Figure(
        go.Heatmap(
            z=agreement["kendall_tau"],
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            texttemplate="%{z:.2f}",
            colorbar={"title": "Kendall's tau"},
        )
    )
    figure.update_layout(height=480, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_autorange="reversed")
    return figure


def layers_table(summary: dict) -> pd.DataFrame:
    """Both sanity checks of every method at every layer: does the default layer's verdict hold elsewhere?"""
    explained, opposite = _classes(summary)
    return pd.DataFrame(
        [
            {
                "method": g["method"],
                "layer": g["layer"],
                "randomisation check": _STATUS[g["randomisation"]],
                "rank corr., layers above random": format_interval(g["cascade"][g["sanity_stage"]]["spearman"]),
                "logit check": _STATUS[g["logit_check"]],
                f"rank corr., {opposite} vs {explained}": format_interval(g["logit"]["spearman"]),
            }
            for g in summary["groups"]
        ]
    )


def show_scorecard(model: str) -> None:
    """The page section: scorecard, verdicts, cascade, agreement; one sentence when there is no cache.
    A two-output model gets a choice of output, its fracture output first."""
    st.subheader("Can the heat maps be trusted?")
    target = trust_target(model)
    if target == FRACTURE:
        target = st.radio(
            "Heat maps of the output",
            (FRACTURE, "abnormal"),
            horizontal=True,
            key="trust_output",
            help="Each output has its own maps and its own sanity checks: fracture (FracAtlas's label, "
            "checked on FracAtlas images it never trained on) or abnormal (MURA's label).",
        )
    try:
        cache = cached_trust(model, target)
    except CachePairError as exc:
        st.error(str(exc))
        return
    if cache is None:
        st.caption(
            f"No sanity-check cache of the {target} output for **{model}** yet: run `python -m core.trust "
            f"--mura-root PATH --fracatlas-root ../shared/fracatlas --model {model} --target {target}` and reload."
        )
        return
    summary = cache.summary
    explained, opposite = _classes(summary)
    sources = ", ".join(f"{n} {name}" for name, n in summary["sources"].items())
    st.caption(
        f"{summary['n_images']} radiographs ({sources}; a fixed, seeded sample), {explained} explained at the "
        f"default layer, {summary['default_layer']}. **Randomisation check** (Adebayo et al. 2018): the weights "
        "are re-initialised from the output layer down; a map that keeps its rank correlation with the "
        f"trained map above {summary['sanity_threshold']} (whole 95% interval) once every layer above the "
        "explained one is noise shows that layer's activations, not the model's decision. "
        f"**Logit check**: the map of {opposite} should differ from the map of {explained}. **Deletion / "
        f"insertion AUC** (RISE): {explained} as the map's most relevant pixels are blacked out / restored "
        f"onto a blurred copy ({summary['curve_steps']} steps). **Average Drop / Increase in Confidence**: "
        f"{explained} of the image multiplied by the map. 95% bootstrap intervals over images."
    )
    trust_headline = trust.headline(ModelArtifacts.of(model), target)
    if trust_headline:
        st.markdown(f"**{trust_headline}**")
    table = scorecard(summary)
    st.table(table.drop(columns="verdict").set_index("method"))
    for sentence in table["verdict"]:
        st.markdown(f"- {sentence}")
    with st.expander("Randomisation cascade and other layers"):
        layer = st.selectbox(
            "Layer",
            sorted({g["layer"] for g in summary["groups"]}),
            index=sorted({g["layer"] for g in summary["groups"]}).index(summary["default_layer"]),
            key="trust_layer",
        )
        st.plotly_chart(cascade_figure(summary, layer), key="trust_cascade")
        st.dataframe(layers_table(summary), hide_index=True, key="trust_layers")
    with st.expander("Do the metrics agree? (Kendall's tau between rankings)"):
        agreement = summary["agreement"]
        st.caption(
            "Each metric ranks the methods at the default layer; tau 1 means the same order, -1 the "
            "reverse. Metrics that disagree cannot all be right about which map to believe "
            "(MetaQuantus, Hedström et al. 2023)."
        )
        st.plotly_chart(agreement_figure(agreement), key="trust_agreement")
        st.dataframe(
            pd.DataFrame({METRICS[k][0]: pd.Series(order) for k, order in agreement["rankings"].items()}),
            key="trust_rankings",
        )
