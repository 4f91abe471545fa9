"""DICOM as hospitals and toolkits write it: every top-level .dcm file of the test corpus shipped in
the installed pydicom wheel through core.data.imaging, with the outcome each one must have. A
single-frame greyscale image with pixel data decodes (JPEG baseline/extended, JPEG-LS and JPEG 2000
through the pylibjpeg plugins, RLE and deflate through pydicom), and every other file is refused for
its true reason in one sentence (issue 25)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from core.data.imaging import RadiographDecodeError, load_radiograph
from tests.test_imaging import assert_one_sentence

CORPUS = Path(pydicom.data.__file__).parent / "test_files"

#: Outcome -> (the words the refusal must hold, or None for a decoded image; the files).
EXPECTED: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "decoded": (
        None,
        (
            "693_J2KI.dcm",
            "CT_small.dcm",
            "J2K_pixelrep_mismatch.dcm",
            "JPEG2000.dcm",
            "JPGExtended.dcm",
            "MR_small.dcm",
            "MR_small_RLE.dcm",
            "MR_small_bigendian.dcm",
            "MR_small_expb.dcm",
            "MR_small_implicit.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_padded.dcm",
            "examples_overlay.dcm",
            "image_dfl.dcm",
            "liver_1frame.dcm",
            "liver_expb_1frame.dcm",
        ),
    ),
    "colour": (
        "not greyscale",
        (
            "ExplVR_BigEnd.dcm",
            "GDCMJ2K_TextGBR.dcm",
            "SC_jpeg_no_color_transform.dcm",
            "SC_jpeg_no_color_transform_2.dcm",
            "SC_rgb_dcmtk_+eb+cr.dcm",
            "SC_rgb_dcmtk_+eb+cy+n1.dcm",
            "SC_rgb_dcmtk_+eb+cy+n2.dcm",
            "SC_rgb_dcmtk_+eb+cy+np.dcm",
            "SC_rgb_dcmtk_+eb+cy+s2.dcm",
            "SC_rgb_dcmtk_+eb+cy+s4.dcm",
            "SC_rgb_gdcm_KY.dcm",
            "SC_rgb_jls_lossy_line.dcm",
            "SC_rgb_jls_lossy_sample.dcm",
            "SC_rgb_jpeg.dcm",
            "SC_rgb_jpeg_app14_dcmd.dcm",
            "SC_rgb_jpeg_dcmd.dcm",
            "SC_rgb_jpeg_dcmtk.dcm",
            "SC_rgb_jpeg_gdcm.dcm",
            "SC_rgb_jpeg_lossy_gdcm.dcm",
            "SC_rgb_rle.dcm",
            "SC_rgb_rle_16bit.dcm",
            "SC_rgb_rle_16bit_2frame.dcm",
            "SC_rgb_rle_2frame.dcm",
            "SC_rgb_rle_32bit.dcm",
            "SC_rgb_rle_32bit_2frame.dcm",
            "SC_rgb_small_odd.dcm",
            "SC_rgb_small_odd_big_endian.dcm",
            "SC_rgb_small_odd_jpeg.dcm",
            "SC_ybr_full_422_uncompressed.dcm",
            "examples_jpeg2k.dcm",
            "examples_palette.dcm",
            "examples_rgb_color.dcm",
            "examples_ybr_color.dcm",
        ),
    ),
    # No 128-byte preamble and "DICM": raw datasets, not DICOM files as a PACS exports them.
    "no file header": (
        "not in a supported image format",
        ("ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "no_meta.dcm", "rtstruct.dcm"),
    ),
    # Its codestream's size field holds a sequence delimiter; pydicom cannot decode it either.
    "stream disagrees": ("its compressed image is", ("JPEG2000-embedded-sequence-delimiter.dcm",)),
    "too small": (
        "at least 32 pixels",
        (
            "JPEGLSNearLossless_08.dcm",
            "JPEGLSNearLossless_16.dcm",
            "rtdose_1frame.dcm",
            "rtdose_expb_1frame.dcm",
            "rtdose_rle_1frame.dcm",
        ),
    ),
    "no pixel data": (
        "no Pixel Data",
        (
            "UN_sequence.dcm",
            "empty_charset_LEI.dcm",
            "no_meta_group_length.dcm",
            "priv_SQ.dcm",
            "reportsi.dcm",
            "reportsi_with_empty_number_tags.dcm",
            "rtplan.dcm",
            "rtplan_truncated.dcm",
            "test-SR.dcm",
            "waveform_ecg.dcm",
        ),
    ),
    "no size": ("without its size or photometric interpretation", ("meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm")),
    "multi-frame": ("frames; only single-frame", ("rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm")),
    # JPEG-lossy.dcm's scan breaks the sequential-mode rules (libjpeg: "misplaced marker"), badVR.dcm has
    # an invalid value representation, MR_truncated.dcm ends inside its pixel data.
    "corrupt": ("truncated or corrupt", ("JPEG-lossy.dcm", "MR_truncated.dcm", "badVR.dcm")),
}
OUTCOMES = {name: (outcome, words) for outcome, (words, names) in EXPECTED.items() for name in names}


def test_every_corpus_file_has_an_expected_outcome() -> None:
    assert sorted(OUTCOMES) == sorted(path.name for path in CORPUS.glob("*.dcm"))


@pytest.mark.filterwarnings("ignore")  # pydicom warns about the corpus's deliberately odd files
@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_corpus_file(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="pydicom")
    outcome, words = OUTCOMES[name]
    try:
        radiograph = load_radiograph((CORPUS / name).read_bytes(), filename=name)
    except RadiographDecodeError as exc:
        assert outcome != "decoded", f"{name} was refused: {exc}"
        assert words in str(exc), (name, str(exc))
        assert_one_sentence(str(exc))
        return
    assert outcome == "decoded", f"{name} decoded but should be refused ({outcome})"
    assert radiograph.pixels.dtype == np.uint8 and radiograph.pixels.ndim == 2
    assert radiograph.pixels.std() > 0, f"{name} decoded to a flat image"
