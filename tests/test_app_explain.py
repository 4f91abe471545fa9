"""AppTest of the Explain page: uploads through the real file_uploader, samples, CAM controls,
slow-method confirmation, faithfulness, and a bad upload followed by a good one.

Runs on the scratch model (tests/conftest.py) and the project's synthetic samples only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.cam.explain import explain
from core.cam.overlay import threshold_mask
from core.data import mura
from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_images
from dashboard.uploads import safe_display_name
from tests.app_pages import assert_clean, start_app, study_probability

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

SAMPLES = Path(__file__).resolve().parent.parent / "data_samples" / "synthetic"
FRACTURE_VIEWS = [SAMPLES / "humerus_fracture" / "view1.png", SAMPLES / "humerus_fracture" / "view2.png"]
SMALL_LAYER = "stage 3 (32 ch, stride 8)"  # 32 channels: ScoreCAM needs 33 forward passes


def open_explain() -> AppTest:
    return start_app().switch_page("../pages/explain.py").run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def upload(at: AppTest, paths: list[Path]) -> AppTest:
    files = [(path.name, path.read_bytes(), "image/png") for path in paths]
    return at.file_uploader(key="explain_upload").set_value(files).run()


def expected_probabilities(weights: Path, paths: list[Path]) -> np.ndarray:
    loaded = load_model(DEFAULT_MODEL, directory=weights)
    return predict_images(loaded, [load_radiograph(p.read_bytes()).pixels for p in paths])


def overlay_urls(at: AppTest) -> list[str]:
    return [url for image in at.image if "→" in "".join(image.captions) for url in image.value]


def test_upload_of_a_study_gives_each_view_and_the_study_probability(use_scratch_weights: Path) -> None:
    """No body part is assumed for an upload: no verdict until the user names a trained one."""
    at = upload(open_explain(), FRACTURE_VIEWS)
    assert_clean(at)
    expected = expected_probabilities(use_scratch_weights, FRACTURE_VIEWS)
    assert at.selectbox(key="explain_body_part_upload").value == "unknown"
    assert not any(m.label == "Verdict" for m in at.metric)
    assert any(w.value.startswith("No verdict: the body part is unknown") for w in at.warning)
    assert study_probability(at) == f"{expected.mean():.3f}"
    captions = [caption for image in at.image for caption in image.captions]
    for path, probability in zip(FRACTURE_VIEWS, expected, strict=True):
        assert any(c.startswith(f"{path.name} · P(abnormal) = {probability:.3f}") for c in captions), captions
    assert len(overlay_urls(at)) >= len(FRACTURE_VIEWS)
    at.selectbox(key="explain_body_part_upload").set_value("XR_HUMERUS").run()
    assert_clean(at)
    threshold = load_model(DEFAULT_MODEL, directory=use_scratch_weights).threshold_for("XR_HUMERUS")
    assert metric(at, "Study P(abnormal)") == f"{expected.mean():.3f}"
    assert metric(at, "Verdict") == ("abnormal" if expected.mean() >= threshold else "normal")


def test_a_bad_file_gives_one_error_and_the_next_upload_still_works(use_scratch_weights: Path) -> None:
    at = open_explain()
    at.file_uploader(key="explain_upload").set_value(("notes.png", b"just some text\n", "image/png")).run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "`notes.png`: The file is plain text, not an image; upload a PNG, JPEG or DICOM radiograph."
    ]
    assert not at.metric
    at = upload(at, FRACTURE_VIEWS[:1])
    assert_clean(at)
    assert not at.error
    expected = expected_probabilities(use_scratch_weights, FRACTURE_VIEWS[:1])
    assert study_probability(at) == f"{expected[0]:.3f}"


def test_a_bad_file_among_good_views_is_refused_alone(use_scratch_weights: Path) -> None:
    at = open_explain()
    files = [
        (FRACTURE_VIEWS[0].name, FRACTURE_VIEWS[0].read_bytes(), "image/png"),
        ("../../etc/[x](y).png", FRACTURE_VIEWS[1].read_bytes()[:200], "image/png"),
    ]
    at.file_uploader(key="explain_upload").set_value(files).run()
    assert_clean(at)
    assert len(at.error) == 1
    assert at.error[0].value.startswith("`_x_(y).png`: ")
    assert "truncated or corrupt" in at.error[0].value
    expected = expected_probabilities(use_scratch_weights, FRACTURE_VIEWS[:1])
    assert study_probability(at) == f"{expected[0]:.3f}"


def test_a_colour_photo_gets_no_verdict(use_scratch_weights: Path) -> None:
    colours = np.random.default_rng(0).integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(colours).save(buffer, format="PNG")
    at = open_explain()
    at.file_uploader(key="explain_upload").set_value(("holiday.png", buffer.getvalue(), "image/png")).run()
    assert_clean(at)
    assert "`holiday.png` is a colour image, not a radiograph: the model reads X-rays only." in [
        w.value for w in at.warning
    ]
    assert not any(m.label == "Verdict" for m in at.metric)
    assert study_probability(at)


def test_switching_cam_method_changes_the_map(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    gradcam = overlay_urls(at)
    at.sidebar.selectbox(key="cam_method").set_value("EigenCAM").run()
    assert_clean(at)
    eigencam = overlay_urls(at)
    assert eigencam and set(eigencam).isdisjoint(gradcam)
    at.sidebar.selectbox(key="cam_method").set_value("GradCAM").run()
    assert overlay_urls(at) == gradcam  # deterministic, and served from the cache


def test_opacity_reblends_without_changing_the_prediction(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    before, probability = overlay_urls(at), study_probability(at)
    at.sidebar.slider(key="cam_opacity").set_value(0.8).run()
    assert_clean(at)
    assert set(overlay_urls(at)).isdisjoint(before)
    assert study_probability(at) == probability


def test_outlined_regions_are_the_ones_core_explain_finds(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    plain = overlay_urls(at)
    at.sidebar.toggle(key="cam_outline").set_value(True).run()
    at.sidebar.slider(key="cam_threshold").set_value(0.6).run()
    assert_clean(at)
    assert set(overlay_urls(at)).isdisjoint(plain)
    loaded = load_model(DEFAULT_MODEL, directory=use_scratch_weights)
    heatmap = explain(loaded, load_radiograph(FRACTURE_VIEWS[0].read_bytes()).pixels).heatmap
    _mask, boxes = threshold_mask(heatmap, 0.6)
    assert f"{len(boxes)} region(s) with heat ≥ 0.60, boxed in green." in [c.value for c in at.caption]


def test_sample_picker_and_body_part_warning(use_scratch_weights: Path) -> None:
    at = open_explain()
    at.radio(key="explain_source").set_value("Sample or MURA study").run()
    at.selectbox(key="explain_study_choice").set_value("synthetic/forearm_plate").run()
    assert_clean(at)
    body_part = at.selectbox(key="explain_body_part_synthetic/forearm_plate")
    assert body_part.value == "XR_FOREARM"
    assert not at.warning
    card_thresholds = load_model(DEFAULT_MODEL, directory=use_scratch_weights).card["thresholds"]
    assert metric(at, "Threshold") == f"{card_thresholds['XR_FOREARM']:.3f}"
    body_part.set_value("XR_HAND").run()
    assert [w.value for w in at.warning if w.value.startswith("No verdict") and "out of distribution" in w.value]
    assert not any(m.label in ("Threshold", "Verdict") for m in at.metric)


def test_slow_method_waits_for_confirmation_then_runs(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    at.sidebar.multiselect(key="cam_layers").set_value([SMALL_LAYER])
    at.sidebar.selectbox(key="cam_method").set_value("ScoreCAM").run()
    assert_clean(at)
    assert any("ScoreCAM is slow" in w.value for w in at.warning)
    assert not overlay_urls(at)
    at.button(key="explain_confirm_slow").click().run()
    assert_clean(at)
    assert overlay_urls(at)
    assert not any("ScoreCAM is slow" in w.value for w in at.warning)


def test_comparison_shows_one_panel_per_method_and_layer(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    at.multiselect(key="explain_compare_methods").set_value(["GradCAM", "LayerCAM"])
    at.multiselect(key="explain_compare_layers").set_value([SMALL_LAYER]).run()
    assert_clean(at)
    captions = [c for image in at.image for c in image.captions]
    layer = next(iter(load_model(DEFAULT_MODEL, directory=use_scratch_weights).cam_layers))
    assert f"GradCAM · {layer}" in captions
    assert f"LayerCAM · {layer}" in captions
    assert f"GradCAM · {SMALL_LAYER}" in captions


def test_faithfulness_on_request_and_downloads(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    assert not [m for m in at.metric if m.label == "Faithfulness (ROAD)"]
    assert {b.label for b in at.get("download_button")} == {
        "Labelled figure (.png)",
        "Overlay (.png)",
        "Raw heat map (.npy)",
    }
    at.button(key="explain_faithfulness").click().run()
    assert_clean(at)
    assert -1.0 <= float(metric(at, "Faithfulness (ROAD)")) <= 1.0


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\x-ray (1).png", "x-ray (1).png"),
        ("[click](javascript:alert(1)).png", "_click_(javascript_alert(1)).png"),
        ("a\udcff\x00b.dcm", "a__b.dcm"),
        ("", "unnamed file"),
    ],
)
def test_upload_names_are_shown_only_after_sanitising(raw: str, shown: str) -> None:
    assert safe_display_name(raw) == shown


def test_an_empty_map_is_explained_not_shown_as_a_blank(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from dashboard import views

    def no_evidence(*args, **kwargs):  # what GradCAM returns when no region supports the target
        result = explain(*args, **kwargs)
        return replace(result, heatmap=np.zeros_like(result.heatmap))

    monkeypatch.setattr(views, "explain", no_evidence)
    pixels = np.random.default_rng(99).integers(0, 255, size=(90, 70), dtype=np.uint8)  # unseen: no cache hit
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    empty_png = ("empty.png", buffer.getvalue(), "image/png")
    at = open_explain().file_uploader(key="explain_upload").set_value(empty_png).run()
    assert_clean(at)
    assert any("Empty map" in caption.value for caption in at.caption)


def _open_forearm_sample(at: AppTest) -> AppTest:
    at.switch_page("../pages/explain.py").run()
    at.radio(key="explain_source").set_value("Sample or MURA study").run()
    at.selectbox(key="explain_study_choice").set_value("synthetic/forearm_plate").run()
    assert_clean(at)
    return at


def test_the_verdict_follows_the_threshold_set_on_performance(use_scratch_weights: Path) -> None:
    at = start_app().switch_page("../pages/performance.py").run()
    at.slider(key=f"performance:threshold:{DEFAULT_MODEL}:XR_FOREARM").set_value(0.9).run()
    _open_forearm_sample(at)
    assert metric(at, "Threshold") == "0.900"
    assert any("**your** threshold for forearm" in c.value for c in at.caption)
    at.switch_page("../pages/performance.py").run()
    next(button for button in at.button if button.label.startswith("Reset")).click().run()
    _open_forearm_sample(at)
    card_thresholds = load_model(DEFAULT_MODEL, directory=use_scratch_weights).card["thresholds"]
    assert metric(at, "Threshold") == f"{card_thresholds['XR_FOREARM']:.3f}"
    assert any("the model card's threshold for forearm" in c.value for c in at.caption)


def _mura_study(at: AppTest, root: Path) -> AppTest:
    return at.sidebar.text_input(key="mura_root_input").set_value(str(root)).run()


def test_every_study_of_the_folder_is_offered_and_the_view_picker_follows_the_study(
    use_scratch_weights: Path,
    scratch_mura_root: Path,
) -> None:
    at = _mura_study(open_explain(), scratch_mura_root)
    at.radio(key="explain_source").set_value("Sample or MURA study").run()
    choices = at.selectbox(key="explain_study_choice").options
    images = pd.concat([mura.read_images(scratch_mura_root, split) for split in ("valid", "train")])
    titles = {f"{s.study_type} {s.patient} {s.study} ({s.split})" for s in images.itertuples()}
    assert titles <= set(choices)
    at.selectbox(key="explain_study_choice").set_value("synthetic/humerus_fracture").run()
    (picker,) = [box for box in at.selectbox if box.label == "View"]
    picker.set_value(1).run()
    counts = images.groupby("study_path").size()
    study = counts[counts >= 2].index[0]
    at.selectbox(key="explain_study_choice").set_value(study).run()
    assert_clean(at)
    (picker,) = [box for box in at.selectbox if box.label == "View"]
    names = images.loc[images["study_path"] == study, "path"].str.rsplit("/", n=1).str[1].tolist()
    assert picker.options == names
    assert picker.value == 0
    assert f"{names[0]} (as decoded)" in [c for image in at.image for c in image.captions]


def test_layer_chips_are_short_and_the_help_names_each_layer_in_full(use_scratch_weights: Path) -> None:
    at = open_explain()
    layers = at.sidebar.multiselect(key="cam_layers")
    full = list(load_model(DEFAULT_MODEL, directory=use_scratch_weights).cam_layers)
    assert layers.options == [name.split(" (")[0] for name in full]
    assert max(len(option) for option in layers.options) <= 12  # "stage 6 (160 ch, stride 32)" was cut off
    assert all(name in layers.help for name in full)
