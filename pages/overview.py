"""Overview: what the model is and is not, its headline results, where to start, the data in use."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.data import fracatlas
from core.eval.evaluation import FRACATLAS
from core.model.card import DEFAULT_THRESHOLD_KEY, FRACATLAS_LABEL, model_outputs, trained_study_types
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import BASE_MODEL_KEY, EvaluationMismatchError
from dashboard import navigation, state
from dashboard.charts import (
    INTERVAL_WIDTH,
    MIN_CASES,
    MIN_PER_CLASS,
    OVERALL,
    TOO_FEW,
    TRAINED_POOL,
    format_estimate,
    group_label,
    too_few,
)
from dashboard.report import report_button

PAPER = "https://arxiv.org/abs/1712.06957"
#: Cohen's kappa on the MURA paper's own test set (Rajpurkar et al. 2017, arXiv:1712.06957 v4, Table 1):
#: its three radiologists, and its DenseNet-169. A different test set from this valid/ split.
PAPER_KAPPA = {
    "XR_FOREARM": {"radiologists": (0.796, 0.802, 0.798), "model": 0.737},
    "XR_HUMERUS": {"radiologists": (0.867, 0.733, 0.933), "model": 0.600},
}
HELP = {
    "P(abnormal)": "The model's probability that a radiograph is abnormal (fracture, hardware, arthritis, lesion...). "
    "A study's is the mean of its views'; it is called abnormal at or above its body part's threshold.",
    "AUROC": "Area under the ROC curve: the chance that the model ranks a random abnormal study above a random "
    "normal one. 0.5 is a coin toss, 1.0 perfect. It does not depend on the threshold.",
    "kappa": "Cohen's kappa: agreement of the model's calls with the labels beyond what chance would give. 0 is "
    "chance, 1 perfect agreement; the MURA paper compares models and radiologists on it.",
    "sensitivity": "Of the abnormal studies, the share the model flags (at the threshold).",
    "specificity": "Of the normal studies, the share the model leaves unflagged (at the threshold).",
    "CI": "95% CI: the range the value would plausibly take on another sample of studies like these "
    "(bootstrap: the studies resampled 1000 times).",
}


def _column_help(name: str) -> str:
    return f"{HELP[name]} In brackets: {HELP['CI']}"


def results_table(rows: dict[str, dict]) -> pd.DataFrame:
    """Study-level results, one row per label -> metrics_valid.json group summary; a group with too
    few studies gets its counts and "too few to estimate", never an interval."""
    return pd.DataFrame(
        [
            {
                "Body part": label,
                "Studies": summary["n"],
                "Abnormal": summary["n_abnormal"],
                "AUROC (95% CI)": format_estimate(summary, "auroc"),
                "Cohen's kappa (95% CI)": format_estimate(summary, "kappa"),
                "Sensitivity (95% CI)": format_estimate(summary, "sensitivity"),
                "Specificity (95% CI)": format_estimate(summary, "specificity"),
            }
            for label, summary in rows.items()
        ]
    )


#: Column widths and tooltips of :func:`results_table` (wide enough for "0.809 (0.739–0.866)").
RESULTS_COLUMNS = {
    "AUROC (95% CI)": st.column_config.TextColumn(width=INTERVAL_WIDTH, help=_column_help("AUROC")),
    "Cohen's kappa (95% CI)": st.column_config.TextColumn(width=INTERVAL_WIDTH, help=_column_help("kappa")),
    "Sensitivity (95% CI)": st.column_config.TextColumn(width=INTERVAL_WIDTH, help=_column_help("sensitivity")),
    "Specificity (95% CI)": st.column_config.TextColumn(width=INTERVAL_WIDTH, help=_column_help("specificity")),
}


def plain_reading(group: str, summary: dict) -> str | None:
    """ "Forearm: of 100 abnormal studies it flags about 72; of 100 normal ones it wrongly flags about 4."
    (None below the minimum counts, or without both rates)."""
    sensitivity = (summary.get("sensitivity") or {}).get("point")
    specificity = (summary.get("specificity") or {}).get("point")
    if too_few(summary.get("n"), summary.get("n_abnormal")) or sensitivity is None or specificity is None:
        return None
    body_part = group_label(group).lower()
    return (
        f"**{group_label(group)}**: of 100 abnormal {body_part} studies it flags about "
        f"**{round(100 * sensitivity)}**; of 100 normal ones it wrongly flags about "
        f"**{round(100 * (1 - specificity))}**."
    )


def paper_context(group: str, summary: dict) -> str | None:
    """This model's kappa beside the MURA paper's radiologists and model for the same body part."""
    paper = PAPER_KAPPA.get(group)
    kappa = (summary.get("kappa") or {}).get("point")
    if paper is None or kappa is None or too_few(summary.get("n"), summary.get("n_abnormal")):
        return None
    low, best = min(paper["radiologists"]), max(paper["radiologists"])
    standing = (
        "below every one of the paper's radiologists"
        if kappa < low
        else "below the paper's best radiologist"
        if kappa < best
        else "at or above the paper's best radiologist"
    )
    return (
        f"**{group_label(group)}**: kappa {kappa:.3f} here; in the MURA paper its radiologists scored "
        f"{low:.3f}–{best:.3f} and its DenseNet-169 {paper['model']:.3f}: {standing}."
    )


def show_context(model: str, card: dict, rows: dict[str, dict]) -> None:
    """How good the headline numbers are: beside the project's other shipped models and the MURA paper."""
    st.markdown("**How good is that?**")
    others = []
    # A model built on another carries its abnormal network unchanged: the same figures, no comparison.
    twins = [
        other
        for other in state.available_models()
        if other != model
        and (card.get(BASE_MODEL_KEY) == other or (state.read_card(other) or {}).get(BASE_MODEL_KEY) == model)
    ]
    if twins:
        st.markdown(
            f"- {', '.join(f'**{twin}**' for twin in twins)}: the same *abnormal* network as this model, so the "
            "same figures."
        )
    for other in state.available_models():
        if other == model or other in twins:
            continue
        try:
            pooled = (state.read_metrics(other) or {}).get("trained")
        except EvaluationMismatchError:
            continue
        if pooled and pooled.get("study"):
            others.append(
                f"{other}: AUROC {format_estimate(pooled['study'], 'auroc')}, "
                f"kappa {format_estimate(pooled['study'], 'kappa')}"
            )
    if others:
        st.markdown(
            "- The project's other shipped model(s), same studies, trained body parts pooled: "
            + "; ".join(others)
            + ". Overlapping intervals: on par, not clearly better "
            "(`python -m core.compare` gives a paired test)."
        )
    for line in filter(
        None, (paper_context(group, rows[group]) for group in trained_study_types(card) if group in rows)
    ):
        st.markdown(f"- {line}")
    st.caption(
        f"The paper's figures ([Rajpurkar et al. 2017]({PAPER}), Table 1) come from its own test set of "
        "207 studies read by radiologists, not from this valid/ split: a rough guide, not a head-to-head "
        "comparison."
    )


def show_model(card: dict) -> None:
    """What the model reads and says, what it was trained on, and what it is not."""
    trained = ", ".join(group_label(t).lower() for t in trained_study_types(card)) or "unknown"
    st.subheader("The model")
    # Plain words first; the architecture's own vocabulary waits in the expander (issue 27).
    st.markdown(
        f"Looks at one arm radiograph at a time and says how likely it is to be abnormal (a fracture, metal "
        f"hardware, arthritis or another lesion): P(abnormal), from 0 to 1. A study of several views gets the "
        f"average of its views, as in the [MURA paper]({PAPER}). It learnt from **{trained}** radiographs only, "
        "so it gives no verdict on other body parts.",
        help=HELP["P(abnormal)"],
    )
    if FRACATLAS_LABEL in model_outputs(card):
        st.markdown(
            "It also says how likely the radiograph shows a broken bone: P(fracture), from 0 to 1, learnt from "
            "FracAtlas radiographs of hands, wrists, forearms and shoulders on which experts outlined each "
            "fracture, so that its heat map points at the break. A call of fracture is made at its own threshold, "
            "never mixed with *abnormal*."
        )
    with st.expander("Technical details: architecture, input, output and thresholds"):
        st.markdown(f"**{card.get('architecture', 'unknown architecture')}**: {card.get('description', '')}")
        base = card.get(BASE_MODEL_KEY)
        base_card = state.read_card(base) if isinstance(base, str) and base in state.available_models() else None
        if base_card:
            st.markdown(
                f"Its *abnormal* output is **{base}**'s network, unchanged: "
                f"**{base_card.get('architecture', 'unknown architecture')}**: {base_card.get('description', '')}"
            )
        st.markdown(f"- Input: {card.get('input', 'not stated')}\n- Output: {card.get('output', 'not stated')}")
        thresholds = card.get("thresholds", {})
        if thresholds:
            st.dataframe(
                pd.DataFrame(
                    {
                        "Body part": [
                            group_label(t) if t != DEFAULT_THRESHOLD_KEY else "Any other" for t in thresholds
                        ],
                        "Threshold": list(thresholds.values()),
                    }
                ),
                hide_index=True,
            )
    st.subheader("What it is not")
    for limitation in card.get("limitations", []):
        st.markdown(f"- {limitation}")


def which_model_for_what(fracture_model: str, models: list[str]) -> str:
    """Which shipped model to pick for what: the fracture-aware model's two outputs, and the model it was
    built on (if shipped), which reads *abnormal* only and is the "before" of Heat-map accuracy."""
    default = " (the default)" if fracture_model == DEFAULT_MODEL else ""
    text = (
        f"**Which model for what:** **{fracture_model}**{default} has two outputs: MURA's *abnormal*, and "
        "*fracture*, trained on FracAtlas with the experts' outlines, so its heat map of a fracture is trained to "
        "point at the break. Use it to teach fractures and what a faithful map looks like."
    )
    base = (state.read_card(fracture_model) or {}).get(BASE_MODEL_KEY)
    if isinstance(base, str) and base in models:
        text += (
            f" Its *abnormal* output is **{base}**'s own network, unchanged; **{base}** (chosen in the sidebar) "
            "reads *abnormal* only, and is the *before* of Heat-map accuracy's before/after."
        )
    others = [m for m in models if m not in (fracture_model, base)]
    if others:
        text += f" {', '.join(f'**{m}**' for m in others)}: *abnormal* only."
    return text


def show_results(model: str, card: dict) -> None:
    """Headline study-level results of the trained body parts, pooled and each, read in plain words and
    set in context; the other body parts apart, as out of scope."""
    st.subheader("Headline results (study level)")
    try:
        metrics = state.read_metrics(model)
    except EvaluationMismatchError as exc:
        st.error(str(exc))
        return
    if not metrics:
        st.info("No cached evaluation for this model yet: run `make evaluate` with a MURA folder to create it.")
        return
    evaluation = metrics.get("evaluation", {})
    if evaluation:
        st.caption(
            f"MURA v1.1 {evaluation.get('split', 'valid')}/ split, each study judged at its body part's "
            "threshold. MURA's valid/ set is this project's test set: it was never used for training or "
            "selection."
        )
    study = metrics.get("study", {})
    evaluated = [group for group in study if group != OVERALL]
    trained = [group for group in evaluated if group in trained_study_types(card)]
    others = [group for group in evaluated if group not in trained]
    rows = {group_label(group): study[group] for group in trained}
    pooled = (metrics.get("trained") or {}).get("study")
    if pooled is not None:
        rows[TRAINED_POOL] = pooled
    elif not others:  # every evaluated body part is a trained one: "overall" is their pool
        rows[TRAINED_POOL] = study[OVERALL]
    readings = [plain_reading(group, study[group]) for group in trained]
    if any(readings):
        st.markdown(
            "**In plain words**, at the model card's thresholds:\n"
            + "\n".join(f"- {line}" for line in readings if line)
        )
    st.caption(
        "The table's words: **AUROC**, how often the model ranks an abnormal study above a normal one "
        "(0.5 a coin toss, 1 perfect); **Cohen's kappa**, how far its calls agree with the radiologists' "
        "beyond chance (0 chance, 1 perfect); **sensitivity**, the share of abnormal studies it flags; "
        "**specificity**, the share of normal ones it leaves alone. In brackets, the 95% range the figure "
        "would plausibly take on other studies like these."
    )
    st.dataframe(results_table(rows), hide_index=True, column_config=RESULTS_COLUMNS)
    show_context(model, card, study)
    try:
        external = external_check(state.read_metrics(model, FRACATLAS) or {})
    except EvaluationMismatchError as exc:
        st.caption(f"The external FracAtlas check is unavailable: {exc}")
        external = None
    if external:
        st.caption(external)
    if others:
        with st.expander(f"Out of scope: body parts the model was not trained on ({len(others)})"):
            st.caption(
                "Out of distribution for the model, and only a handful of studies each in this copy: the "
                f"counts, and no figure below {MIN_CASES} studies (or {MIN_PER_CLASS} of either class). "
                f"They are not in “{TRAINED_POOL}” above."
            )
            st.dataframe(
                results_table({group_label(group): study[group] for group in others}),
                hide_index=True,
                column_config=RESULTS_COLUMNS,
            )


def _auroc_words(summary: dict) -> str:
    auroc = format_estimate(summary, "auroc")
    return "too few images to estimate an AUROC" if auroc == TOO_FEW else f"AUROC {auroc}"


def external_check(cached: dict) -> str | None:
    """The FracAtlas sentence from metrics_fracatlas.json, or None without one: a fracture-aware model's
    fracture output on the test part it never trained on first, each figure naming its output."""
    upper = (cached.get("all") or {}).get(OVERALL)
    fracture = cached.get("fracture_output") or {}
    tested = (fracture.get("all") or {}).get(OVERALL)
    if not upper and not tested:
        return None
    if not tested:
        return (
            f"External check on FracAtlas (another hospital group; label *fracture*, not *abnormal*; image "
            f"level, {upper['n']} upper-limb images): {_auroc_words(upper)}. Details and the hardware stratum on "
            "the Performance page."
        )
    words = (
        "External check on FracAtlas (another hospital group; label *fracture*; image level): the fracture output, "
        f"P(fracture), on the {tested['n']} upper-limb images of the test part it never trained on: "
        f"{_auroc_words(tested)}"
    )
    if upper:
        words += (
            f"; the MURA output, P(abnormal), zero-shot on all {upper['n']} upper-limb images (it never trained on "
            f"FracAtlas): {_auroc_words(upper)}"
        )
    return words + ". Details and the hardware stratum on the Performance page."


def valid_split_table(present: pd.DataFrame) -> pd.DataFrame:
    """Studies (abnormal among them) and images per body part, from core.data.mura's table of present images."""
    studies = present.drop_duplicates("study_path").groupby("study_type")
    table = pd.DataFrame(
        {
            "Studies": studies.size(),
            "Abnormal studies": studies["label"].sum(),
            "Images": present.groupby("study_type").size(),
        }
    )
    return table.rename(index=group_label).rename_axis("Body part").reset_index()


def show_data_source() -> None:
    """Which data the app shows: the MURA folder's valid/ split, or the shipped samples without one."""
    st.subheader("Data in use")
    root = state.current_mura_root()
    if root is None:
        st.markdown(
            "No MURA folder is set, so the app shows 14 **real** radiographs from FracAtlas (CC BY 4.0, "
            "resized; labelled *fracture*, not MURA's *abnormal*) and its own **synthetic** radiograph-like "
            "samples (drawn by `data_samples/make_synthetic.py`; not X-rays). Set your MURA v1.1 folder in "
            "the sidebar to browse MURA studies; MURA's licence forbids shipping its images."
        )
        st.caption(f"Images: {fracatlas.CREDIT}")
        return
    st.markdown("What the MURA v1.1 folder's valid/ split (the test set) holds:")
    st.dataframe(valid_split_table(state.read_mura_images(root, "valid")), hide_index=True)


# The card and cached metrics are all this page needs: it does not load the network, so the
# first page a visitor sees does not wait for it.
model_name = state.checked_model_name()
card = state.read_card(model_name)
st.title("MURA Lens")
st.markdown(
    "Explains a classifier of upper-limb radiographs (Stanford MURA v1.1): which views it calls "
    "abnormal, and where it looks, with Grad-CAM-family heat maps. "
    "**A research and teaching tool: not a medical device, not for diagnosis.**"
)
start = st.columns(3)
start[0].page_link(navigation.page(navigation.EXPLAIN), label="Explain a radiograph")
start[1].page_link(navigation.page(navigation.BROWSE), label="Browse studies")
start[2].page_link(navigation.page(navigation.PERFORMANCE), label="See performance")
fracture_models = [m for m in state.available_models() if FRACATLAS_LABEL in model_outputs(state.read_card(m) or {})]
if fracture_models:
    st.info(which_model_for_what(fracture_models[0], state.available_models()), icon=":material/compare_arrows:")
if card is None:
    st.error(f"The model {model_name!r} has no model card in the weights folder.")
else:
    show_model(card)
    show_results(model_name, card)
    report_button(model_name, key="overview_report")
show_data_source()
