"""What the server holds on to per upload: display-sized decodes and heat maps, and capped studies.

The decode and CAM caches are shared by every session, so their entries are kept to the
display size (core.data.imaging.DISPLAY_MAX_SIDE) whatever was uploaded, and one study's uploads
are capped in views and in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.data.imaging import DISPLAY_MAX_SIDE, downsized, load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from dashboard import uploads, views
from tests.app_pages import assert_clean
from tests.synthetic import png_bytes, synthetic_radiograph
from tests.test_app_explain import open_explain


@dataclass(frozen=True)
class StubUpload:
    """What read_uploads uses of Streamlit's UploadedFile."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


def large_png(width: int = 2400, height: int = 1800) -> bytes:
    pixels = synthetic_radiograph(0, size=max(width, height))[:height, :width]
    return png_bytes(np.ascontiguousarray(pixels))


def test_downsized_shrinks_the_longer_side_and_says_so() -> None:
    original = load_radiograph(large_png())
    small = downsized(original)
    assert (small.width, small.height) == (DISPLAY_MAX_SIDE, 768) == small.pixels.shape[::-1]
    assert small.notes[-1] == f"downsized from 2400 x 1800 to {DISPLAY_MAX_SIDE} x 768 pixels"
    assert abs(float(small.pixels.mean()) - float(original.pixels.mean())) < 1.0
    assert downsized(small) is small, "an image already within the size is kept as it is"


def test_an_upload_and_its_heat_map_are_cached_display_sized(use_scratch_weights: Path) -> None:
    radiograph = uploads.decode_upload(large_png(), "big.png")
    assert max(radiograph.pixels.shape) == DISPLAY_MAX_SIDE
    loaded = load_model(DEFAULT_MODEL, directory=use_scratch_weights)
    explanation = views.cached_explanation(loaded, radiograph.pixels)
    assert explanation.heatmap.shape == radiograph.pixels.shape
    assert explanation.heatmap.nbytes <= 4 * DISPLAY_MAX_SIDE**2


def test_explain_says_a_large_upload_was_downsized(use_scratch_weights: Path) -> None:
    at = open_explain()
    at.file_uploader(key="explain_upload").set_value(("big.png", large_png(), "image/png")).run()
    assert_clean(at)
    assert any("downsized from 2400 x 1800" in caption.value for caption in at.caption)


def test_views_beyond_the_study_byte_cap_are_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_STUDY_MB", 1)
    view = png_bytes(synthetic_radiograph(1, size=64))
    filler = b"\x89PNG\r\n\x1a\n" + bytes(700_000)  # counts against the cap before it is decoded
    accepted, refused = uploads.read_uploads(
        [StubUpload("a.png", view), StubUpload("b.png", filler), StubUpload("c.png", filler), StubUpload("d.png", view)]
    )
    assert [v.name for v in accepted] == ["a.png", "d.png"]
    reasons = {r.name: r.reason for r in refused}
    assert reasons["c.png"] == ("The views of one study may total 1 MB; this one goes beyond and was skipped.")
    assert "b.png" in reasons and "c.png" in reasons
