"""Shared UI pieces: a study's views with probabilities and CAM overlays, cached per image.

Probabilities come from core.predict (the model's own forward, with the card's test-time
augmentation), never from a CAM's forward pass. CAMs are cached with st.cache_data per
(model, image content, method, layers, target, smoothing), so moving the opacity, colour map
or region-threshold sliders only re-blends a cached heat map.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from core.cam.explain import DEFAULT_METHOD, METHODS, Explanation, Target, explain, output_column
from core.cam.faithfulness import faithfulness
from core.cam.figures import MapScale
from core.cam.overlay import COLORMAPS, DEFAULT_COLORMAP, DEFAULT_OPACITY, colormap_colours, overlay, threshold_mask
from core.model.card import threshold_for
from core.model.checkpoint import LoadedModel
from core.model.prediction import StudyPrediction, predict_image_outputs, study_probability
from core.store.artifacts import ModelArtifacts, file_version
from dashboard import navigation, slow_runs, state
from dashboard.charts import group_label

__all__ = [
    "CamSettings",
    "short_layer_name",
    "cam_controls",
    "map_picture",
    "map_scale",
    "show_colour_scale",
    "colour_bar_html",
    "image_key",
    "model_key",
    "cached_probabilities",
    "cached_explanation",
    "cached_faithfulness",
    "explanation_or_error",
    "overlay_with_boxes",
    "png_bytes",
    "npy_bytes",
    "study_verdict",
    "show_verdict",
    "show_study_views",
    "open_in_explain",
]

_BOX_COLOUR = (0, 255, 0)
_CAM_FAILED = "The heat map could not be computed for {name}: {reason}"


@dataclass(frozen=True)
class CamSettings:
    """Every choice that shapes a CAM overlay; the first five change the map, the rest only its look."""

    method: str = DEFAULT_METHOD
    layers: tuple[str, ...] = ()
    target: Target = "abnormal"
    aug_smooth: bool = False
    eigen_smooth: bool = False
    opacity: float = DEFAULT_OPACITY
    colormap: str = DEFAULT_COLORMAP
    heat_threshold: float | None = None
    absolute: bool = False

    @property
    def is_slow(self) -> bool:
        """Whether the chosen method is slow, so pages run it only after the user confirms."""
        return METHODS[self.method].slow

    @property
    def map_key(self) -> tuple[str, tuple[str, ...], Target, bool, bool]:
        """The choices that shape the map, in core.cam.explain.Explanation.key's order."""
        return self.method, self.layers, self.target, self.aug_smooth, self.eigen_smooth

    def resolved(self, loaded: LoadedModel) -> CamSettings:
        """The same settings with the layers explain really uses: the default when none is chosen,
        none for FullGrad (the layer choice does not change its map), so equal maps share a key."""
        if not METHODS[self.method].uses_layers:
            return replace(self, layers=())
        return replace(self, layers=self.layers or (loaded.config.default_cam_layer,))


def short_layer_name(name: str) -> str:
    """ "head conv (1280 ch, stride 32)" -> "head conv": the sidebar's chips cut the full name off (the
    help lists the full names)."""
    return name.split(" (", 1)[0]


def cam_controls(loaded: LoadedModel, *, key_prefix: str = "cam") -> CamSettings:
    """The heat-map controls, in the sidebar; widget keys are ``f"{key_prefix}_<name>"``."""
    bar = st.sidebar
    bar.header("Heat map")
    method = bar.selectbox(
        "CAM method",
        list(METHODS),
        key=f"{key_prefix}_method",
        format_func=lambda m: f"{m} (slow)" if METHODS[m].slow else m,
        help="\n\n".join(f"**{name}**: {info.help}" for name, info in METHODS.items()),
    )
    # A fracture-aware model opens on its fracture output, the one whose map is trained to find the lesion.
    targets = (*(o for o in loaded.outputs if o != "abnormal"), "abnormal", "normal")
    target = bar.radio(
        "Explain the class",
        targets,
        horizontal=True,
        key=f"{key_prefix}_target",
        help="abnormal / normal: MURA's label (P(abnormal) or its complement). fracture: "
        "FracAtlas's label, for a model with a fracture output.",
    )
    default_layer = [loaded.config.cam_layer_for(target)]
    # One layer choice per target: a layer off an output's path would give an empty map.
    layers = (
        bar.multiselect(
            "Target layer(s)",
            list(loaded.cam_layers),
            default=default_layer,
            key=f"{key_prefix}_layers" + ("" if len(targets) == 2 else f"_{target}"),
            disabled=not METHODS[method].uses_layers,
            format_func=short_layer_name,
            help="Later layers give coarse, class-specific maps; earlier ones are sharper. "
            "Several layers are averaged.\n\n"
            + "\n".join(f"- **{short_layer_name(name)}**: {name}" for name in loaded.cam_layers),
        )
        or default_layer
    )
    named = bar.selectbox(
        "Or any convolution, by name",
        loaded.named_layers,
        index=None,
        key=f"{key_prefix}_named",
        disabled=not METHODS[method].uses_layers,
        placeholder="Type to search the network's layers",
        help="Every convolution of the network by its module path (the presets above are a few of "
        "them, named in words). Chosen, it replaces the layers above.",
    )
    layers = [named] if named else layers
    aug_smooth = bar.checkbox(
        "Augmentation smoothing",
        key=f"{key_prefix}_aug_smooth",
        help="Average the map over flips and brightness changes (6 passes).",
    )
    eigen_smooth = bar.checkbox(
        "Eigen smoothing",
        key=f"{key_prefix}_eigen_smooth",
        help="Keep the first principal component of the weighted activations.",
    )
    opacity = bar.slider("Opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=f"{key_prefix}_opacity")
    colormap = bar.selectbox(
        "Colour map", COLORMAPS, index=COLORMAPS.index(DEFAULT_COLORMAP), key=f"{key_prefix}_colormap"
    )
    scale = bar.radio(
        "Colour scale",
        ("per image", "absolute"),
        horizontal=True,
        key=f"{key_prefix}_scale",
        help="Per image: every map runs from its own lowest to its highest value, so even weak "
        "evidence looks red. Absolute: the raw CAM values of all maps shown together on one "
        "range from 0, so weak evidence looks weak.",
    )
    outline = bar.toggle("Outline hot regions", key=f"{key_prefix}_outline")
    threshold = bar.slider(
        "Region threshold",
        0.05,
        0.95,
        0.5,
        0.05,
        key=f"{key_prefix}_threshold",
        disabled=not outline,
        help="Boxes around the regions whose heat is at least this.",
    )
    return CamSettings(
        method,
        tuple(layers),
        target,
        aug_smooth,
        eigen_smooth,
        opacity,
        colormap,
        threshold if outline else None,
        scale == "absolute",
    )


def image_key(pixels: np.ndarray) -> str:
    """A content hash of an image: the cache key that stands in for the pixels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def model_key(loaded: LoadedModel) -> str:
    """Which weights a cached result came from: the model folder and its checkpoint's version."""
    return f"{loaded.directory}@{file_version(ModelArtifacts(loaded.directory).checkpoint)}"


@st.cache_data(show_spinner=False, max_entries=1024)
def _outputs(model: str, key: str, _loaded: LoadedModel, _pixels: np.ndarray) -> tuple[float, ...]:
    return tuple(float(p) for p in predict_image_outputs(_loaded, [_pixels])[0])


def cached_outputs(loaded: LoadedModel, pixels: np.ndarray) -> tuple[float, ...]:
    """Every output's probability of one image from core.predict (P(abnormal), and P(fracture) where the
    model has it), cached per model and image content: the one prediction the views, the fracture
    reading and the heat map's caption all read, so an upload is predicted once."""
    return _outputs(model_key(loaded), image_key(pixels), loaded, pixels)


def cached_probabilities(loaded: LoadedModel, images: Sequence[np.ndarray]) -> list[float]:
    """P(abnormal) per image from core.predict, cached per model and image content."""
    return [cached_outputs(loaded, pixels)[0] for pixels in images]


# A heat map is float32 at the image's size, which uploads.py and studies.py keep within
# core.data.imaging.DISPLAY_MAX_SIDE: at most 4 MB each, so this cache holds at most 128 MB.
@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def _explanation(model: str, image: str, key: tuple, _loaded: LoadedModel, _pixels: np.ndarray) -> Explanation:
    method, layers, target, aug_smooth, eigen_smooth = key
    return explain(
        _loaded,
        _pixels,
        method=method,
        layers=list(layers) or None,
        target=target,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        probability=cached_outputs(_loaded, _pixels)[output_column(target)],
    )


def cached_explanation(loaded: LoadedModel, pixels: np.ndarray, settings: CamSettings = CamSettings()) -> Explanation:
    """core.cam.explain.explain with these settings, cached; a slow method's map comes from this
    session's finished run (dashboard.slow_runs), which the page starts after the user confirms.

    Raises:
        ValueError: bad settings, or a slow method that has not run on this view.
        RuntimeError: the method failed on this model.
    """
    settings = settings.resolved(loaded)
    if not settings.is_slow:
        return _explanation(model_key(loaded), image_key(pixels), settings.map_key, loaded, pixels)
    found = slow_runs.result(model_key(loaded), image_key(pixels), settings.map_key)
    if found is None:
        raise ValueError(f"{settings.method} has not run on this view yet")
    return found


def explanation_or_error(
    loaded: LoadedModel, pixels: np.ndarray, name: str, settings: CamSettings = CamSettings()
) -> Explanation | None:
    """cached_explanation, or None after one st.error sentence when the method fails on this model."""
    try:
        return cached_explanation(loaded, pixels, settings)
    except (ValueError, RuntimeError) as exc:
        st.error(_CAM_FAILED.format(name=name, reason=exc))
        return None


@st.cache_data(show_spinner="Measuring faithfulness…", max_entries=256, ttl=3600)
def _faithfulness(
    model: str, image: str, key: tuple, _loaded: LoadedModel, _pixels: np.ndarray, _explanation: Explanation
) -> float:
    return faithfulness(_loaded, _pixels, _explanation)


def cached_faithfulness(loaded: LoadedModel, pixels: np.ndarray, explanation: Explanation) -> float:
    """core.cam.faithfulness.faithfulness (ROAD) of a cached explanation, cached under the explanation's own key."""
    return _faithfulness(model_key(loaded), image_key(pixels), explanation.key, loaded, pixels, explanation)


def map_scale(loaded: LoadedModel, shown: Sequence[tuple[np.ndarray, CamSettings, Explanation]]) -> MapScale:
    """The colour scale of maps shown together (image, settings, map): per image, or one raw range [0, peak].

    Absolute when the settings ask for it: the peak is the largest raw value among the maps shown
    and, for fast methods, the same views' maps for the other target, so a "normal" map of a
    clearly abnormal study looks as weak as it is. Maps without a raw scale (FullGrad) stay per image.
    """
    if not shown or not shown[0][1].absolute:
        return MapScale()
    peaks: list[float] = []
    for pixels, settings, explanation in shown:
        if explanation.raw_peak is None:
            continue
        peaks.append(explanation.raw_peak)
        if not settings.is_slow and settings.target in ("abnormal", "normal"):
            other = replace(settings, target="normal" if settings.target == "abnormal" else "abnormal")
            peaks.append(cached_explanation(loaded, pixels, other).raw_peak or 0.0)
    return MapScale(max(peaks)) if peaks and max(peaks) > 0 else MapScale()


_COLOUR_BAR_STOPS = 16


def colour_bar_html(colormap: str, scale: MapScale) -> str:
    """A colour bar as an HTML gradient through the overlay's own colours, ticked 0, middle, top.

    HTML rather than a matplotlib picture: an image would sit among the views as one more picture
    (for screen readers and the page's own tests), and a gradient of the overlay's colours is exact.
    """
    colours = colormap_colours(colormap)[np.linspace(0, 255, _COLOUR_BAR_STOPS).round().astype(int)]
    stops = ", ".join(
        f"rgb({r},{g},{b}) {100 * i / (_COLOUR_BAR_STOPS - 1):.1f}%" for i, (r, g, b) in enumerate(colours)
    )
    ticks = "".join(f"<span>{value:.3g}</span>" for value in (0.0, scale.top / 2, scale.top))
    return (
        f'<div style="max-width:480px"><div style="height:14px;border:1px solid #888;'
        f'background:linear-gradient(to right, {stops})"></div>'
        f'<div style="display:flex;justify-content:space-between;font-size:0.75rem">{ticks}</div></div>'
    )


def show_colour_scale(shown: Sequence[tuple[np.ndarray, CamSettings, Explanation]], scale: MapScale) -> None:
    """The overlays' colour bar and what its numbers mean, once above the maps it describes."""
    if not shown:
        return
    settings = shown[0][1]
    st.html(colour_bar_html(settings.colormap, scale))
    notes = []
    per_image = sorted({s.method for _, s, e in shown if e.raw_map is None})
    if settings.absolute and per_image:
        notes.append(f"{', '.join(per_image)} has no raw scale, so its maps stay normalised per image")
    if scale.peak is not None:
        fast = any(not s.is_slow for _, s, _ in shown)
        notes.append(
            f"0 to {scale.peak:.3g} covers every map here"
            + (" and, for fast methods, the same maps for the other target" if fast else "")
        )
        if len({(s.method, s.layers) for _, s, _ in shown}) > 1:
            notes.append("raw units differ between methods and layers, so compare strength within one of them")
    st.caption(f"Colour scale: {scale.label}" + "".join(f"; {note}" for note in notes) + ".")


def map_picture(
    pixels: np.ndarray, explanation: Explanation, settings: CamSettings, scale: MapScale | None = None
) -> np.ndarray:
    """The overlay as the settings and the colour scale ask (absolute: the raw map on the shared range)."""
    peak = None if scale is None or explanation.raw_map is None else scale.peak
    heatmap = explanation.heatmap if peak is None else explanation.absolute_heatmap(peak)
    return overlay_with_boxes(
        pixels, heatmap, colormap=settings.colormap, opacity=settings.opacity, heat_threshold=settings.heat_threshold
    )


def overlay_with_boxes(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    *,
    colormap: str = DEFAULT_COLORMAP,
    opacity: float = DEFAULT_OPACITY,
    heat_threshold: float | None = None,
) -> np.ndarray:
    """core.cam.overlay.overlay, plus the boxes of the regions hotter than ``heat_threshold``."""
    blended = overlay(pixels, heatmap, colormap=colormap, opacity=opacity)
    if heat_threshold is None:
        return blended
    _mask, boxes = threshold_mask(heatmap, heat_threshold)
    picture = Image.fromarray(blended)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(pixels.shape) / 256))
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=_BOX_COLOUR, width=width)
    return np.asarray(picture)


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG-encode an array in memory (downloads are never written to disk)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """The array as ``.npy`` bytes (no pickle) for the raw heat-map download."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def study_verdict(
    loaded: LoadedModel,
    probabilities: Sequence[float],
    study_type: str | None,
    thresholds: Mapping[str, float] | None = None,
) -> StudyPrediction:
    """The MURA study verdict from view probabilities, at the body part's threshold in ``thresholds``
    (core.eval.metrics' shape: the ones the user set on Performance), else the card's."""
    threshold = loaded.threshold_for(study_type) if thresholds is None else threshold_for(thresholds, study_type)
    return StudyPrediction(tuple(probabilities), study_probability(probabilities), threshold, study_type)


def show_verdict(
    prediction: StudyPrediction, card_threshold: float | None = None, against_flag: str | None = None
) -> None:
    """Study probability, verdict and the threshold it was judged at, as metrics; with ``card_threshold``
    (the card's, when the user's threshold differs) the threshold says whose it is.

    ``against_flag`` (why the scope head flagged the views) marks a verdict the user asked for by naming
    the body part of flagged views: a fourth metric in the same row, as large as the verdict, says it is
    given against the flag, and one sentence below says why the flag was raised.
    """
    columns = st.columns(4 if against_flag else 3)
    probability, verdict, threshold = columns[0], columns[1], columns[-1]
    probability.metric(
        "Study P(abnormal)",
        f"{prediction.probability:.3f}",
        help="Mean of the views' probabilities, as in the MURA paper.",
    )
    verdict.metric("Verdict", prediction.verdict)
    if against_flag:
        columns[2].metric(
            "Scope flag",
            "overridden",
            help="You named the body part of views the scope head "
            "flags as outside what the model was trained on; the verdict is given against that flag.",
        )
        st.error(
            f"This verdict is given **against the scope flag**: {against_flag} You chose the body part; the "
            "model's output on images like this has not been validated.",
            icon=":material/flag:",
        )
    body_part = group_label(prediction.study_type).lower() if prediction.study_type else "unknown body parts"
    if card_threshold is None:
        threshold.metric(
            "Threshold", f"{prediction.threshold:.3f}", help=f"The model card's operating threshold for {body_part}."
        )
        st.caption(
            f"Judged at the model card's threshold for {body_part}. Thresholds you set on the Performance "
            "page apply here too."
        )
    else:
        threshold.metric(
            "Threshold",
            f"{prediction.threshold:.3f}",
            delta=f"{prediction.threshold - card_threshold:+.3f} vs the card's",
            delta_color="off",
            help=f"The threshold you set for {body_part} on the Performance or Error analysis page.",
        )
        st.caption(
            f"Judged at **your** threshold for {body_part} from the Performance page "
            f"({prediction.threshold:.3f}; the model card's is {card_threshold:.3f}). Its Reset button "
            "returns to the card's."
        )


def show_study_views(
    loaded: LoadedModel,
    images: list[tuple[str, np.ndarray]],
    *,
    settings: CamSettings | None = CamSettings(),
    study_type: str | None = None,
    no_verdict: str | None = None,
    columns: int = 4,
    thresholds: Mapping[str, float] | None = None,
    left_out: Sequence[int] = (),
    against_flag: str | None = None,
) -> StudyPrediction:
    """Show a study: its verdict, then each view with P(abnormal) and its CAM overlay under one colour bar.

    ``settings=None`` shows the plain views (e.g. while a slow method awaits confirmation).
    ``no_verdict`` (one sentence) replaces the verdict for a study the model should not judge
    (unknown or untrained body part, not a radiograph): the probability stays, in small type.
    ``thresholds`` (the user's, from Performance) judge the study instead of the card's.
    ``left_out`` are views flagged out of scope (core.scope.views_in_study_mean): shown, but not in the
    study's mean, which says so. ``against_flag`` marks a verdict given against the scope flag (show_verdict).
    Returns the study prediction so callers can reuse the probabilities.
    """
    probabilities = cached_probabilities(loaded, [pixels for _, pixels in images])
    kept = [p for index, p in enumerate(probabilities) if index not in left_out]
    prediction = study_verdict(loaded, kept, study_type, thresholds)
    if left_out:
        names = ", ".join(f"`{images[index][0]}`" for index in left_out)
        st.warning(
            f"Left out of the study's mean: {names}, flagged out of scope below. The study probability"
            + ("" if no_verdict else " and the verdict")
            + f" use the other {len(kept)} view(s) only.",
            icon=":material/filter_alt:",
        )
    if no_verdict is None:
        card_threshold = loaded.threshold_for(study_type)
        show_verdict(
            prediction, None if np.isclose(prediction.threshold, card_threshold) else card_threshold, against_flag
        )
    else:
        st.warning(no_verdict, icon=":material/help:")
        st.caption(f"Study P(abnormal) = {prediction.probability:.3f}, shown for reference only.")
    explanations = [
        None if settings is None else explanation_or_error(loaded, pixels, name, settings) for name, pixels in images
    ]
    shown = [(pixels, settings, e) for (_, pixels), e in zip(images, explanations, strict=True) if e is not None]
    scale = map_scale(loaded, shown)
    show_colour_scale(shown, scale)
    grid = st.columns(max(1, columns))  # a fixed grid: every view at the same size, however many
    for index, ((name, pixels), probability, explanation) in enumerate(
        zip(images, probabilities, explanations, strict=True)
    ):
        with grid[index % len(grid)]:
            caption = f"{name} · P(abnormal) = {probability:.3f}" + (
                " · left out of the study's mean (flagged)" if index in left_out else ""
            )
            if settings is None or explanation is None:
                st.image(pixels, caption=caption, width="stretch")
                continue
            picture = map_picture(pixels, explanation, settings, scale)
            scale_words = "per-image scale" if scale.peak is None or explanation.raw_map is None else "absolute scale"
            st.image(
                picture, caption=f"{caption} · {settings.method} → {settings.target} · {scale_words}", width="stretch"
            )
            if not explanation.heatmap.any():
                # A gradient CAM keeps only evidence *for* the target; none is an answer, not a bug.
                st.caption(f"Empty map: nothing in this view pushes the model towards {settings.target}.")
    return prediction


def open_in_explain(study_ref: str) -> None:
    """Hand a study (official MURA study path or synthetic sample id) to the Explain page."""
    st.session_state[state.EXPLAIN_STUDY_KEY] = study_ref
    st.switch_page(navigation.page(navigation.EXPLAIN))
