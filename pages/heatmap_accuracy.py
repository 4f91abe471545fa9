"""Heat-map accuracy: can the CAMs be trusted (sanity checks and faithfulness per method, from the cache
core.trust wrote), and do they point at the fracture? Methods x layers ranked against FracAtlas's
expert outlines beside two chance levels, localisation against the model's confidence, and a
gallery with the outline drawn over the CAM. Scores come from the cache core.localize wrote. Before all that,
the model that learned MURA's abnormal label beside the fracture-aware model on the same test fractures
(dashboard.before_after_view)."""

from __future__ import annotations

import streamlit as st
from scipy.stats import spearmanr

from core.data import fracatlas
from core.eval import trust
from core.eval.localization import TOLERANCE_PX
from core.store.artifacts import CachePairError
from dashboard import accuracy, before_after_view, state, trust_view, views, warmup

GALLERY_PAGE_SIZE = warmup.GALLERY_PAGE_SIZE

model = state.current_model_name()
st.title("Heat-map accuracy")
trust_view.show_scorecard(model)
before_after_view.show(model)
st.subheader("Do the heat maps point at the fracture?")
try:
    sweep = accuracy.cached_sweep(model)
except CachePairError as exc:
    sweep, problem = None, str(exc)
else:
    problem = None
# The output the cached maps explain (P(fracture) for a model that has it): its words, its sanity checks, its maps.
target = accuracy.explained_target(sweep.table) if sweep is not None else trust_view.trust_target(model)
words = accuracy.OUTPUT_WORDS.get(target, target)
st.caption(
    f"Does the heat map point at the fracture? Each CAM method and layer explains {words} on the "
    "upper-limb FracAtlas radiographs with an expert fracture outline; a map **hits** when its maximum "
    f"lies within {TOLERANCE_PX} px of an outline (pointing game), **energy inside** is the share of its "
    "heat inside the outlines, and **IoU / Dice** compare the map thresholded at Otsu's level with the "
    "outlines. Two chance levels sit beside every figure: a **uniform** map (pointing anywhere) and a "
    "**bright-bone** map (the image's own brightness), which any useful heat map must beat. "
    "The label is *fracture*, not MURA's *abnormal*. " + fracatlas.CREDIT
)
if problem is not None:
    st.error(problem)
    st.stop()
if sweep is None:
    st.info(
        f"No heat-map accuracy cache for **{model}** yet: run `python -m core.localize --root "
        f"../shared/fracatlas --model {model}` (a FracAtlas folder) and reload."
    )
    st.stop()

summary, rows = sweep.summary, accuracy.with_outcomes(sweep.table, state.read_card(model))
minutes = summary.get("sweep_seconds", 0) / 60
st.caption(
    f"{summary['n_images']} outlined fractures; 95% bootstrap intervals over images "
    f"({summary['n_boot']} resamples); the sweep's images took {minutes:.0f} minutes in all."
)

# --- ranking -------------------------------------------------------------------------------------
metric = st.radio(
    "Rank by", list(accuracy.METRICS), format_func=accuracy.METRICS.get, horizontal=True, key="accuracy_metric"
)
try:
    trust_cache = trust_view.cached_trust(model, target)
except CachePairError:
    trust_cache = None  # the scorecard above already said why
same = accuracy.coinciding(model)
table = accuracy.ranking(summary, metric, sanity=trust.sanity_by_map(trust_cache and trust_cache.summary), same=same)
beats, sentence = accuracy.verdict(table, metric)
(st.success if beats else st.warning)(sentence)
uniform, bright = (table[table["method"] == name] for name in ("uniform", "bright bone"))
chance = st.columns(2)
for column, name, level in ((chance[0], "Uniform map (chance)", uniform), (chance[1], "Bright-bone map", bright)):
    if not level.empty:
        column.metric(name, f"{level['point'].iloc[0]:.3f}")
st.plotly_chart(accuracy.ranking_figure(table, metric), key="accuracy_ranking")
shown = table.assign(
    value=[accuracy.interval_text(*v) for v in zip(table["point"], table["low"], table["high"], strict=True)],
    vs_uniform=[
        accuracy.interval_text(*v) for v in zip(table["diff"], table["diff_low"], table["diff_high"], strict=True)
    ],
)
st.dataframe(
    shown[["map", "sanity", "n_images", "value", "vs_uniform", "beats_uniform"]].rename(
        columns={
            "value": f"{accuracy.METRICS[metric]} (95% CI)",
            "sanity": "Sanity checks",
            "vs_uniform": "minus uniform map (95% CI)",
            "beats_uniform": "beats chance",
        }
    ),
    hide_index=True,
    key="accuracy_table",
)
if same:
    st.caption(
        "Counted once: "
        + "; ".join(f"{' = '.join(methods)} at {layer}" for layer, methods in same)
        + f" give identical scores on every image. {accuracy.COINCIDING_WHY}"
    )
with st.expander("mIoU over heat thresholds"):
    best_maps = table[~table["chance"]]["map"].head(5).tolist()
    st.plotly_chart(accuracy.grid_figure(summary, best_maps), key="accuracy_grid")

# --- one map: confidence and gallery -------------------------------------------------------------
st.subheader("One map in detail")
maps = table[~table["chance"]][["method", "layer"]].drop_duplicates().itertuples(index=False)
choices = [(m.method, m.layer) for m in maps]
if not choices:
    st.stop()
method, layer = st.selectbox(
    "Method and layer", choices, format_func=lambda c: f"{c[0]} · {c[1]}" if c[1] else c[0], key="accuracy_map"
)
chosen = rows[(rows["method"] == method) & (rows["layer"] == layer)]
rho, _ = spearmanr(chosen["probability"], chosen["iou"]) if len(chosen) > 2 else (float("nan"), None)
hit_rates = {call: chosen.loc[chosen["model"] == call, "hit"] for call in ("right", "wrong")}
st.markdown(
    f"**Localisation and confidence.** Spearman correlation of {words} with IoU: "
    + ("undefined" if rho != rho else f"{rho:+.2f}")
    + f" over {len(chosen)} images. "
    + "; ".join(
        f"hit rate when the model is {call}: {rates.mean():.2f} ({len(rates)} images)"
        for call, rates in hit_rates.items()
        if len(rates)
    ).capitalize()
    + "."
)
st.dataframe(accuracy.confidence_table(chosen).round(3), hide_index=True, key="accuracy_confidence")

filters = st.columns(4)
outcome = filters[0].multiselect("Outcome", ["hit", "miss"], default=["hit", "miss"], key="accuracy_outcome")
regions = filters[1].multiselect(
    "Region", sorted(chosen["region"].unique()), default=sorted(chosen["region"].unique()), key="accuracy_region"
)
hardware = filters[2].multiselect("Hardware", ["with", "without"], default=["with", "without"], key="accuracy_hardware")
calls = sorted(rows["model"].unique())
model_call = filters[3].multiselect(
    "Model",
    calls,
    default=calls,
    key="accuracy_model",
    help="Right or wrong only where the model is scored on the fracture label "
    "(a fracture output); otherwise 'not scored'.",
)
listed = chosen[
    chosen["outcome"].isin(outcome)
    & chosen["region"].isin(regions)
    & chosen["hardware"].map({1: "with", 0: "without"}).isin(hardware)
    & chosen["model"].isin(model_call)
]
st.caption(f"{len(listed)} of {len(chosen)} images match.")

root, reason = accuracy.folder_input("accuracy_root")
if reason:
    st.error(reason)
available = [image for image in listed["image"] if fracatlas.image_file(root, image).is_file()] if root else []
missing = listed[~listed["image"].isin(available)]
if available:
    pages = max(1, -(-len(available) // GALLERY_PAGE_SIZE))
    page = st.number_input("Gallery page", 1, pages, 1, key="accuracy_page") if pages > 1 else 1
    loaded = state.get_model(model)
    outlines = accuracy.read_outlines(root)
    shown_images = available[(page - 1) * GALLERY_PAGE_SIZE : page * GALLERY_PAGE_SIZE]
    # Six slots; the last page may fill fewer of them.
    for column, image in zip(st.columns(3) * 2, shown_images, strict=False):
        row = chosen.set_index("image").loc[image]
        with column:
            pixels = accuracy.image_pixels(root, image)
            if pixels is None:
                st.caption(f"{image} cannot be read.")
                continue
            explanation = views.explanation_or_error(
                loaded, pixels, image, views.CamSettings(method=method, layers=(layer,), target=target)
            )
            if explanation is None:
                continue
            picture = accuracy.draw_outline(views.overlay_with_boxes(pixels, explanation.heatmap), outlines.mask(image))
            st.image(
                picture,
                width="stretch",
                caption=f"{image}: {row['outcome']}, IoU {row['iou']:.2f}, {words} "
                f"{row['probability']:.2f} ({row['model']}), {row['region']}",
            )
if not missing.empty:
    st.caption(
        "Images not in the chosen folder (listed without a picture):"
        if root is not None
        else "Name a FracAtlas folder to see the pictures; the images:"
    )
    st.dataframe(
        missing[["image", "region", "hardware", "outcome", "energy", "iou", "probability", "model"]],
        hide_index=True,
        key="accuracy_missing",
    )
