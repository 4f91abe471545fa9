"""Performance: ROC and PR per body part, confusion matrices at a threshold you move, kappa with
CIs, image- or study-level, calibration, on MURA valid/ or on FracAtlas (external, fracture label,
hardware apart, leg/hip out of scope; a fracture-aware model's fracture output on its test part by default).
Everything comes from the cached evaluation; no model runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.data.fracture_split import SplitError
from core.eval import metrics
from core.eval.evaluation import FRACATLAS_STRATA
from core.eval.metrics import BootstrapInterval, Confusion
from core.model.card import MURA_LABEL, model_outputs, trained_study_types
from core.model.registry import FRACTURE
from dashboard import charts, evaluation, model_compare, state
from dashboard.charts import (
    INTERVAL_WIDTH,
    OVERALL,
    TOO_FEW,
    TRAINED_POOL,
    UPPER_LIMB_POOL,
    format_estimate,
    format_interval,
    group_label,
    too_few,
)

_INTERVAL_COLUMN = st.column_config.TextColumn(width=INTERVAL_WIDTH)
_THRESHOLD_HELP = "'per part': each body part at its own threshold."


@dataclass(frozen=True)
class Scope:
    """What the page shows: which evaluation, at which level, and which groups get charts."""

    model: str
    card: dict | None
    dataset: str
    stratum: str
    output: str
    level: str
    evaluated: evaluation.LevelEvaluation
    trained: set[str]

    @property
    def external(self) -> bool:
        """FracAtlas (fracture label, image level) rather than MURA."""
        return self.dataset == evaluation.FRACATLAS

    @property
    def fracture_output(self) -> bool:
        """FracAtlas scored on the fracture output's P(fracture), its test part only."""
        return self.external and self.output == FRACTURE

    @property
    def score(self) -> str:
        """What the probability on this page is of."""
        return "P(fracture)" if self.fracture_output else "P(abnormal)"

    @property
    def classes(self) -> tuple[str, str]:
        """The negative and positive class, as the confusion matrices name them."""
        return ("No fracture", "Fracture") if self.external else ("Normal", "Abnormal")

    @property
    def pool(self) -> str:
        """What "overall" pools here: MURA's trained body parts, or every FracAtlas upper-limb image."""
        return UPPER_LIMB_POOL if self.external else TRAINED_POOL

    def label(self, group: str) -> str:
        """A group's name in this page's tables and charts."""
        return group_label(group, self.pool)

    @property
    def resampled(self) -> str:
        """What the bootstrap resamples."""
        return "radiographs" if self.external else "studies"


def choose_dataset(model: str, card: dict | None) -> tuple[str, str, str]:
    """The dataset radio (and, for FracAtlas, which output is scored, what its label means and the stratum
    radio): (dataset, stratum, output)."""
    dataset = st.radio(
        "Dataset",
        list(evaluation.DATASET_LABELS),
        format_func=evaluation.DATASET_LABELS.get,
        horizontal=True,
        key="performance_dataset",
        help="MURA valid/ is the test set of the data the model was trained on; FracAtlas is "
        "another hospital group's radiographs with expert fracture labels, never seen in "
        + (
            "the MURA output's training (the fracture output trained on part of it; its test part is scored)."
            if FRACTURE in model_outputs(card or {})
            else "training."
        ),
    )
    if dataset != evaluation.FRACATLAS:
        return dataset, evaluation.TRAINED, MURA_LABEL
    output = choose_output(model, card)
    if output == FRACTURE:
        st.info(
            "**The fracture output on FracAtlas's test part.** P(fracture) was trained on FracAtlas's upper-limb "
            "fracture labels, so only the fixed test part (about a fifth of the images, by copy group) is scored "
            "here: images no member trained or tuned its threshold on. The images of the training folds are in no "
            "table or chart. Image level only (copies of one radiograph are resampled together). Metal hardware is "
            f"shown apart (choose the stratum below). '{UPPER_LIMB_POOL}' means every upper-limb image of the test "
            "part; leg/hip, which the fracture output never trained on, is described at the bottom, not scored. "
            "Every region is judged at the model card's one fracture threshold."
        )
    else:
        st.info(
            "**External validation on FracAtlas.** The label here is **fracture**, not MURA's broader "
            "**abnormal**: a radiograph with metal hardware, arthritis or another lesion but no fracture counts "
            "as *no fracture*, so the model can be 'wrong' here while right on MURA's terms. Hardware images are "
            "therefore shown apart (choose the stratum below). Image level only (FracAtlas has no studies; copies "
            f"of one radiograph are resampled together). '{UPPER_LIMB_POOL}' means every upper-limb image; "
            "leg/hip, which the model never saw, is described at the bottom, not scored. Each region is judged at "
            "the model card's threshold of the nearest trained part: hand/wrist/forearm at the forearm's, "
            "shoulder at the humerus', whole arm at the card's default."
        )
    stratum = st.radio(
        "Images",
        list(FRACATLAS_STRATA),
        horizontal=True,
        key="performance_stratum",
        format_func=lambda s: FRACATLAS_STRATA[s].capitalize(),
    )
    return dataset, stratum, output


def choose_output(model: str, card: dict | None) -> str:
    """Which output FracAtlas is scored on: a fracture-aware model's fracture output by default, with the MURA
    output (P(abnormal), zero-shot) a click away; P(abnormal) for any other model, as before."""
    if FRACTURE not in model_outputs(card or {}):
        return MURA_LABEL
    state.evaluation_or_stop(model, evaluation.FRACATLAS)  # a pair from two runs stops the page with one sentence
    try:
        outputs = evaluation.fracatlas_outputs(model)
    except SplitError as exc:
        st.warning(f"{exc} So the fracture output's FracAtlas figures cannot be shown, only the MURA output's.")
        return MURA_LABEL
    if FRACTURE not in outputs:
        st.caption(
            "This model has a fracture output, but no cached test-part evaluation of it (or no split file): run "
            f"`python -m core.evaluate --dataset fracatlas --root PATH --model {model}`. Until then only the MURA "
            "output is scored here."
        )
        return MURA_LABEL
    return st.radio(
        "Output",
        outputs,
        format_func=evaluation.OUTPUT_LABELS.get,
        key="performance_output",
        help="The fracture output was trained for FracAtlas's label, so it is scored only on the test part it "
        "never saw. The MURA output was trained for MURA's broader 'abnormal' and never on FracAtlas, so every "
        "image counts as unseen (zero-shot).",
    )


def load_scope(model: str, card: dict | None, dataset: str, stratum: str, output: str) -> Scope:
    """The cached evaluation at the chosen level, or how to make it and a stopped page."""
    state.evaluation_or_stop(model, dataset)  # a pair from two runs stops the page with one sentence
    external = dataset == evaluation.FRACATLAS
    level = "image" if external else evaluation.level_control()
    evaluated = evaluation.level_evaluation(model, level, dataset, stratum, output)
    if evaluated is None:
        command = (
            f"python -m core.evaluate --dataset fracatlas --root PATH --model {model}"
            if external
            else "make evaluate (python -m core.evaluate --mura-root PATH --split valid)"
        )
        st.info(
            f"No cached evaluation of **{model}** on {evaluation.DATASET_LABELS[dataset]} "
            f"{'for these images ' if external else ''}yet. Run `{command}` and reload."
        )
        st.stop()
    # MURA: only the body parts the model was trained on, and their pool (the TRAINED stratum); the other
    # parts are counted apart, not scored (core.model.card.out_of_scope_reason).
    trained = (
        set(evaluated.groups) - {OVERALL} if external else set(trained_study_types(card or {})) or set(evaluated.groups)
    )
    return Scope(model, card, dataset, stratum, output, level, evaluated, trained)


def describe(scope: Scope, cached: dict | None) -> None:
    """One caption: what was evaluated, and what the charts leave out."""
    table = scope.evaluated.table
    if scope.external:
        part = ", test part only" if scope.fracture_output else ""
        st.caption(
            f"{scope.model}'s {scope.score} on FracAtlas, {FRACATLAS_STRATA[scope.stratum]}{part}: {len(table)} "
            f"images ({int(table['label'].sum())} with a fracture), {table['study_type'].nunique()} region(s), "
            "from the cached predictions (no model runs on this page)."
        )
        if scope.stratum == "hardware" and table["label"].nunique() < 2:
            st.warning(
                f"Every one of these {len(table)} hardware images "
                f"{'has' if table['label'].all() else 'lacks'} a fracture, so AUROC and one of "
                "sensitivity/specificity are undefined here: read the confusion counts."
            )
        return
    split = ((cached or {}).get("evaluation") or {}).get("split", "valid")
    st.caption(
        f"{scope.model} on MURA {split}/, the body parts it was trained on: {len(table)} "
        f"{'studies' if scope.level == 'study' else 'images'}, {table['study_type'].nunique()} body part(s); "
        f"'{TRAINED_POOL}' pools them, as on the Overview page and in the report. From the cached predictions "
        "(no model runs on this page)."
    )
    everything = evaluation.evaluation_table(scope.model, scope.dataset, "all")
    others = everything[~everything["study_type"].isin(scope.trained)] if everything is not None else None
    if others is not None and not others.empty:
        counts = others.drop_duplicates("study_path")["study_type"].value_counts().sort_index()
        st.caption(
            "Out of scope, not scored: "
            + ", ".join(f"{group_label(t).lower()} {n}" for t, n in counts.items())
            + " studies of body parts the model was not trained on are in no table or chart here."
        )


def threshold_text(threshold: float | None) -> str:
    """A group's threshold; "per part" for a pool judged at each body part's own."""
    return "per part" if threshold is None else f"{threshold:.3f}"


def rate_text(point: float | None, confusion: Confusion, interval: BootstrapInterval | None = None) -> str:
    """A live rate as text: TOO_FEW below the minimum counts, else the point ("—" when undefined)
    and, when bootstrapped, its interval."""
    if too_few(confusion.n, confusion.tp + confusion.fn):
        return TOO_FEW
    if interval is not None:
        return format_interval(interval.as_json())
    return format_interval({"point": point})


def show_confusions(
    scope: Scope, confusions: Mapping[str, Confusion], thresholds: Mapping[str, float | None], plotted: list[str]
) -> None:
    """One confusion matrix per charted group, at the current thresholds."""
    st.subheader("Confusion matrices at your thresholds")
    # One column even when nothing can be plotted (st.columns needs at least one), so zip may stop short.
    for column, group in zip(st.columns(len(plotted) or 1), plotted, strict=False):
        threshold = thresholds[group]
        title = scope.label(group) + ("" if threshold is None else f" · ≥ {threshold:.3f}")
        column.plotly_chart(
            charts.confusion_figure(confusions[group], title=title, height=280, classes=scope.classes),
            key=f"performance_confusion_{group}",
            config={"displayModeBar": False},
        )


def show_live_table(
    scope: Scope,
    confusions: Mapping[str, Confusion],
    thresholds: Mapping[str, float | None],
    intervals: Mapping[str, Mapping[str, BootstrapInterval]],
) -> None:
    """Counts and rates at the user's thresholds (bootstrap CIs when asked for)."""

    def rate(group: str, name: str, point: float | None) -> str:
        return rate_text(point, confusions[group], (intervals.get(group) or {}).get(name))

    live = pd.DataFrame(
        [
            {
                "Body part": scope.label(group),
                "Threshold": threshold_text(thresholds[group]),
                "Studies" if scope.level == "study" else "Images": c.n,
                "TP": c.tp,
                "FP": c.fp,
                "FN": c.fn,
                "TN": c.tn,
                "Sensitivity": rate(group, "sensitivity", c.sensitivity),
                "Specificity": rate(group, "specificity", c.specificity),
                "Kappa": rate(group, "kappa", c.kappa),
                "Accuracy": rate_text(c.accuracy, c),
            }
            for group, c in confusions.items()
        ]
    )
    st.markdown(
        f"**At your thresholds** ({scope.level} level; point values computed now from the cached "
        "probabilities" + (f", with {evaluation.APP_BOOTSTRAP}-resample bootstrap 95% CIs)" if intervals else ")")
    )
    st.dataframe(
        live,
        hide_index=True,
        width="stretch",
        column_config={
            "Threshold": st.column_config.TextColumn(help=_THRESHOLD_HELP),
            **dict.fromkeys(("Sensitivity", "Specificity", "Kappa", "Accuracy"), _INTERVAL_COLUMN),
        },
    )


def show_cached_table(scope: Scope, cached: dict | None, thresholds: Mapping[str, float], groups: list[str]) -> dict:
    """The cached evaluation's CIs at the card's thresholds; returns its summaries at this level."""
    matches = evaluation.cached_operating_point(cached, thresholds, groups)
    cached_level = (cached or {}).get(scope.level) or {}
    if not cached_level:
        st.caption("The cached metrics file is missing, so no confidence intervals from the evaluation run are shown.")
        return cached_level
    # The cache gives a pool no threshold; one judged at a single threshold (the fracture output's) shows it.
    one_threshold = set(((cached or {}).get("thresholds") or {}).values())
    rows = []
    for group in groups:
        summary = cached_level.get(group)
        if not summary:
            continue
        threshold = summary.get("threshold")
        if threshold is None and len(one_threshold) == 1:
            threshold = next(iter(one_threshold))
        ece = (
            TOO_FEW
            if too_few(summary.get("n"), summary.get("n_abnormal"))
            else format_interval({"point": summary.get("ece")})
        )
        rows.append(
            {
                "Body part": scope.label(group),
                "Threshold": threshold_text(threshold),
                "AUROC": format_estimate(summary, "auroc"),
                "Kappa": format_estimate(summary, "kappa"),
                "Sensitivity": format_estimate(summary, "sensitivity"),
                "Specificity": format_estimate(summary, "specificity"),
                "ECE": ece,
                "Matches yours": "yes" if matches.get(group) else "no",
            }
        )
    n_boot = cached.get("n_boot", "")
    resamples = f"from {n_boot} resamples of {scope.resampled}" if n_boot else f"resampling {scope.resampled}"
    st.markdown(
        f"**At the model card's thresholds** (the cached evaluation: 95% bootstrap CIs {resamples}; "
        "AUROC and ECE do not depend on the threshold)"
    )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "Threshold": st.column_config.TextColumn(help=_THRESHOLD_HELP),
            **dict.fromkeys(("AUROC", "Kappa", "Sensitivity", "Specificity"), _INTERVAL_COLUMN),
            "Matches yours": st.column_config.TextColumn(
                help="Are your thresholds the card's for this row (so these CIs apply to the table above)?"
            ),
        },
    )
    return cached_level


def show_curves(
    scope: Scope,
    confusions: Mapping[str, Confusion],
    thresholds: Mapping[str, float | None],
    plotted: list[str],
    cached_level: dict,
) -> None:
    """Threshold-free ROC and PR curves, with the current operating points marked."""
    evaluated = scope.evaluated
    auc_intervals = {group: summary.get("auroc") for group, summary in cached_level.items()}
    roc_column, pr_column = st.columns(2)
    roc_column.plotly_chart(
        charts.roc_figure(
            {g: evaluated.roc[g] for g in plotted},
            confusions,
            thresholds,
            auc_intervals,
            title=f"ROC ({scope.level} level)",
            pool=scope.pool,
        ),
        key="performance_roc",
    )
    pr_column.plotly_chart(
        charts.pr_figure(
            {g: evaluated.pr[g] for g in plotted},
            confusions,
            thresholds,
            evaluation.ap_intervals(scope.model, scope.level, plotted, scope.dataset, scope.stratum, scope.output),
            title=f"Precision–recall ({scope.level} level)",
            pool=scope.pool,
        ),
        key="performance_pr",
    )
    st.caption(
        "Legends: AUROC and average precision with the cached evaluation's 95% bootstrap CIs "
        f"(resampling {scope.resampled}). Diamonds mark your current operating points."
    )


def show_calibration(scope: Scope, plotted: list[str]) -> None:
    """The reliability diagram and what ECE means."""
    st.subheader("Calibration")
    st.plotly_chart(
        evaluation.reliability_chart(scope.model, scope.level, plotted, scope.dataset, scope.stratum, scope.output),
        key="performance_calibration",
    )
    st.caption(
        "ECE: expected calibration error, the case-weighted mean gap between predicted probability "
        f"and observed share {'fractured' if scope.external else 'abnormal'} per bin. 0 is perfect."
        + (
            " On FracAtlas the model's probability is of MURA's *abnormal*, so it is not expected to match "
            "the share fractured."
            if scope.external and not scope.fracture_output
            else ""
        )
    )


def show_out_of_scope(scope: Scope, thresholds: Mapping[str, float]) -> None:
    """FracAtlas's leg/hip images (of the test part, for the fracture output): scores only, since the model
    never trained on those body parts."""
    st.subheader("Out of scope: leg and hip")
    everything = evaluation.fracatlas_images(scope.model, scope.output)
    legs = everything[~everything["upper_limb"].astype(bool)]
    if legs.empty:
        st.caption("This evaluation has no leg/hip images.")
        return
    st.plotly_chart(
        charts.score_histogram(
            legs.assign(label=legs["fractured"]),
            classes=scope.classes,
            title=f"{scope.score} on leg/hip radiographs",
            score=scope.score,
        ),
        key="performance_out_of_scope",
    )
    default = thresholds[metrics.DEFAULT_THRESHOLD_KEY]
    share = float((legs["probability"] >= default).mean())
    if scope.fracture_output:
        st.caption(
            f"{len(legs)} leg/hip images of the test part ({int(legs['fractured'].sum())} fractured). The fracture "
            "output was trained on upper-limb radiographs only, so no AUROC is given: scores here show how it "
            f"behaves on a body part it never saw. At its threshold ({default:.3f}) it calls {share:.0%} of them "
            "fractured."
        )
        return
    st.caption(
        f"{len(legs)} leg/hip images ({int(legs['fractured'].sum())} fractured). The model was trained on "
        f"humerus and forearm only, so no AUROC is given: scores here show how it behaves on a body part "
        f"it never saw. At the default threshold ({default:.3f}) it calls {share:.0%} of them abnormal."
    )


model = state.checked_model_name()
st.title("Performance")
card = state.read_card(model)
dataset, stratum, output = choose_dataset(model, card)
scope = load_scope(model, card, dataset, stratum, output)
cached = evaluation.cached_metrics(model, dataset, stratum, output)
describe(scope, cached)
thresholds = (
    evaluation.threshold_controls(
        f"{model}:{dataset}" + (f":{FRACTURE}" if scope.fracture_output else ""),
        card,
        scope="performance",
        defaults=evaluation.fracatlas_threshold_defaults(card, output),
    )
    if scope.external
    else evaluation.threshold_controls(model, card, scope="performance")
)

# What the thresholds change is recomputed on every rerun from the cached probabilities.
confusions = metrics.confusion_by_type(scope.evaluated.table, thresholds)
groups = list(confusions)
per_group_threshold = evaluation.group_thresholds(scope.evaluated.table, thresholds)
plotted = [g for g in groups if (g == OVERALL or g in scope.trained) and scope.evaluated.roc[g].auc is not None]

show_confusions(scope, confusions, per_group_threshold, plotted)
show_bootstrap = st.toggle(
    f"Bootstrap 95% CIs at your thresholds ({evaluation.APP_BOOTSTRAP} resamples of {scope.resampled})",
    key="performance_bootstrap",
    help="For all body parts and those the model was trained on; cached per threshold setting. "
    "The first computation takes a few seconds.",
)
intervals = (
    evaluation.bootstrap_at(model, scope.level, thresholds, plotted, dataset, stratum, output) if show_bootstrap else {}
)
show_live_table(scope, confusions, per_group_threshold, intervals)
cached_level = show_cached_table(scope, cached, thresholds, groups)
show_curves(scope, confusions, per_group_threshold, plotted, cached_level)
show_calibration(scope, plotted)
if scope.external:
    show_out_of_scope(scope, thresholds)
model_compare.compare_section(model, dataset)
