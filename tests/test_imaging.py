"""core.data.imaging: every accepted format, every refusal, and the promises behind them.

Inputs are tiny synthetic images from tests.bad_inputs; a few real MURA PNGs run when present.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFile
from pydicom.pixels import get_decoder

from core.data.imaging import MAX_PIXELS, Radiograph, RadiographDecodeError, load_radiograph
from tests import bad_inputs
from tests.bad_inputs import (
    NO_CODEC_TRANSFER_SYNTAX,
    BadInput,
    corpus,
    crafted_png,
    encode_dicom,
    encode_image,
    phantom,
)

CORPUS = corpus()
ACCEPTED = [item for item in CORPUS if item.expect == "accept"]
ITEMS = {item.name: item for item in CORPUS}


def assert_one_sentence(message: str) -> None:
    """A user-facing sentence: one line, one full stop at the end, nothing from a traceback."""
    assert message and message == message.strip() and "\n" not in message
    assert message.endswith(".")
    assert len(re.findall(r"[.!?](?=\s|$)", message)) == 1, message
    assert "Traceback" not in message and 'File "' not in message and "Error" not in message


def decode(item: BadInput) -> Radiograph:
    return load_radiograph(item.data, filename=item.filename)


def grey_u8(side: int = 64) -> np.ndarray:
    return np.rint(phantom(side) * 255).astype(np.uint8)


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_corpus_item_is_accepted_or_refused_cleanly(item: BadInput) -> None:
    if item.name == "dicom_jpegls_no_codec" and get_decoder(NO_CODEC_TRANSFER_SYNTAX).is_available:
        pytest.skip("a JPEG-LS decoder is installed here, so this file is decodable")
    if item.expect == "refuse":
        with pytest.raises(RadiographDecodeError) as caught:
            decode(item)
        assert type(caught.value) is RadiographDecodeError
        assert_one_sentence(str(caught.value))
        return
    radiograph = decode(item)
    assert radiograph.pixels.dtype == np.uint8 and radiograph.pixels.ndim == 2
    assert radiograph.pixels.flags.c_contiguous and radiograph.pixels.flags.writeable
    assert (radiograph.height, radiograph.width) == radiograph.pixels.shape
    assert radiograph.source_format in {"PNG", "JPEG", "DICOM", "TIFF", "GIF", "BMP", "WEBP"}
    assert radiograph.bit_depth in (8, 16)
    assert radiograph.pixels.std() > 0, "a phantom decoded to a flat image"


def test_corpus_is_deterministic() -> None:
    rebuilt = bad_inputs._build_corpus.__wrapped__()
    assert [(item.name, item.data) for item in rebuilt] == [(item.name, item.data) for item in CORPUS]
    assert len({item.name for item in CORPUS}) == len(CORPUS)


def test_refusals_say_what_is_wrong() -> None:
    """Spot checks that each refusal names its cause, not just 'could not decode'."""
    expected_words = {
        "empty": "empty",
        "text_renamed_png": "plain text",
        "html_page": "HTML",
        "heic_photo": "HEIC",
        "zip_archive": "ZIP",
        "truncated_png": "truncated or corrupt",
        "truncated_jpeg": "truncated or corrupt",
        "png_bomb_header_100000x100000": "limit",
        "png_20000x20000": "limit of 40,000,000 pixels",
        "png_8000x6000_over_app_cap": "8000 x 6000",
        "png_1x1": "at least 32 pixels",
        "dicom_rgb": "not greyscale",
        "dicom_multiframe": "3 frames",
        "dicom_without_pixel_data": "no image",
    }
    for name, words in expected_words.items():
        with pytest.raises(RadiographDecodeError, match=re.escape(words)):
            decode(ITEMS[name])


def test_compressed_dicom_without_codec_names_the_codec() -> None:
    if get_decoder(NO_CODEC_TRANSFER_SYNTAX).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(RadiographDecodeError, match="JPEG-LS .* no decoder for it is installed"):
        decode(ITEMS["dicom_jpegls_no_codec"])


def test_format_comes_from_bytes_not_from_the_extension() -> None:
    radiograph = decode(ITEMS["jpeg_named_png"])
    assert radiograph.source_format == "JPEG"
    assert any(".png" in note and "JPEG" in note for note in radiograph.notes)
    assert decode(ITEMS["jpeg_grey"]).notes == ()


def test_dicom_zip_polyglot_decodes_as_dicom() -> None:
    data = ITEMS["dicom_zip_polyglot"].data
    assert data.startswith(b"PK\x03\x04") and zipfile.is_zipfile(io.BytesIO(data))  # really both
    polyglot = decode(ITEMS["dicom_zip_polyglot"])
    plain = decode(ITEMS["dicom_monochrome2_12bit"])
    assert polyglot.source_format == "DICOM"
    np.testing.assert_array_equal(polyglot.pixels, plain.pixels)


def test_animated_gif_gives_first_frame_with_a_note() -> None:
    radiograph = decode(ITEMS["gif_animated"])
    first_frame = np.asarray(Image.fromarray(grey_u8()).convert("P").convert("L"))
    np.testing.assert_array_equal(radiograph.pixels, first_frame)
    assert any("only the first is used" in note for note in radiograph.notes)


# --- accepted formats: pixel values ------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_8bit_grey_is_returned_unchanged(image_format: str) -> None:
    pixels = grey_u8()
    params = {"lossless": True} if image_format == "WEBP" else {}
    radiograph = load_radiograph(encode_image(Image.fromarray(pixels), image_format, **params))
    np.testing.assert_array_equal(radiograph.pixels, pixels)
    assert radiograph.bit_depth == 8 and radiograph.notes == ()


def test_rgba_and_palette_and_la_give_the_grey_values() -> None:
    pixels = grey_u8()
    for name in ("png_la", "png_rgba_transparent_corner", "png_rgb_identical_channels", "png_palette"):
        radiograph = decode(ITEMS[name])
        np.testing.assert_array_equal(radiograph.pixels, pixels, err_msg=name)
        assert radiograph.looks_like_radiograph, name
    assert "transparency ignored" in decode(ITEMS["png_rgba_transparent_corner"]).notes


def test_cmyk_jpeg_is_converted_like_pillow_does() -> None:
    data = ITEMS["jpeg_cmyk"].data
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").convert("L"))
    np.testing.assert_array_equal(decode(ITEMS["jpeg_cmyk"]).pixels, expected)


def test_16bit_window_keeps_contrast_despite_hot_pixels() -> None:
    """A ramp 1000..1255 with a few saturated pixels: truncation or min-max would flatten it."""
    ramp = np.tile(np.arange(1000, 1256, dtype=np.uint16), (64, 1))  # 64 x 256, 256 levels
    ramp[0, :5] = 65535
    radiograph = load_radiograph(encode_image(Image.fromarray(ramp), "PNG"))
    row = radiograph.pixels[32].astype(int)
    assert radiograph.bit_depth == 16
    assert np.all(np.diff(row) >= 0), "the window must be monotonic"
    assert len(np.unique(row)) > 200, "most of the 256 input levels must stay distinct"
    assert row[0] <= 5 and row[-1] >= 250, "the ramp must span (almost) the whole 8-bit range"


def test_constant_16bit_image_decodes_without_dividing_by_zero() -> None:
    flat = np.full((40, 40), 4000, dtype=np.uint16)
    radiograph = load_radiograph(encode_image(Image.fromarray(flat), "PNG"))
    assert radiograph.pixels.shape == (40, 40) and len(np.unique(radiograph.pixels)) == 1


@pytest.mark.parametrize(
    ("orientation", "upright"),
    [
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),
        (8, lambda a: np.rot90(a, 1)),
        (2, np.fliplr),
    ],
)
def test_exif_orientation_is_applied(orientation: int, upright) -> None:
    pixels = grey_u8(96)[:, :48]  # non-square and asymmetric: every transform is visible
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    data = encode_image(Image.fromarray(pixels), "JPEG", quality=95, exif=exif)
    as_stored = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    radiograph = load_radiograph(data)
    np.testing.assert_array_equal(radiograph.pixels, upright(as_stored))
    assert (radiograph.height, radiograph.width) == upright(as_stored).shape
    assert f"EXIF orientation {orientation} applied" in radiograph.notes


def test_colour_photo_is_accepted_but_flagged() -> None:
    radiograph = decode(ITEMS["jpeg_colour_photo"])
    assert not radiograph.looks_like_radiograph
    expected = np.asarray(Image.open(io.BytesIO(ITEMS["jpeg_colour_photo"].data)).convert("L"))
    np.testing.assert_array_equal(radiograph.pixels, expected)


def test_grey_saved_as_colour_jpeg_is_not_flagged() -> None:
    """Chroma subsampling and quantisation add small colour noise; it must not count as colour."""
    rgb_jpeg = encode_image(Image.fromarray(grey_u8()).convert("RGB"), "JPEG", quality=75)
    assert load_radiograph(rgb_jpeg).looks_like_radiograph


def test_thin_coloured_annotation_does_not_flag_a_radiograph() -> None:
    rgb = np.repeat(grey_u8()[:, :, None], 3, axis=2)
    rgb[10, :, :] = (255, 0, 0)  # a red measurement line: 1.6 % of the pixels
    assert load_radiograph(encode_image(Image.fromarray(rgb), "PNG")).looks_like_radiograph


# --- DICOM -----------------------------------------------------------------------------------


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    stored = (phantom() * 4095).astype(np.uint16)
    mono2 = load_radiograph(encode_dicom(stored, "MONOCHROME2", 12))
    mono1 = load_radiograph(encode_dicom(stored, "MONOCHROME1", 12))
    np.testing.assert_array_equal(mono1.pixels, 255 - mono2.pixels)
    brightest_stored = np.unravel_index(np.argmax(stored), stored.shape)
    assert mono1.pixels[brightest_stored] == mono1.pixels.min(), "highest MONOCHROME1 value is black"
    assert "MONOCHROME1 inverted" in mono1.notes and "MONOCHROME1 inverted" not in mono2.notes


def test_dicom_window_is_applied_after_rescale() -> None:
    """Window 900..1100 in rescaled units (2 * stored - 1000) covers stored values 950..1050."""
    stored = np.tile(np.linspace(800, 1200, 64).astype(np.uint16), (64, 1))
    data = encode_dicom(
        stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000, WindowWidth=200
    )
    row = load_radiograph(data).pixels[0]
    assert np.all(row[stored[0] <= 940] == 0)
    assert np.all(row[stored[0] >= 1060] == 255)
    middle = row[(stored[0] > 960) & (stored[0] < 1040)]
    assert 0 < middle.min() and middle.max() < 255 and np.all(np.diff(middle.astype(int)) >= 0)


def test_invalid_dicom_window_falls_back_to_percentiles() -> None:
    stored = (phantom() * 4095).astype(np.uint16)
    radiograph = load_radiograph(encode_dicom(stored, bits_stored=12, WindowCenter=2000, WindowWidth=0))
    assert any("window invalid" in note for note in radiograph.notes)
    np.testing.assert_array_equal(radiograph.pixels, load_radiograph(encode_dicom(stored, bits_stored=12)).pixels)


def test_8bit_dicom_is_returned_unchanged() -> None:
    pixels = grey_u8()
    radiograph = load_radiograph(encode_dicom(pixels))
    np.testing.assert_array_equal(radiograph.pixels, pixels)
    assert radiograph.bit_depth == 8 and radiograph.notes == ()


# --- size limits -----------------------------------------------------------------------------


def test_caller_limits_apply_to_the_declared_size() -> None:
    data = ITEMS["png_8bit_grey"].data
    with pytest.raises(RadiographDecodeError, match="64 x 64 pixels, larger than the limit of 1,000"):
        load_radiograph(data, max_pixels=1000)
    with pytest.raises(RadiographDecodeError, match="at least 100 pixels"):
        load_radiograph(data, min_side=100)
    assert load_radiograph(data, max_pixels=64 * 64, min_side=64).pixels.shape == (64, 64)


def test_size_pillow_only_warns_about_is_refused() -> None:
    """10000 x 10000 is above Pillow's warning threshold but below its error: still refused."""
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 <= 2 * Image.MAX_IMAGE_PIXELS
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(RadiographDecodeError, match="limit"):
        load_radiograph(crafted_png(10_000, 10_000), max_pixels=10**12)


def test_warnings_promoted_to_errors_by_the_process_still_give_a_decode_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RadiographDecodeError, match="limit"):
            load_radiograph(crafted_png(10_000, 10_000), max_pixels=10**12)


def test_default_cap_is_the_documented_one() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(RadiographDecodeError, match=f"{side} x {side} pixels"):
        load_radiograph(crafted_png(side, side))


# --- sources, names, state --------------------------------------------------------------------


def test_paths_are_read_and_named(tmp_path: Path) -> None:
    item = ITEMS["jpeg_grey"]
    file = tmp_path / "mislabelled.png"
    file.write_bytes(item.data)
    from_bytes = decode(item)
    for source in (file, str(file)):
        from_path = load_radiograph(source)
        np.testing.assert_array_equal(from_path.pixels, from_bytes.pixels)
        assert any("named .png" in note for note in from_path.notes)  # the path's name is the label


@pytest.mark.parametrize("make_source", [lambda tmp: tmp / "missing.png", lambda tmp: tmp])
def test_unreadable_paths_are_refused(tmp_path: Path, make_source) -> None:
    with pytest.raises(RadiographDecodeError) as caught:
        load_radiograph(make_source(tmp_path))
    assert_one_sentence(str(caught.value))


def test_file_name_is_never_opened(tmp_path: Path) -> None:
    """If the decoder opened ``filename``, it would find a valid PNG there and accept the text."""
    decoy = tmp_path / "decoy.png"
    decoy.write_bytes(ITEMS["png_8bit_grey"].data)
    with pytest.raises(RadiographDecodeError, match="plain text"):
        load_radiograph(b"just some text\n", filename=str(decoy))


def test_no_global_state_is_changed() -> None:
    before = (
        list(warnings.filters),
        Image.MAX_IMAGE_PIXELS,
        ImageFile.LOAD_TRUNCATED_IMAGES,
        pydicom.config.settings.reading_validation_mode,
    )
    for item in CORPUS:
        try:
            decode(item)
        except RadiographDecodeError:
            pass
    after = (
        list(warnings.filters),
        Image.MAX_IMAGE_PIXELS,
        ImageFile.LOAD_TRUNCATED_IMAGES,
        pydicom.config.settings.reading_validation_mode,
    )
    assert after == before


def _outcome(item: BadInput) -> tuple[str, object]:
    try:
        radiograph = decode(item)
    except RadiographDecodeError as error:
        return "refused", str(error)
    return "accepted", (
        radiograph.pixels.tobytes(),
        radiograph.width,
        radiograph.height,
        radiograph.source_format,
        radiograph.looks_like_radiograph,
        radiograph.notes,
    )


def test_concurrent_decoding_matches_serial() -> None:
    work = CORPUS * 3
    serial = [_outcome(item) for item in work]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(_outcome, work))
    assert concurrent == serial


# --- fuzzing -----------------------------------------------------------------------------------

FUZZ_SEEDS = [
    ITEMS[name].data
    for name in ("png_8bit_grey", "png_16bit_values_above_255", "jpeg_grey", "dicom_monochrome1", "dicom_rle_lossless")
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid PNG/JPEG/DICOM with a few bytes overwritten, inserted or deleted, maybe truncated."""
    data = bytearray(draw(st.sampled_from(FUZZ_SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["overwrite", "insert", "delete"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "overwrite":
            data[position : position + len(chunk)] = chunk
        elif action == "insert":
            data[position:position] = chunk
        else:
            del data[position : position + len(chunk)]
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@pytest.mark.filterwarnings("ignore")  # Pillow and pydicom warn loudly about broken files; that is fine
@settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=mutated_images())
def test_mutated_files_only_ever_decode_or_refuse(data: bytes) -> None:
    try:
        # A small cap keeps every example fast when a mutation enlarges the declared size.
        radiograph = load_radiograph(data, filename="fuzz.png", max_pixels=2**20)
    except RadiographDecodeError as error:
        assert_one_sentence(str(error))
        return
    assert radiograph.pixels.dtype == np.uint8 and radiograph.pixels.ndim == 2


# --- real radiographs ---------------------------------------------------------------------------


@pytest.mark.mura
def test_real_mura_pngs_decode_exactly_as_pillow_reads_them(mura_root: Path) -> None:
    files = sorted((mura_root / "valid" / "XR_HUMERUS").rglob("*.png"))[:3]
    files += sorted((mura_root / "train" / "XR_FOREARM").rglob("*.png"))[:2]
    assert files, f"no PNGs under {mura_root}"
    for file in files:
        expected = np.asarray(Image.open(file).convert("L"))
        for radiograph in (load_radiograph(file), load_radiograph(file.read_bytes(), filename=file.name)):
            np.testing.assert_array_equal(radiograph.pixels, expected, err_msg=str(file))
            assert radiograph.source_format == "PNG" and radiograph.looks_like_radiograph
            assert radiograph.bit_depth == 8 and radiograph.notes == ()
