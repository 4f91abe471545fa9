"""Model card: what the shipped model is, what it was trained on and how, its thresholds, its
training curves and its headline results on MURA valid/, all read from weights/<model>/."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.eval.before_after import Comparison
from core.model.card import DEFAULT_THRESHOLD_KEY
from core.model.registry import FRACTURE, get_config
from core.scoping.head import target_rows
from core.store.artifacts import BASE_MODEL_KEY, CARD_FILE, CachePairError, EvaluationMismatchError
from dashboard import accuracy, before_after_view, charts, state, trust_view
from dashboard.charts import INTERVAL_WIDTH, OVERALL, TRAINED_POOL, format_estimate, format_interval, group_label
from dashboard.report import report_button

#: Card fields this page lays out; any other field is still shown, as JSON, at the end.
_RENDERED = {
    "name",
    "architecture",
    "description",
    "initialisation",
    "input",
    "output",
    "training_data",
    "recipe",
    "training_time_seconds",
    "training_machine",
    "best_epoch",
    "holdout_metrics",
    "thresholds",
    "threshold_rule",
    "limitations",
    "members",
    "schema_version",
    "outputs",
    "fracture_threshold",
    "fracture_calibration",
    BASE_MODEL_KEY,
}
_HOLDOUT_NAMES = {
    "study_auroc": "Holdout study AUROC",
    "study_kappa_at_threshold": "Holdout study kappa",
    "studies": "Holdout studies",
}
_COUNT_NAMES = {"images": "Images", "studies": "Studies", "patients": "Patients", "abnormal_images": "Abnormal images"}
#: The pool of trained body parts in metrics_valid.json (core.evaluate.summarise_trained).
_MISSING = "—"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _MISSING
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _text(value: object) -> str:
    """A card value for a table cell: numbers to 3 decimals, a missing value as a dash (never "None")."""
    if value is None:
        return _MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cross_validated(card: dict) -> bool:
    """An ensemble of one member per fold: its holdout is every training study, each out of fold."""
    members = card.get("members") or []
    return bool(members) and all(member.get("fold") is not None for member in members)


def subset_names(card: dict) -> dict[str, str]:
    """What each of the card's "all" / "fit" / "holdout" count rows is, in words."""
    if _cross_validated(card):
        folds = len(card["members"])
        return {
            "all": "All training studies",
            "fit": "Fit (weights trained on)",
            "holdout": f"Holdout: out-of-fold ({folds} folds)",
        }
    return {
        "all": "All training studies",
        "fit": "Fit (weights trained on)",
        "holdout": "Holdout (patients kept aside)",
    }


def _counts_table(card: dict) -> pd.DataFrame:
    """One row per (subset, body part) from the card's "all" / "fit" / "holdout" counts."""
    training_data = card.get("training_data") or {}
    names = subset_names(card)
    rows = []
    for subset in ("all", "fit", "holdout"):
        for study_type, counts in (training_data.get(subset) or {}).items():
            rows.append(
                {
                    "Subset": names[subset],
                    "Body part": group_label(study_type),
                    **{_COUNT_NAMES.get(k, k): v for k, v in counts.items()},
                }
            )
    return pd.DataFrame(rows)


def _setting_text(value: object) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def show_header(card: dict, model: str) -> list[int | None]:
    """Title, description, the three key facts and the limitations; returns the kept epoch(s)."""
    st.title(f"Model card: {card.get('name', model)}")
    if card.get("description"):
        st.markdown(card["description"])
    members = card.get("members") or []
    # A single run keeps one epoch; an ensemble (core.ensemble) keeps one per member.
    kept_epochs = [member.get("best_epoch") for member in members] if members else [card.get("best_epoch")]
    first, second, third = st.columns(3)
    first.metric("Architecture", card.get("architecture", _MISSING) + (f" × {len(members)}" if members else ""))
    second.metric(
        "Kept epochs (per member)" if members else "Kept epoch",
        ", ".join(_MISSING if epoch is None else str(epoch) for epoch in kept_epochs),
    )
    third.metric("Training time" + (" (all members)" if members else ""), _duration(card.get("training_time_seconds")))
    facts = [
        (label, card.get(key))
        for label, key in (
            ("Initialisation", "initialisation"),
            ("Input", "input"),
            ("Output", "output"),
            ("Trained on", "training_machine"),
        )
        if card.get(key)
    ]
    if card.get(BASE_MODEL_KEY):
        facts.append(
            (
                "MURA path",
                f"{card[BASE_MODEL_KEY]}'s own, read from weights/{card[BASE_MODEL_KEY]} (its weights, scope head, "
                "training log, out-of-fold train/ predictions and data map)",
            )
        )
    st.markdown("\n".join(f"- **{label}:** {value}" for label, value in facts))
    if card.get("limitations"):
        st.warning("**Limitations**\n\n" + "\n".join(f"- {item}" for item in card["limitations"]))
    return kept_epochs


def show_training_data(card: dict) -> None:
    """Where the training data came from, how it was split, and the counts of each subset."""
    training_data = card.get("training_data") or {}
    if not training_data:
        return
    st.subheader("Training data")
    if training_data.get("source"):
        st.markdown(training_data["source"])
    if training_data.get("split"):
        st.caption(f"Split: {training_data['split']}")
    counts = _counts_table(card)
    if counts.empty:
        return
    st.dataframe(
        counts, hide_index=True, width="stretch", column_config={"Subset": st.column_config.TextColumn(width=240)}
    )
    if _cross_validated(card):
        st.caption(
            "Cross-validated: every training study is in exactly one holdout fold, so the out-of-fold "
            "holdout holds the same studies as the whole training set. That is not leakage: each study's "
            "holdout prediction comes from the member that never trained on its patient, and the epoch "
            "and thresholds were picked on those predictions. MURA valid/ (the test set) was never used."
        )
    else:
        st.caption(
            "Fit: what the weights were trained on; holdout: train/ patients kept aside to pick the epoch "
            "and the thresholds. MURA valid/ (the test set) was never used."
        )


def show_outputs(card: dict) -> None:
    """For a model with more than one output: what each was trained on, its threshold and its
    out-of-fold figures (the test-part figures are on Heat-map accuracy and in the README)."""
    outputs = card.get("outputs")
    if not isinstance(outputs, dict) or "fracture" not in outputs:
        return
    fracture = outputs["fracture"] if isinstance(outputs["fracture"], dict) else {}
    maps = (fracture.get("rule_outcome") or {}).get("grad_cam_fracture_map_out_of_fold") or {}
    chosen = fracture.get("candidate", "")
    hit = (maps.get(f"hit_{chosen}") or {}).get("point")
    st.subheader("Two outputs: what each one was trained on")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Output": "abnormal (MURA)",
                    "Trained on": (outputs.get("abnormal") or {}).get("trained_on", _MISSING),
                    "Threshold": "per body part (below)",
                    "Out-of-fold AUROC": "as the base model (below)",
                    "Map hits the outline (out of fold)": _MISSING,
                },
                {
                    "Output": "fracture (FracAtlas)",
                    "Trained on": fracture.get("trained_on", _MISSING),
                    "Threshold": _text(card.get("fracture_threshold")),
                    "Out-of-fold AUROC": _text(fracture.get("out_of_fold_auroc")),
                    "Map hits the outline (out of fold)": _text(hit),
                },
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if fracture.get("threshold_rule"):
        st.caption(
            f"Fracture threshold: {fracture['threshold_rule']}. Candidate {chosen} was chosen by a rule "
            "written before any result (docs/experiments.md)."
        )
    calibration = card.get("fracture_calibration")
    if isinstance(calibration, dict):
        ece = calibration.get("out_of_fold_ece") or {}
        st.caption(
            f"P(fracture) is calibrated: {calibration.get('method', 'Platt scaling')} (slope "
            f"{_text(calibration.get('slope'))}, intercept {_text(calibration.get('intercept'))}), fitted on "
            f"{calibration.get('fitted_on', 'the out-of-fold predictions')}: expected calibration error "
            f"{_text(ece.get('raw'))} before, {_text(ece.get('calibrated'))} after. The raw branches' scores ran "
            "high, so a probability read as a chance would have overstated every fracture."
        )


def _fracture_map_group(summary: dict | None, layer: str) -> dict:
    """The Grad-CAM group at ``layer`` of a cached summary (localisation or trust), or {}."""
    groups = (summary or {}).get("groups", [])
    return next((g for g in groups if g.get("method") == "GradCAM" and g.get("layer") == layer), {})


def show_fracture_test_part(card: dict, model: str) -> None:
    """The fracture output's figures on FracAtlas's fixed test part, measured once, against the targets the
    issue set, met or not; each read from the cache its command wrote (nothing is recomputed here)."""
    if FRACTURE not in (card.get("outputs") or {}):
        return
    layer = get_config(str(card.get("architecture"))).cam_layer_for(FRACTURE)
    metrics = ((state.read_metrics(model, "fracatlas") or {}).get("fracture_output") or {}).get("all") or {}
    overall = metrics.get("overall") or {}
    try:
        sweep, checks = accuracy.cached_sweep(model), trust_view.cached_trust(model, FRACTURE)
    except CachePairError as exc:
        st.error(str(exc))
        return
    located = _fracture_map_group(sweep and sweep.summary, layer)
    checked = _fracture_map_group(checks and checks.summary, layer)

    def figure(entry: dict | None, target: float | None = None) -> tuple[str, str]:
        if not entry or entry.get("point") is None:
            return _MISSING, "not measured yet"
        return format_interval(entry), "" if target is None else ("met" if entry["point"] >= target else "missed")

    energy, energy_outcome = figure(located.get("energy"))
    comparison = before_after_view.comparison_for(model)
    if isinstance(comparison, Comparison) and comparison.passing is not None and located.get("energy"):
        ratio = located["energy"]["point"] / comparison.passing.loc["before", "energy"]
        energy_outcome = f"{ratio:.1f}x: {'met' if ratio >= 3 else 'missed'}"
    cascade = (checked.get("cascade") or [{}])[checked.get("sanity_stage", 0)].get("spearman") if checked else None
    rows = [
        ("fracture AUROC, upper limb", *figure(overall.get("auroc"), 0.88), ">= 0.88"),
        ("sensitivity at the fracture threshold", *figure(overall.get("sensitivity")), ""),
        ("specificity at the fracture threshold", *figure(overall.get("specificity")), ""),
        ("expected calibration error of P(fracture)", _text(overall.get("ece")), "", "lower is better"),
        ("Grad-CAM at the fracture map hits the outline", *figure(located.get("hit"), 0.5), ">= 0.50"),
        ("energy inside the outline", energy, energy_outcome, ">= 3x the MURA-only model's best passing map"),
        (
            "randomisation check of that map (rank correlation)",
            figure(cascade)[0],
            checked.get("randomisation", "not run yet"),
            "passes (whole interval below 0.5)",
        ),
        (
            "logit check: P(fracture) vs P(no fracture) map",
            figure((checked.get("logit") or {}).get("spearman"))[0],
            checked.get("logit_check", "not run yet"),
            "passes",
        ),
    ]
    st.subheader("The fracture output on FracAtlas's test part (measured once)")
    st.caption(
        f"{overall.get('n', _MISSING)} upper-limb radiographs ({overall.get('n_abnormal', _MISSING)} fractured) held "
        "out by copy group before any training, never trained or tuned on; 95% bootstrap intervals. Localisation "
        f"on the outlined fractures among them, at {layer}; sanity checks over "
        f"{(checks.summary['n_images'] if checks else _MISSING)} radiographs (python -m core.trust --target fracture)."
    )
    st.dataframe(
        pd.DataFrame(rows, columns=["Figure", "Measured (95% CI)", "Outcome", "Target"]),
        hide_index=True,
        width="stretch",
    )


def show_thresholds(card: dict) -> None:
    """The operating thresholds, with the holdout results they were chosen on."""
    thresholds = card.get("thresholds") or {}
    holdout = card.get("holdout_metrics") or {}
    if not thresholds and not holdout:
        return
    st.subheader("Operating thresholds and holdout results")
    if card.get("threshold_rule"):
        st.caption(f"Thresholds: {card['threshold_rule']}.")
    body_parts = [k for k in thresholds if k != DEFAULT_THRESHOLD_KEY] + [k for k in holdout if k not in thresholds]
    names = list(dict.fromkeys(name for k in body_parts for name in (holdout.get(k) or {})))
    rows = [
        {
            "Body part": group_label(k),
            "Threshold": thresholds.get(k),
            **{_HOLDOUT_NAMES.get(name, f"Holdout {name}"): _text((holdout.get(k) or {}).get(name)) for name in names},
        }
        for k in body_parts
    ]
    if DEFAULT_THRESHOLD_KEY in thresholds:
        rows.append(
            {
                "Body part": "Any other body part",
                "Threshold": thresholds[DEFAULT_THRESHOLD_KEY],
                **{_HOLDOUT_NAMES.get(name, f"Holdout {name}"): _MISSING for name in names},
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Threshold": st.column_config.NumberColumn(format="%.3f")},
    )


def show_members(card: dict) -> None:
    """An ensemble's members: seed, fold, kept epoch, time and holdout AUROC."""
    members = card.get("members") or []
    if not members:
        return
    st.subheader("Ensemble members")
    st.caption("The shipped probability is the mean of the members' probabilities.")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Member": index,
                    "Seed": _text(member.get("seed")),
                    **({"Fold": _text(member["fold"])} if member.get("fold") is not None else {}),
                    "Kept epoch": _text(member.get("best_epoch")),
                    "Training time": _duration(member.get("training_time_seconds")),
                    **{
                        f"{group_label(k)} holdout study AUROC": _text(v.get("study_auroc"))
                        for k, v in (member.get("holdout_metrics") or {}).items()
                    },
                }
                for index, member in enumerate(members)
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def show_training_curves(model: str, kept_epochs: list[int | None]) -> None:
    """Loss and holdout scores per epoch, one legend entry per metric; says when no holdout loss was logged."""
    log = state.read_training_log(model)
    st.subheader("Training curves")
    if log is None or log.empty:
        st.caption("No training log beside the checkpoint.")
        return
    st.plotly_chart(charts.training_curves_figure(log, kept_epochs=kept_epochs), key="card_training")
    notes = []
    if "member" in log.columns:
        dashes = ", ".join(
            f"member {member} {charts.member_dash(index)}"
            for index, member in enumerate(sorted(log["member"].unique()))
        )
        notes.append(f"One line per ensemble member, in the metric's colour ({dashes}); hover for the member.")
    if not any("loss" in column and "holdout" in column for column in log.columns):
        notes.append(
            "Holdout loss was not logged for this model (the log has the training loss and holdout "
            "AUROC), so over-fitting shows only as holdout AUROC levelling off or falling."
        )
    if notes:
        st.caption(" ".join(notes))


def show_cached_results(cached: dict | None) -> None:
    """The study-level results core.evaluate cached, with their intervals; how to make them if absent."""
    if not cached or "study" not in cached:
        st.caption("Not evaluated yet: run `make evaluate`.")
        return
    evaluation_info = cached.get("evaluation") or {}
    study = cached["study"]
    trained = cached.get("trained") or {}  # core.eval.evaluation.summarise_trained's pool, when cached
    pooled, trained_types = trained.get("study"), set(trained.get("study_types") or [])
    others = [group for group in study if group != OVERALL and trained_types and group not in trained_types]
    rows = [
        {
            "Body part": label,
            "Studies": summary.get("n"),
            "Threshold": "per part" if summary.get("threshold") is None else f"{summary['threshold']:.3f}",
            "AUROC": format_estimate(summary, "auroc"),
            "Kappa": format_estimate(summary, "kappa"),
            "Sensitivity": format_estimate(summary, "sensitivity"),
            "Specificity": format_estimate(summary, "specificity"),
        }
        for label, summary in ([(TRAINED_POOL, pooled or study[OVERALL])] if pooled or not others else [])
        + [
            (group_label(group), summary)
            for group, summary in study.items()
            if group != OVERALL and group not in others
        ]
    ]
    rows.sort(key=lambda row: row["Body part"] != TRAINED_POOL)
    interval = st.column_config.TextColumn(width=INTERVAL_WIDTH)
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "Threshold": st.column_config.TextColumn(help="'per part': each body part at its own threshold."),
            **dict.fromkeys(("AUROC", "Kappa", "Sensitivity", "Specificity"), interval),
        },
    )
    st.caption(
        f"Study level, 95% bootstrap CIs from {cached.get('n_boot', '?')} resamples of studies. "
        f"{evaluation_info.get('images', '?')} images of {evaluation_info.get('studies', '?')} studies evaluated. "
        + (
            "Out of scope, not scored: "
            + ", ".join(f"{group_label(g).lower()} {study[g].get('n')}" for g in others)
            + " studies of body parts the model was not trained on. "
            if others
            else ""
        )
        + "More on the Performance page."
    )


def show_scope(scope_metrics: dict | None) -> None:
    """How well the companion head tells the trained body parts from anything else (against its targets)."""
    st.subheader("Does an image belong to the model? (scope head)")
    summary = (scope_metrics or {}).get("summary")
    if not summary:
        st.caption("No scope head measurement (scope_metrics.json): `python -m core.scope` fits and measures it.")
        return
    st.dataframe(pd.DataFrame(target_rows(summary)), hide_index=True, width="stretch")
    st.caption(
        "An image it flags gets no verdict until the user names the body part (Explain); the body part is "
        "suggested, not pre-selected, while the per-study accuracy is under its 0.98 target."
    )


def show_recipe_and_extras(card: dict, model: str) -> None:
    """The training recipe, any card field not laid out above, and the card as a download."""
    if card.get("recipe"):
        with st.expander("Training recipe"):
            st.dataframe(
                pd.DataFrame(
                    {"Setting": list(card["recipe"]), "Value": [_setting_text(v) for v in card["recipe"].values()]}
                ),
                hide_index=True,
                width="stretch",
            )
    extra = {key: value for key, value in card.items() if key not in _RENDERED}
    if extra:
        with st.expander("Other card fields"):
            st.json(extra)
    st.download_button(
        f"Download {CARD_FILE}",
        data=json.dumps(card, indent=2),
        file_name=f"{model}_model_card.json",
        mime="application/json",
        key="card_download",
    )


model = state.checked_model_name()
card = state.read_card(model)
if card is None:
    st.title("Model card")
    st.info(f"No model card for **{model}** (weights/{model}/{CARD_FILE} is missing).")
    st.stop()

kept = show_header(card, model)
show_training_data(card)
show_outputs(card)
show_fracture_test_part(card, model)
show_thresholds(card)
show_members(card)
show_training_curves(model, kept)
st.subheader("Results on MURA valid/ (cached evaluation)")
try:
    show_cached_results(state.read_metrics(model))
except EvaluationMismatchError as exc:
    st.error(str(exc))
show_scope(state.read_scope_metrics(model))
show_recipe_and_extras(card, model)
report_button(model, key="card_report")
