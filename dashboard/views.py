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
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from core.artifacts import ModelArtifacts, file_version
from core.card import threshold_for
from core.explain import DEFAULT_METHOD, METHODS, Explanation, Target, explain
from core.faithfulness import faithfulness
from core.models import LoadedModel
from core.overlay import COLORMAPS, DEFAULT_COLORMAP, DEFAULT_OPACITY, overlay, threshold_mask
from core.predict import StudyPrediction, predict_images, study_probability
from dashboard import navigation, state
from dashboard.charts import group_label

__all__ = [
    "CamSettings",
    "short_layer_name",
    "cam_controls",
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
    """Every choice that shapes a CAM overlay; the first six change the map, the rest only its look."""

    method: str = DEFAULT_METHOD
    layers: tuple[str, ...] = ()
    target: Target = "abnormal"
    aug_smooth: bool = False
    eigen_smooth: bool = False
    opacity: float = DEFAULT_OPACITY
    colormap: str = DEFAULT_COLORMAP
    heat_threshold: float | None = None

    @property
    def is_slow(self) -> bool:
        """Whether the chosen method is slow, so pages run it only after the user confirms."""
        return METHODS[self.method].slow


def short_layer_name(name: str) -> str:
    """"head conv (1280 ch, stride 32)" -> "head conv": the sidebar's chips cut the full name off (the
    help lists the full names)."""
    return name.split(" (", 1)[0]


def cam_controls(loaded: LoadedModel, *, key_prefix: str = "cam") -> CamSettings:
    """The heat-map controls, in the sidebar; widget keys are ``f"{key_prefix}_<name>"``."""
    bar = st.sidebar
    bar.header("Heat map")
    method = bar.selectbox("CAM method", list(METHODS), key=f"{key_prefix}_method",
                           format_func=lambda m: f"{m} (slow)" if METHODS[m].slow else m,
                           help="\n\n".join(f"**{name}**: {info.help}" for name, info in METHODS.items()))
    default_layer = [loaded.config.default_cam_layer]
    layers = bar.multiselect("Target layer(s)", list(loaded.cam_layers), default=default_layer,
                             key=f"{key_prefix}_layers", disabled=not METHODS[method].uses_layers,
                             format_func=short_layer_name,
                             help="Later layers give coarse, class-specific maps; earlier ones are sharper. "
                                  "Several layers are averaged.\n\n"
                                  + "\n".join(f"- **{short_layer_name(name)}**: {name}"
                                              for name in loaded.cam_layers)) or default_layer
    target = bar.radio("Explain the class", ("abnormal", "normal"), horizontal=True, key=f"{key_prefix}_target")
    aug_smooth = bar.checkbox("Augmentation smoothing", key=f"{key_prefix}_aug_smooth",
                              help="Average the map over flips and brightness changes (6 passes).")
    eigen_smooth = bar.checkbox("Eigen smoothing", key=f"{key_prefix}_eigen_smooth",
                                help="Keep the first principal component of the weighted activations.")
    opacity = bar.slider("Opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=f"{key_prefix}_opacity")
    colormap = bar.selectbox("Colour map", COLORMAPS, index=COLORMAPS.index(DEFAULT_COLORMAP),
                             key=f"{key_prefix}_colormap")
    outline = bar.toggle("Outline hot regions", key=f"{key_prefix}_outline")
    threshold = bar.slider("Region threshold", 0.05, 0.95, 0.5, 0.05, key=f"{key_prefix}_threshold",
                           disabled=not outline, help="Boxes around the regions whose heat is at least this.")
    return CamSettings(method, tuple(layers), target, aug_smooth, eigen_smooth, opacity, colormap,
                       threshold if outline else None)


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
def _probabilities(model: str, keys: tuple[str, ...], _loaded: LoadedModel,
                   _images: Sequence[np.ndarray]) -> list[float]:
    return [float(p) for p in predict_images(_loaded, list(_images))]


def cached_probabilities(loaded: LoadedModel, images: Sequence[np.ndarray]) -> list[float]:
    """P(abnormal) per image from core.predict, cached per model and image content."""
    return _probabilities(model_key(loaded), tuple(image_key(p) for p in images), loaded, images)


# A heat map is float32 at the image's size, which uploads.py and studies.py keep within
# core.imaging.DISPLAY_MAX_SIDE: at most 4 MB each, so this cache holds at most 128 MB.
@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def _explanation(model: str, image: str, method: str, layers: tuple[str, ...], target: Target,
                 aug_smooth: bool, eigen_smooth: bool, _loaded: LoadedModel,
                 _pixels: np.ndarray) -> Explanation:
    if not METHODS[method].slow:
        return explain(_loaded, _pixels, method=method, layers=list(layers) or None, target=target,
                       aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    # Created inside the cached function so a cache hit replays (and empties) it cleanly; a
    # widget interaction meanwhile makes bar.progress raise, which cancels the run.
    bar = st.progress(0.0, text=f"Running {method}…")
    result = explain(_loaded, _pixels, method=method, layers=list(layers) or None, target=target,
                     aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                     progress=lambda done: bar.progress(done, text=f"Running {method}… {done:.0%}"))
    bar.empty()
    return result


def cached_explanation(loaded: LoadedModel, pixels: np.ndarray, *, method: str = DEFAULT_METHOD,
                       layers: Sequence[str] | None = None, target: Target = "abnormal",
                       aug_smooth: bool = False, eigen_smooth: bool = False) -> Explanation:
    """core.explain.explain, cached; slow methods show a progress bar while they run."""
    if not METHODS[method].uses_layers:
        chosen: tuple[str, ...] = ()  # FullGrad: the layer choice does not change its map
    else:
        chosen = tuple(layers) if layers else (loaded.config.default_cam_layer,)
    return _explanation(model_key(loaded), image_key(pixels), method, chosen, target,
                        aug_smooth, eigen_smooth, loaded, pixels)


def explanation_or_error(loaded: LoadedModel, pixels: np.ndarray, name: str, **options: object) -> Explanation | None:
    """cached_explanation, or None after one st.error sentence when the method fails on this model."""
    try:
        return cached_explanation(loaded, pixels, **options)
    except (ValueError, RuntimeError) as exc:
        st.error(_CAM_FAILED.format(name=name, reason=exc))
        return None


@st.cache_data(show_spinner="Measuring faithfulness…", max_entries=256, ttl=3600)
def _faithfulness(model: str, image: str, method: str, layers: tuple[str, ...], target: Target,
                  aug_smooth: bool, eigen_smooth: bool, _loaded: LoadedModel, _pixels: np.ndarray,
                  _explanation: Explanation) -> float:
    return faithfulness(_loaded, _pixels, _explanation)


def cached_faithfulness(loaded: LoadedModel, pixels: np.ndarray, explanation: Explanation, *,
                        aug_smooth: bool = False, eigen_smooth: bool = False) -> float:
    """core.faithfulness.faithfulness (ROAD) of a cached explanation, cached under the same key."""
    return _faithfulness(model_key(loaded), image_key(pixels), explanation.method, explanation.layers,
                         explanation.target, aug_smooth, eigen_smooth, loaded, pixels, explanation)


def overlay_with_boxes(pixels: np.ndarray, heatmap: np.ndarray, *, colormap: str = DEFAULT_COLORMAP,
                       opacity: float = DEFAULT_OPACITY, heat_threshold: float | None = None) -> np.ndarray:
    """core.overlay.overlay, plus the boxes of the regions hotter than ``heat_threshold``."""
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


def study_verdict(loaded: LoadedModel, probabilities: Sequence[float], study_type: str | None,
                  thresholds: Mapping[str, float] | None = None) -> StudyPrediction:
    """The MURA study verdict from view probabilities, at the body part's threshold in ``thresholds``
    (core.metrics' shape: the ones the user set on Performance), else the card's."""
    threshold = loaded.threshold_for(study_type) if thresholds is None else threshold_for(thresholds, study_type)
    return StudyPrediction(tuple(probabilities), study_probability(probabilities), threshold, study_type)


def show_verdict(prediction: StudyPrediction, card_threshold: float | None = None) -> None:
    """Study probability, verdict and the threshold it was judged at, as three metrics; with
    ``card_threshold`` (the card's, when the user's threshold differs) the threshold says whose it is."""
    probability, verdict, threshold = st.columns(3)
    probability.metric("Study P(abnormal)", f"{prediction.probability:.3f}",
                       help="Mean of the views' probabilities, as in the MURA paper.")
    verdict.metric("Verdict", prediction.verdict)
    body_part = group_label(prediction.study_type).lower() if prediction.study_type else "unknown body parts"
    if card_threshold is None:
        threshold.metric("Threshold", f"{prediction.threshold:.3f}",
                         help=f"The model card's operating threshold for {body_part}.")
        st.caption(f"Judged at the model card's threshold for {body_part}. Thresholds you set on the Performance "
                   "page apply here too.")
    else:
        threshold.metric("Threshold", f"{prediction.threshold:.3f}",
                         delta=f"{prediction.threshold - card_threshold:+.3f} vs the card's", delta_color="off",
                         help=f"The threshold you set for {body_part} on the Performance or Error analysis page.")
        st.caption(f"Judged at **your** threshold for {body_part} from the Performance page "
                   f"({prediction.threshold:.2f}; the model card's is {card_threshold:.2f}). Its Reset button "
                   "returns to the card's.")


def show_study_views(
    loaded: LoadedModel,
    images: list[tuple[str, np.ndarray]],
    *,
    method: str | None = DEFAULT_METHOD,
    layers: Sequence[str] | None = None,
    target: Target = "abnormal",
    study_type: str | None = None,
    no_verdict: str | None = None,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = DEFAULT_COLORMAP,
    heat_threshold: float | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    columns: int = 4,
    thresholds: Mapping[str, float] | None = None,
) -> StudyPrediction:
    """Show a study: its verdict, then each view with P(abnormal) and its CAM overlay.

    ``method=None`` shows the plain views (e.g. while a slow method awaits confirmation).
    ``no_verdict`` (one sentence) replaces the verdict for a study the model should not judge
    (unknown or untrained body part, not a radiograph): the probability stays, in small type.
    ``thresholds`` (the user's, from Performance) judge the study instead of the card's.
    Returns the study prediction so callers can reuse the probabilities.
    """
    probabilities = cached_probabilities(loaded, [pixels for _, pixels in images])
    prediction = study_verdict(loaded, probabilities, study_type, thresholds)
    if no_verdict is None:
        card_threshold = loaded.threshold_for(study_type)
        show_verdict(prediction, None if np.isclose(prediction.threshold, card_threshold) else card_threshold)
    else:
        st.warning(no_verdict, icon=":material/help:")
        st.caption(f"Study P(abnormal) = {prediction.probability:.3f}, shown for reference only.")
    grid = st.columns(max(1, columns))  # a fixed grid: every view at the same size, however many
    for index, ((name, pixels), probability) in enumerate(zip(images, probabilities, strict=True)):
        with grid[index % len(grid)]:
            caption = f"{name} · P(abnormal) = {probability:.3f}"
            if method is None:
                st.image(pixels, caption=caption, width="stretch")
                continue
            explanation = explanation_or_error(loaded, pixels, name, method=method, layers=layers, target=target,
                                               aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            if explanation is None:
                st.image(pixels, caption=caption, width="stretch")
                continue
            picture = overlay_with_boxes(pixels, explanation.heatmap, colormap=colormap, opacity=opacity,
                                         heat_threshold=heat_threshold)
            st.image(picture, caption=f"{caption} · {method} → {target}", width="stretch")
            if not explanation.heatmap.any():
                # A gradient CAM keeps only evidence *for* the target; none is an answer, not a bug.
                st.caption(f"Empty map: nothing in this view pushes the model towards {target}.")
    return prediction


def open_in_explain(study_ref: str) -> None:
    """Hand a study (official MURA study path or synthetic sample id) to the Explain page."""
    st.session_state[state.EXPLAIN_STUDY_KEY] = study_ref
    st.switch_page(navigation.page(navigation.EXPLAIN))
