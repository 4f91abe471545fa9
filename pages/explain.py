"""Explain: upload views of one study, or open a sample or MURA study; see each view's probability,
the study verdict at the body part's threshold, and CAM heat maps with their controls."""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import streamlit as st

from core import fracatlas
from core.card import trained_study_types
from core.explain import METHODS
from core.localization import TOLERANCE_PX
from core.models import LoadedModel
from core.overlay import threshold_mask
from core.scope import study_scope
from dashboard import localization as accuracy
from dashboard import scope_view, state, studies, uploads, views
from dashboard import trust as trust_view
from dashboard.charts import group_label
from dashboard.views import CamSettings

SOURCES = ("Upload", "Sample or MURA study")
#: MURA's seven study types; the model card says which of them the model was trained on.
MURA_STUDY_TYPES = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
UNKNOWN_BODY_PART = "unknown"
CONFIRMED_KEY = "explain_confirmed_slow_runs"
FAITHFULNESS_KEY = "explain_faithfulness_requests"
OPENED_KEY = "explain_opened_study"


def accept_handoff() -> None:
    """A study handed over by Browse or Error analysis: select it (once) in this page's widgets."""
    ref = st.session_state.pop(state.EXPLAIN_STUDY_KEY, None)
    if ref:
        st.session_state[OPENED_KEY] = ref
        st.session_state["explain_source"] = SOURCES[1]
        st.session_state["explain_study_choice"] = ref


def study_choices() -> list[str]:
    """Real FracAtlas radiographs, the curated MURA studies when a MURA folder is set, the synthetic
    samples, and a handed-over study."""
    refs = studies.fracatlas_samples()["ref"].tolist()
    if state.current_mura_root() is not None:
        refs += studies.curated_mura_studies()["study_path"].tolist()
    refs += studies.synthetic_studies()["ref"].tolist()
    opened = st.session_state.get(OPENED_KEY)
    if opened and opened not in refs:
        refs.insert(0, opened)
    return refs


def chosen_images() -> tuple[list[tuple[str, np.ndarray]], str | None, str]:
    """The views to explain, the body part they are known to show, and an id for the study's widgets."""
    source = st.radio("Images", SOURCES, horizontal=True, key="explain_source")
    if source == SOURCES[0]:
        files = uploads.upload_widget("Upload one radiograph, or several views of one study", key="explain_upload")
        uploaded, refusals = uploads.read_uploads(files)
        uploads.show_refusals(refusals)
        for view in uploaded:
            if view.radiograph.notes:
                st.caption(f"`{view.name}`: " + "; ".join(view.radiograph.notes) + ".")
        if files or studies.fracatlas_samples().empty:
            pairs = [(view.name, view.radiograph.pixels) for view in uploaded]
            colour = [not view.radiograph.looks_like_radiograph for view in uploaded]
            return pairs, recognised_body_part(pairs, colour), "upload"
        # An empty page teaches nothing: until something is uploaded, show the first real radiograph.
        ref = studies.fracatlas_samples()["ref"].iloc[0]
        st.info(f"Nothing uploaded yet, so here is a real radiograph to start with ({studies.study_title(ref)}). "
                "Upload your own above, or pick another under “Sample or MURA study”.")
        return study_images(ref)
    ref = st.selectbox("Study", study_choices(), key="explain_study_choice", format_func=studies.study_title)
    if studies.is_mura_ref(ref):
        reason = studies.curated_mura_studies().set_index("study_path")["reason"].get(ref)
        if reason:
            st.caption(f"Curated because: {reason}")
    return study_images(ref)


def study_images(ref: str) -> tuple[list[tuple[str, np.ndarray]], str | None, str]:
    """The views of a referenced study, its body part (Unknown for a FracAtlas region no MURA part
    matches), and the study id; its label and, for FracAtlas, the credit, as captions."""
    try:
        study = studies.load_study(ref, state.current_mura_root())
    except studies.StudyLoadError as exc:
        st.error(str(exc))
        return [], None, ref
    if study.label is not None:
        st.caption(studies.label_caption(study))
    if studies.is_fracatlas_ref(ref):
        st.caption(f"Image: {fracatlas.CREDIT}")
        # FracAtlas "hand" mixes hand, wrist and forearm views: the scope head says which this one looks like.
        return study.views, recognised_body_part(study.views), ref
    return study.views, study.study_type, ref


def recognised_body_part(images: list[tuple[str, np.ndarray]], colour: list[bool] | None = None) -> str:
    """What the scope head makes of each view, shown; the body part stays Unknown for the user to pick.

    A view flagged out of scope (another body part, not a radiograph, unlike anything the model was
    trained on) stands out. A humerus or forearm look is only suggested: the head calls most of
    MURA's own wrist, hand and elbow views "forearm" (weights/<model>/scope_metrics.json), so
    adopting it would judge a wrist at the forearm's threshold.
    """
    if not images:
        return UNKNOWN_BODY_PART
    names, pixels = [name for name, _ in images], [p for _, p in images]
    scopes = scope_view.cached_scopes(loaded, pixels, colour or [])
    if scopes is None:  # a model without a scope head: the user says what the views show
        for name, is_colour in zip(names, colour or [], strict=False):
            if is_colour:
                st.warning(f"`{name}` is a colour image, not a radiograph: the model reads X-rays only.")
        return UNKNOWN_BODY_PART
    scope_view.show_scopes(names, scopes)
    suggested, _reason = study_scope(scopes)
    if suggested:
        st.caption(f"Suggested body part: {group_label(suggested).lower()}. Recognition cannot yet tell MURA's wrist, "
                   "hand or elbow views from a forearm, so choose the body part below to get a verdict.")
    return UNKNOWN_BODY_PART


def body_part_selector(card: dict, known: str | None, study_id: str) -> tuple[str | None, str | None]:
    """The body part whose threshold judges the study, and why there is no verdict (None: there is one).

    Nothing is assumed: an unknown body part, or one the model was not trained on, gets the study's
    probability but no verdict, since a threshold chosen on humerus and forearm says nothing there.
    """
    trained = trained_study_types(card)
    options = trained + [t for t in MURA_STUDY_TYPES if t not in trained] + [UNKNOWN_BODY_PART]
    default = known if known in options else UNKNOWN_BODY_PART
    body_part = st.selectbox("Body part", options, index=options.index(default), key=f"explain_body_part_{study_id}",
                             format_func=lambda t: "Unknown / other" if t == UNKNOWN_BODY_PART else group_label(t),
                             help="Pre-selected from what the views look like (or the study's own label); "
                                  "change it if you know better.")
    trained_words = ", ".join(group_label(t).lower() for t in trained)
    if body_part == UNKNOWN_BODY_PART:
        return None, (f"No verdict: the body part is unknown. The model was trained on {trained_words} radiographs "
                      "only; pick the body part above if it is one of them.")
    if body_part not in trained:
        return body_part, (f"No verdict: the model was trained on {trained_words} radiographs only, so for "
                           f"{group_label(body_part).lower()} its output is out of distribution.")
    return body_part, None


def run_key(images: list[tuple[str, np.ndarray]], settings: CamSettings, method: str | None = None) -> str:
    """Identifies one CAM request on these images (for confirmations and faithfulness requests)."""
    keys = ",".join(views.image_key(pixels) for _, pixels in images)
    return (f"{keys}|{method or settings.method}|{settings.layers}|{settings.target}|"
            f"{settings.aug_smooth}|{settings.eigen_smooth}")


def confirmed_method(images: list[tuple[str, np.ndarray]], settings: CamSettings) -> str | None:
    """The method to show: fast ones at once; slow ones only after the user confirms, with a stop button.

    The buttons act in on_click callbacks, which run before the page, so the page that follows a
    click already shows the confirmed state (no stale warning above a running method).
    """
    if not settings.is_slow:
        return settings.method
    confirmed: set[str] = st.session_state.setdefault(CONFIRMED_KEY, set())
    key = run_key(images, settings)
    if key in confirmed:
        st.button(f"Stop {settings.method}", key="explain_stop_slow", on_click=confirmed.discard, args=(key,),
                  help="Stops a run in progress (or hides its result).")
        return settings.method
    st.warning(f"{settings.method} is slow: {METHODS[settings.method].help} On a CPU it can take minutes for "
               f"{len(images)} view(s). The views are shown without a heat map until you run it.")
    st.button(f"Run {settings.method}", key="explain_confirm_slow", type="primary", on_click=confirmed.add,
              args=(key,))
    return None


def view_details(loaded: LoadedModel, images: list[tuple[str, np.ndarray]], settings: CamSettings,
                 method: str, study_ref: str) -> None:
    """For one view: regions, an expert outline with its scores, downloads and faithfulness on request."""
    st.subheader("One view in detail")
    names = [name for name, _ in images]
    index = st.selectbox("View", range(len(images)), format_func=names.__getitem__, key="explain_detail_view") \
        if len(images) > 1 else 0
    name, pixels = images[index]
    explanation = views.explanation_or_error(loaded, pixels, name, method=method, layers=settings.layers,
                                             target=settings.target, aug_smooth=settings.aug_smooth,
                                             eigen_smooth=settings.eigen_smooth)
    if explanation is None:
        return
    picture = views.overlay_with_boxes(pixels, explanation.heatmap, colormap=settings.colormap,
                                       opacity=settings.opacity, heat_threshold=settings.heat_threshold)
    picture, scores = accuracy.outlined_view(study_ref, pixels, explanation.heatmap, picture)
    original, blended = st.columns(2)
    original.image(pixels, caption=f"{name} (as decoded)", width="stretch")
    blended.image(picture, caption=f"{method} on {', '.join(explanation.layers) or 'all layers'} → "
                                   f"{explanation.target}", width="stretch")
    if settings.heat_threshold is not None:
        _mask, boxes = threshold_mask(explanation.heatmap, settings.heat_threshold)
        st.caption(f"{len(boxes)} region(s) with heat ≥ {settings.heat_threshold:.2f}, boxed in green.")
    if scores is not None:
        st.caption("Expert fracture outline in cyan (FracAtlas). How this heat map localises it, beside the "
                   f"chance maps (hit: maximum within {TOLERANCE_PX} px of the outline):")
        st.dataframe(scores, hide_index=True, key="explain_outline_scores")
    stem = f"{PurePosixPath(name).stem}_{method}"
    png, npy, score = st.columns(3)
    png.download_button("Overlay (.png)", views.png_bytes(picture), file_name=f"{stem}.png",
                        mime="image/png", on_click="ignore", key="explain_download_png")
    npy.download_button("Raw heat map (.npy)", views.npy_bytes(explanation.heatmap), file_name=f"{stem}.npy",
                        mime="application/octet-stream", on_click="ignore", key="explain_download_npy",
                        help="float32 (height, width) in [0, 1] at the image's own resolution.")
    requests: set[str] = st.session_state.setdefault(FAITHFULNESS_KEY, set())
    key = run_key([images[index]], settings, method)
    if score.button("Measure faithfulness", key="explain_faithfulness",
                    help="ROAD (Rong et al., 2022): removes the pixels the map calls most and least relevant "
                         "and compares how P(class) changes. Several model runs: a few seconds."):
        requests.add(key)
    if key in requests:
        value = views.cached_faithfulness(loaded, pixels, explanation, aug_smooth=settings.aug_smooth,
                                          eigen_smooth=settings.eigen_smooth)
        score.metric("Faithfulness (ROAD)", f"{value:+.3f}",
                     help="In [-1, 1]: above 0 when removing the 'relevant' pixels hurts the prediction more than "
                          "removing the rest; about 0 for a map no better than chance.")


def comparison(loaded: LoadedModel, images: list[tuple[str, np.ndarray]], settings: CamSettings) -> None:
    """Side by side on one view: several methods at the chosen layers, or several layers with the method."""
    st.subheader("Compare")
    names = [name for name, _ in images]
    index = st.selectbox("View to compare on", range(len(images)), format_func=names.__getitem__,
                         key="explain_compare_view") if len(images) > 1 else 0
    methods = st.multiselect("Methods", list(METHODS), key="explain_compare_methods",
                             help="Each at the layer(s) chosen in the sidebar.")
    layers = st.multiselect("Layers", list(loaded.cam_layers), key="explain_compare_layers",
                            help=f"Each with the sidebar's method ({settings.method}).")
    confirmed: set[str] = st.session_state.get(CONFIRMED_KEY, set())
    panels = [(m, settings.layers) for m in methods] + [(settings.method, (layer,)) for layer in layers]
    runnable = [(m, ls) for m, ls in panels
                if not METHODS[m].slow or run_key(images, settings, m) in confirmed]
    skipped = sorted({m for m, method_layers in panels if (m, method_layers) not in runnable})
    if skipped:
        st.caption(f"Slow methods run only after you confirm them above for these views: {', '.join(skipped)}.")
    if not runnable:
        return
    name, pixels = images[index]
    for column, (method, method_layers) in zip(st.columns(len(runnable)), runnable, strict=True):
        with column:
            explanation = views.explanation_or_error(loaded, pixels, name, method=method, layers=method_layers,
                                                     target=settings.target, aug_smooth=settings.aug_smooth,
                                                     eigen_smooth=settings.eigen_smooth)
            if explanation is None:
                continue
            st.image(views.overlay_with_boxes(pixels, explanation.heatmap, colormap=settings.colormap,
                                              opacity=settings.opacity, heat_threshold=settings.heat_threshold),
                     caption=f"{method} · {', '.join(explanation.layers) or 'all layers'}", width="stretch")


loaded = state.current_model()
st.title("Explain")
accept_handoff()
settings = views.cam_controls(loaded)
if (trust_line := trust_view.scorecard_line(loaded.name, settings.method)) is not None:
    st.sidebar.caption(trust_line)
images, known_body_part, study_id = chosen_images()
if not images:
    st.info("Upload a radiograph (PNG, JPEG or DICOM), or pick one of the samples, to see what the model says.")
    st.stop()
study_type, no_verdict = body_part_selector(loaded.card, known_body_part, study_id)
method = confirmed_method(images, settings)
views.show_study_views(loaded, images, method=method, layers=settings.layers, target=settings.target,
                       study_type=study_type, no_verdict=no_verdict, opacity=settings.opacity,
                       colormap=settings.colormap,
                       heat_threshold=settings.heat_threshold, aug_smooth=settings.aug_smooth,
                       eigen_smooth=settings.eigen_smooth)
if method is not None:
    view_details(loaded, images, settings, method, study_id)
comparison(loaded, images, settings)
