"""Explain: upload views of one study, or open a sample or MURA study; see each view's probability,
the study verdict at the body part's threshold, and CAM heat maps with their controls."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import numpy as np
import streamlit as st

from core.cam.explain import METHODS, Explanation
from core.cam.figures import MapScale, caption_fields, comparison_figure, explanation_figure, figure_png
from core.cam.overlay import threshold_mask
from core.data import fracatlas, mura
from core.eval.localization import TOLERANCE_PX
from core.model.card import out_of_scope_reason, trained_study_types
from core.model.checkpoint import LoadedModel
from core.model.registry import FRACTURE
from core.scoping.head import ScopeAssessment, study_scope, views_in_study_mean
from dashboard import (
    accuracy,
    data_map,
    evaluation,
    fracture_view,
    scope_view,
    slow_runs,
    state,
    studies,
    trust_view,
    uploads,
    views,
)
from dashboard.charts import group_label
from dashboard.views import CamSettings

SOURCES = ("Upload", "Sample or MURA study")
UNKNOWN_BODY_PART = "unknown"
CONFIRMED_KEY = "explain_confirmed_slow_runs"
FAITHFULNESS_KEY = "explain_faithfulness_requests"
OPENED_KEY = "explain_opened_study"


@dataclass(frozen=True)
class ChosenStudy:
    """The views to explain, the body part they are known to show, an id for the study's widgets, and
    what the scope head says of each view (empty when it was not asked, or the model has none)."""

    views: list[tuple[str, np.ndarray]]
    body_part: str | None
    study_id: str
    scopes: tuple[ScopeAssessment, ...] = ()

    @property
    def left_out(self) -> list[int]:
        """Views that leave the study's mean: the flagged ones, unless every view is flagged."""
        kept = views_in_study_mean(self.scopes) if self.scopes else range(len(self.views))
        return [index for index in range(len(self.views)) if index not in kept]

    @property
    def flag_reason(self) -> str | None:
        """Why the views are flagged out of scope, when every view is (a verdict then goes against the flag)."""
        if self.scopes and all(scope.out_of_scope for scope in self.scopes):
            return self.scopes[0].reason()
        return None


def accept_handoff() -> None:
    """A study handed over by Browse or Error analysis: select it (once) in this page's widgets."""
    ref = st.session_state.pop(state.EXPLAIN_STUDY_KEY, None)
    if ref:
        st.session_state[OPENED_KEY] = ref
        st.session_state["explain_source"] = SOURCES[1]
        st.session_state["explain_study_choice"] = ref


def study_choices() -> list[str]:
    """Real FracAtlas radiographs, the curated MURA studies, the synthetic samples, then every other
    study of the MURA folder (valid/, then train/; the box is searchable), and a handed-over study."""
    refs = studies.fracatlas_samples()["ref"].tolist()
    root = state.current_mura_root()
    if root is not None:
        refs += studies.curated_mura_studies()["study_path"].tolist()
    refs += studies.synthetic_studies()["ref"].tolist()
    if root is not None:
        listed = set(refs)
        refs += [path for path in studies.mura_study_paths(root) if path not in listed]
    opened = st.session_state.get(OPENED_KEY)
    if opened and opened not in refs:
        refs.insert(0, opened)
    return refs


def chosen_images() -> ChosenStudy:
    """The views to explain, the body part they are known to show, an id for the study's widgets, and
    what the scope head says of them."""
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
            return recognised(pairs, "upload", colour)
        # An empty page teaches nothing: until something is uploaded, show the first real radiograph.
        ref = studies.fracatlas_samples()["ref"].iloc[0]
        st.info(
            f"Nothing uploaded yet, so here is a real radiograph to start with ({studies.study_title(ref)}). "
            "Upload your own above, or pick another under “Sample or MURA study”."
        )
        return study_images(ref)
    refs = study_choices()
    mura_count = sum(studies.is_mura_ref(ref) for ref in refs)
    label = (
        f"Study: {len(refs) - mura_count} samples, then the {mura_count} MURA studies of your folder (type to "
        "search them)"
        if mura_count
        else "Study: the app's samples (set your MURA folder in the sidebar to list its studies here too)"
    )
    ref = st.selectbox(
        label,
        refs,
        key="explain_study_choice",
        format_func=studies.study_title,
        help="Type to search: the samples, then every study of your MURA folder (curated ones first).",
    )
    if studies.is_mura_ref(ref):
        reason = studies.curated_mura_studies().set_index("study_path")["reason"].get(ref)
        if reason:
            st.caption(f"Curated because: {reason}.")
    return study_images(ref)


def study_images(ref: str) -> ChosenStudy:
    """The views of a referenced study, its body part (Unknown for a FracAtlas region no MURA part
    matches), and the study id; its label and, for FracAtlas, the credit, as captions."""
    try:
        study = studies.load_study(ref, state.current_mura_root())
    except studies.StudyLoadError as exc:
        st.error(str(exc))
        return ChosenStudy([], None, ref)
    if study.label is not None:
        st.caption(studies.label_caption(study))
    if studies.is_fracatlas_ref(ref):
        st.caption(f"Image: {fracatlas.CREDIT}")
        # FracAtlas "hand" mixes hand, wrist and forearm views: the scope head says which this one looks like.
        return recognised(study.views, ref)
    return ChosenStudy(study.views, study.study_type, ref)


def recognised(images: list[tuple[str, np.ndarray]], study_id: str, colour: list[bool] | None = None) -> ChosenStudy:
    """What the scope head makes of each view, shown; the study with the body part it recognises (or
    Unknown) and each view's assessment.

    A view flagged out of scope (another body part, not a radiograph, unlike anything the model was
    trained on) stands out and the study stays Unknown. When every view confidently shows one trained
    body part, it is pre-selected only if the head met its pre-registered rule on MURA valid/ (its
    ``preselect`` flag, docs/experiments.md); otherwise it is only suggested and the user picks.
    """
    if not images:
        return ChosenStudy(images, UNKNOWN_BODY_PART, study_id)
    names, pixels = [name for name, _ in images], [p for _, p in images]
    scopes = scope_view.cached_scopes(loaded, pixels, colour or [])
    if scopes is None:  # a model without a scope head: the user says what the views show
        for name, is_colour in zip(names, colour or [], strict=False):
            if is_colour:
                st.warning(f"`{name}` is a colour image, not a radiograph: the model reads X-rays only.")
        return ChosenStudy(images, UNKNOWN_BODY_PART, study_id)
    scope_view.show_scopes(names, scopes, fracture_output=FRACTURE in loaded.outputs)
    chosen = ChosenStudy(images, UNKNOWN_BODY_PART, study_id, tuple(scopes))
    in_scope = [scopes[index] for index in range(len(scopes)) if index not in chosen.left_out]
    suggested, _reason = study_scope(in_scope)
    if not suggested:
        return chosen
    if scope_view.preselects(loaded):
        st.caption(
            f"Body part pre-selected from what the views look like: {group_label(suggested).lower()}. "
            "Change it below if you know better."
        )
        return replace(chosen, body_part=suggested)
    words = group_label(suggested).lower()
    st.info(
        f"Suggested body part: **{words}**. Not pre-selected: body-part recognition has not met its "
        "pre-registered rule on MURA valid/ (humerus vs forearm right in at least 98% of studies, with few "
        "other body parts passing as either; figures on the Model card page). Choose the body part below, or "
        "use the suggestion, to get a verdict.",
        icon=":material/lightbulb:",
    )
    st.button(
        f"Use the suggestion: {words}",
        key=f"explain_use_suggestion_{study_id}",
        on_click=st.session_state.update,
        args=({f"explain_body_part_{study_id}": suggested},),
    )
    return chosen


def body_part_selector(card: dict, known: str | None, study_id: str) -> tuple[str | None, str | None]:
    """The body part whose threshold judges the study, and why there is no verdict (None: there is one).

    Nothing is assumed: an unknown body part, or one the model was not trained on, gets the study's
    probability but no verdict, since a threshold chosen on humerus and forearm says nothing there.
    """
    trained = trained_study_types(card)
    options = trained + [t for t in mura.STUDY_TYPES if t not in trained] + [UNKNOWN_BODY_PART]
    default = known if known in options else UNKNOWN_BODY_PART
    body_part = st.selectbox(
        "Body part",
        options,
        index=options.index(default),
        key=f"explain_body_part_{study_id}",
        format_func=lambda t: "Unknown / other" if t == UNKNOWN_BODY_PART else group_label(t),
        help="Pre-selected from what the views look like (or the study's own label); change it if you know better.",
    )
    trained_words = ", ".join(group_label(t).lower() for t in trained)
    if out_of_scope_reason(card, None if body_part == UNKNOWN_BODY_PART else body_part) is None:
        return body_part, None
    if body_part == UNKNOWN_BODY_PART:
        return None, (
            f"No verdict: the body part is unknown. The model was trained on {trained_words} radiographs "
            "only; pick the body part above if it is one of them."
        )
    return body_part, (
        f"No verdict: the model was trained on {trained_words} radiographs only, so for "
        f"{group_label(body_part).lower()} its output is out of distribution."
    )


def run_key(images: list[tuple[str, np.ndarray]], settings: CamSettings) -> str:
    """Identifies one CAM request on these images (for confirmations, slow runs and faithfulness requests)."""
    keys = ",".join(views.image_key(pixels) for _, pixels in images)
    return f"{views.model_key(loaded)}|{keys}|{settings.resolved(loaded).map_key}"


def cancel_slow(key: str) -> None:
    """Cancel button: stop this session's run and forget its confirmation, so the warning returns."""
    slow_runs.cancel(key)
    st.session_state.setdefault(CONFIRMED_KEY, set()).discard(key)


def slow_estimate(images: list[tuple[str, np.ndarray]], settings: CamSettings) -> str:
    """How long a slow method will take on these views, measured on this machine (dashboard.slow_runs)."""
    resolved = settings.resolved(loaded)
    return slow_runs.estimate_text(
        loaded, views.model_key(loaded), resolved.method, resolved.layers, resolved.aug_smooth, len(images)
    )


def run_slow(images: list[tuple[str, np.ndarray]], settings: CamSettings, button_key: str) -> bool:
    """Run (or rejoin) a confirmed slow method on these views below a full-width progress bar; True when done."""
    resolved = settings.resolved(loaded)
    key = run_key(images, settings)
    finished = slow_runs.run(
        loaded,
        views.model_key(loaded),
        key,
        [(views.image_key(pixels), pixels) for _, pixels in images],
        method=resolved.method,
        layers=resolved.layers,
        target=resolved.target,
        aug_smooth=resolved.aug_smooth,
        eigen_smooth=resolved.eigen_smooth,
        button_key=button_key,
        on_cancel=cancel_slow,
    )
    return not (finished.cancelled or finished.error)


def confirmed_method(images: list[tuple[str, np.ndarray]], settings: CamSettings) -> str | None:
    """The method to show: fast ones at once; slow ones after the user confirms (with an estimate),
    run below a progress bar with a cancel button.

    The buttons act in on_click callbacks, which run before the page, so the page that follows a
    click already shows the confirmed state (no stale warning above a running method).
    """
    if not settings.is_slow:
        return settings.method
    confirmed: set[str] = st.session_state.setdefault(CONFIRMED_KEY, set())
    key = run_key(images, settings)
    if key not in confirmed:
        st.warning(
            f"{settings.method} is slow: {METHODS[settings.method].help} Estimate: "
            f"{slow_estimate(images, settings)}. The views are shown without a heat map until you run it."
        )
        st.button(
            f"Run {settings.method}", key="explain_confirm_slow", type="primary", on_click=confirmed.add, args=(key,)
        )
        return None
    if not run_slow(images, settings, "explain_cancel_slow"):
        return None
    st.button(
        f"Hide {settings.method}",
        key="explain_stop_slow",
        on_click=confirmed.discard,
        args=(key,),
        help="Shows the views without this heat map again (the finished maps are kept for this session).",
    )
    return settings.method


def shared_scale(images: list[tuple[str, np.ndarray]], settings: CamSettings) -> MapScale:
    """The colour scale the study grid uses, so one view in detail is drawn on the same range."""
    shown = []
    for _name, pixels in images:
        try:
            shown.append((pixels, settings, views.cached_explanation(loaded, pixels, settings)))
        except (ValueError, RuntimeError):  # the grid above already said why this view has no map
            continue
    return views.map_scale(loaded, shown)


def view_details(
    loaded: LoadedModel,
    images: list[tuple[str, np.ndarray]],
    settings: CamSettings,
    threshold: float | None,
    study_ref: str,
) -> None:
    """For one view: regions, an expert outline with its scores, downloads and faithfulness on request."""
    st.subheader("One view in detail")
    names = [name for name, _ in images]
    # Keyed per study: one key for all would keep the last study's choice (and its file name) showing.
    index = (
        st.selectbox(
            "View", range(len(images)), format_func=names.__getitem__, key=f"explain_detail_view_{study_ref}:{names}"
        )
        if len(images) > 1
        else 0
    )
    name, pixels = images[index]
    explanation = views.explanation_or_error(loaded, pixels, name, settings)
    if explanation is None:
        return
    method = settings.method
    scale = shared_scale(images, settings)
    picture = views.map_picture(pixels, explanation, settings, scale)
    picture, scores = accuracy.outlined_view(study_ref, pixels, explanation.heatmap, picture)
    original, blended = st.columns(2)
    original.image(pixels, caption=f"{name} (as decoded)", width="stretch")
    blended.image(
        picture,
        caption=f"{method} on {', '.join(explanation.layers) or 'all layers'} → {explanation.target} · {scale.short}",
        width="stretch",
    )
    if settings.heat_threshold is not None:
        _mask, boxes = threshold_mask(explanation.heatmap, settings.heat_threshold)
        st.caption(f"{len(boxes)} region(s) with heat ≥ {settings.heat_threshold:.2f}, boxed in green.")
    if scores is not None:
        st.caption(
            "Expert fracture outline in cyan (FracAtlas). How this heat map localises it, beside the "
            f"chance maps (hit: maximum within {TOLERANCE_PX} px of the outline):"
        )
        st.dataframe(scores, hide_index=True, key="explain_outline_scores")
    stem = f"{PurePosixPath(name).stem}_{method}"
    fields = caption_fields(explanation, threshold=threshold, scale=scale, view=name)
    figure, png, npy, score = st.columns(4)
    # Drawn only when clicked (a callable): a labelled figure takes a second or two to render.
    figure.download_button(
        "Labelled figure (.png)",
        lambda: figure_png(
            explanation_figure(pixels, picture, fields, colormap=settings.colormap, scale=scale), fields
        ),
        file_name=f"{stem}_figure.png",
        mime="image/png",
        on_click="ignore",
        key="explain_download_figure",
        help="For slides: the radiograph, the overlay, the colour bar, and a caption with model, method, layer, "
        "target, P(abnormal), threshold and colour scale.",
    )
    png.download_button(
        "Overlay (.png)",
        views.png_bytes(picture),
        file_name=f"{stem}.png",
        mime="image/png",
        on_click="ignore",
        key="explain_download_png",
        help="The overlay alone, at the image's resolution.",
    )
    npy.download_button(
        "Raw heat map (.npy)",
        views.npy_bytes(explanation.heatmap),
        file_name=f"{stem}.npy",
        mime="application/octet-stream",
        on_click="ignore",
        key="explain_download_npy",
        help="float32 (height, width) in [0, 1] at the image's own resolution.",
    )
    requests: set[str] = st.session_state.setdefault(FAITHFULNESS_KEY, set())
    key = run_key([images[index]], settings)
    if score.button(
        "Measure faithfulness",
        key="explain_faithfulness",
        help="ROAD (Rong et al., 2022): removes the pixels the map calls most and least relevant "
        "and compares how P(class) changes. Several model runs: a few seconds.",
    ):
        requests.add(key)
    if key in requests:
        value = views.cached_faithfulness(loaded, pixels, explanation)
        score.metric(
            "Faithfulness (ROAD)",
            f"{value:+.3f}",
            help="In [-1, 1]: above 0 when removing the 'relevant' pixels hurts the prediction more than "
            "removing the rest; about 0 for a map no better than chance.",
        )


def compare_panel(view: list[tuple[str, np.ndarray]], panel: CamSettings, number: int) -> Explanation | None:
    """One Compare panel's map; a slow method not yet run on this view waits for its own confirm here."""
    name, pixels = view[0]
    if panel.is_slow:
        key = run_key(view, panel)
        confirmed: set[str] = st.session_state.setdefault(CONFIRMED_KEY, set())
        try:
            return views.cached_explanation(loaded, pixels, panel)  # the sidebar's run may have made it
        except ValueError:
            pass
        if key not in confirmed:
            st.warning(f"{panel.method} is slow (estimate: {slow_estimate(view, panel)}).")
            st.button(
                f"Run {panel.method} for Compare",
                key=f"explain_compare_confirm_{number}",
                on_click=confirmed.add,
                args=(key,),
            )
            return None
        if not run_slow(view, panel, f"explain_compare_cancel_{number}"):
            return None
    return views.explanation_or_error(loaded, pixels, name, panel)


def comparison(
    loaded: LoadedModel,
    images: list[tuple[str, np.ndarray]],
    settings: CamSettings,
    threshold: float | None,
    study_ref: str,
) -> None:
    """Side by side on one view: several methods at the chosen layers, or several layers with the method."""
    st.subheader("Compare")
    names = [name for name, _ in images]
    index = (
        st.selectbox(
            "View to compare on",
            range(len(images)),
            format_func=names.__getitem__,
            key=f"explain_compare_view_{study_ref}:{names}",
        )
        if len(images) > 1
        else 0
    )
    methods = st.multiselect(
        "Methods",
        list(METHODS),
        key="explain_compare_methods",
        help="Each at the layer(s) chosen in the sidebar. Slow ones ask to be run here.",
    )
    layers = st.multiselect(
        "Layers",
        list(loaded.cam_layers),
        key="explain_compare_layers",
        help=f"Each with the sidebar's method ({settings.method}).",
    )
    panels = [replace(settings, method=m) for m in methods] + [replace(settings, layers=(layer,)) for layer in layers]
    if not panels:
        return
    name, pixels = images[index]
    shown = [(panel, compare_panel([images[index]], panel, number)) for number, panel in enumerate(panels)]
    shown = [(panel, explanation) for panel, explanation in shown if explanation is not None]
    if not shown:
        return
    scale = views.map_scale(loaded, [(pixels, panel, explanation) for panel, explanation in shown])
    views.show_colour_scale([(pixels, panel, explanation) for panel, explanation in shown], scale)
    pictures = []
    for column, (panel, explanation) in zip(st.columns(len(shown)), shown, strict=True):
        title = f"{panel.method} · {', '.join(explanation.layers) or 'all layers'}"
        pictures.append((title, views.map_picture(pixels, explanation, panel, scale)))
        column.image(pictures[-1][1], caption=title, width="stretch")
    fields = caption_fields(shown[0][1], threshold=threshold, scale=scale, view=name)
    for varying in ("Method", "Layer"):
        fields.pop(varying)
    st.download_button(
        "Compare grid (.png)",
        lambda: figure_png(comparison_figure(pictures, fields, colormap=settings.colormap, scale=scale), fields),
        file_name=f"{PurePosixPath(name).stem}_compare.png",
        mime="image/png",
        on_click="ignore",
        key="explain_download_compare",
        help="These panels as one figure with a colour bar and a caption, for slides.",
    )


loaded = state.current_model()
st.title("Explain")
accept_handoff()
settings = views.cam_controls(loaded)
if (trust_line := trust_view.scorecard_line(loaded.name, settings.method, settings.target)) is not None:
    st.sidebar.caption(trust_line)
chosen = chosen_images()
images, study_id = chosen.views, chosen.study_id
if not images:
    st.info("Upload a radiograph (PNG, JPEG or DICOM), or pick one of the samples, to see what the model says.")
    st.stop()
study_type, no_verdict = body_part_selector(loaded.card, chosen.body_part, study_id)
# A study the abnormal output cannot judge (a hand) leads with the fracture reading, which can.
fracture_first = no_verdict is not None and FRACTURE in loaded.outputs
if fracture_first:
    fracture_view.show_fracture_reading(loaded, images)
method = confirmed_method(images, settings)
prediction = views.show_study_views(
    loaded,
    images,
    settings=None if method is None else settings,
    study_type=study_type,
    no_verdict=no_verdict,
    thresholds=evaluation.user_thresholds(loaded.name, loaded.card),
    left_out=chosen.left_out,
    against_flag=chosen.flag_reason,
)
verdict_threshold = None if no_verdict else prediction.threshold  # the one the verdict used, whoever set it
if not fracture_first:
    fracture_view.show_fracture_reading(loaded, images)
if studies.is_fracatlas_ref(study_id) and fracture_view.trained_on(
    loaded, study_id.removeprefix(studies.FRACATLAS_PREFIX)
):
    st.info(
        "This model's fracture output was trained on this image: its score and map here are not a test.",
        icon=":material/school:",
    )
if method is not None:
    view_details(loaded, images, settings, verdict_threshold, study_id)
comparison(loaded, images, settings, verdict_threshold, study_id)
data_map.show_similar_studies(loaded.name, study_id, key="explain")
