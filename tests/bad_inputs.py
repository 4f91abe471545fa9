"""A generated corpus of bad and odd uploads, each with the outcome a safe decoder must give.

Everything is built in memory from tiny synthetic images (nothing is downloaded, no MURA pixel
is used), in well under a second, so the imaging, CLI and dashboard-uploader tests can all
parametrise over the same files::

    from tests.bad_inputs import corpus

    @pytest.mark.parametrize("item", corpus(), ids=lambda item: item.name)
    def test_upload(item): ...

"accept" means: decodes to a 2-D uint8 radiograph. "refuse" means: a clear one-sentence error.
The builders (``encode_image``, ``encode_dicom``, ``crafted_png``) are public so tests can make
variants with known pixel values.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
from PIL import ExifTags, Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

__all__ = [
    "BadInput",
    "corpus",
    "phantom",
    "encode_image",
    "encode_dicom",
    "crafted_png",
    "NO_CODEC_TRANSFER_SYNTAX",
]

SIDE = 64  # every decodable image is tiny: the corpus is about structure, not size

NO_CODEC_TRANSFER_SYNTAX = JPEGLSLossless
"""Compressed DICOM with no decoder installed here (pydicom needs gdcm, pylibjpeg or pyjpegls).

Not JPEG 2000: Pillow ships OpenJPEG and pydicom uses it, so JPEG 2000 DICOM *is* decodable here.
"""


@dataclass(frozen=True)
class BadInput:
    """One upload: a name for test ids, the user's file name (a label only), bytes, and the verdict."""

    name: str
    filename: str
    data: bytes
    expect: Literal["accept", "refuse"]


def corpus() -> list[BadInput]:
    """Every case, freshly listed (the items are frozen and built once per process)."""
    return list(_build_corpus())


def phantom(side: int = SIDE) -> np.ndarray:
    """A radiograph-like float image in [0, 1]: dark background, a bright 'bone' band, a gradient.

    Asymmetric on purpose, so rotations and flips are visible in tests.
    """
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) / (side - 1)
    bone = np.exp(-(((x - 0.35) / 0.12) ** 2)) * (0.3 + 0.7 * y)
    return np.clip(0.1 + 0.8 * bone + 0.1 * x * (1 - y), 0.0, 1.0)


def encode_image(image: Image.Image, image_format: str, **params: Any) -> bytes:
    """Save a Pillow image to bytes in the given format."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def encode_dicom(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    *,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    frames: list[bytes] | None = None,
    **elements: Any,
) -> bytes:
    """A minimal DX "for presentation" DICOM Part 10 file around ``pixels``.

    ``frames`` replaces the pixel data by encapsulated (compressed) frames, with ``transfer_syntax``;
    ``elements`` are extra keywords (e.g. ``WindowCenter=1000``). UIDs are derived from the
    content, so the same call gives the same bytes.
    """
    return _part10_bytes(_dicom_dataset(pixels, photometric, bits_stored, transfer_syntax, frames, elements))


def crafted_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (correct CRCs) but carries only its first row.

    Decoding it fully would need width x height bytes; a safe decoder refuses from the header,
    so the missing rows are never reached. Making a real one this size would take seconds.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    first_row = zlib.compress(bytes(width + 1))  # filter byte + one row of black
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", first_row) + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@cache
def _build_corpus() -> tuple[BadInput, ...]:
    grey = Image.fromarray(np.rint(phantom() * 255).astype(np.uint8))
    png = encode_image(grey, "PNG")
    jpeg = encode_image(grey, "JPEG", quality=90)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE), dtype=np.uint8))
    noisy_png, noisy_jpeg = encode_image(noise, "PNG"), encode_image(noise, "JPEG", quality=90)
    wide_16bit = (300 + phantom() * 60_000).astype(np.uint16)  # values far above 255
    dicom_12bit = (phantom() * 4095).astype(np.uint16)

    png_bad_crc = bytearray(png)
    png_bad_crc[29] ^= 0xFF  # first byte of the IHDR CRC (8 signature + 8 chunk head + 13 payload)

    polyglot_zip = io.BytesIO()
    with zipfile.ZipFile(polyglot_zip, "w") as archive:
        # A fixed timestamp: writestr with a bare name stamps the current minute, so two builds differ.
        member = zipfile.ZipInfo("readme.txt", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(member, "This DICOM file is also a ZIP archive.")
    animated = [Image.fromarray(np.rint(phantom() * 255 * k).astype(np.uint8)) for k in (1.0, 0.5, 0.25)]
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    colour = np.stack([phantom(), 1 - phantom(), np.full((SIDE, SIDE), 0.2)], axis=2)
    j2k_frame = encode_image(grey, "JPEG2000", no_jp2=True, irreversible=False)
    non_utf8 = b"r\xe9sultat-\xff.png".decode("utf-8", "surrogateescape")

    accept: dict[str, tuple[str, bytes]] = {
        "png_8bit_grey": ("radiograph.png", png),
        "png_16bit_values_above_255": ("sixteen.png", encode_image(Image.fromarray(wide_16bit), "PNG")),
        "png_la": ("la.png", encode_image(grey.convert("LA"), "PNG")),
        "png_rgba_transparent_corner": ("rgba.png", encode_image(_with_transparent_corner(grey), "PNG")),
        "png_palette": ("palette.png", encode_image(grey.convert("P"), "PNG")),
        "png_rgb_identical_channels": ("grey-as-rgb.png", encode_image(grey.convert("RGB"), "PNG")),
        "jpeg_grey": ("radiograph.jpg", jpeg),
        "jpeg_cmyk": ("cmyk.jpg", encode_image(grey.convert("CMYK"), "JPEG", quality=90)),
        "jpeg_exif_orientation_6": ("rotated.jpg", encode_image(grey, "JPEG", quality=90, exif=exif)),
        "jpeg_colour_photo": (
            "holiday.jpg",
            encode_image(Image.fromarray(np.rint(colour * 255).astype(np.uint8)), "JPEG"),
        ),
        "jpeg_named_png": ("actually-a-jpeg.png", jpeg),
        "gif_animated": (
            "cine.gif",
            encode_image(animated[0], "GIF", save_all=True, append_images=animated[1:], duration=100, loop=0),
        ),
        "tiff_16bit": ("scan.tif", encode_image(Image.fromarray(wide_16bit), "TIFF")),
        "bmp": ("scan.bmp", encode_image(grey, "BMP")),
        "webp_lossless": ("scan.webp", encode_image(grey.convert("RGB"), "WEBP", lossless=True)),
        "dicom_monochrome2_12bit": ("image.dcm", encode_dicom(dicom_12bit, bits_stored=12)),
        "dicom_monochrome1": ("IM0001", encode_dicom(dicom_12bit, "MONOCHROME1", 12)),
        "dicom_rle_lossless": ("rle.dcm", encode_dicom(dicom_12bit, bits_stored=12, transfer_syntax=RLELossless)),
        "dicom_jpeg2000_lossless": (
            "j2k.dcm",
            encode_dicom(np.asarray(grey), transfer_syntax=JPEG2000Lossless, frames=[j2k_frame]),
        ),
        "dicom_zip_polyglot": ("polyglot.dcm", _dicom_zip_polyglot(dicom_12bit, polyglot_zip.getvalue())),
        "non_utf8_name": (non_utf8, png),
        "path_like_name": ("../../etc/passwd.png", png),
        "absolute_path_name": ("/etc/passwd", png),
    }
    refuse: dict[str, tuple[str, bytes]] = {
        "empty": ("empty.png", b""),
        "text_renamed_png": ("notes.png", b"Patient notes: left humerus, see attached.\n"),
        "html_page": ("upload.png", b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n"),
        "heic_photo": ("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)),
        "pdf_document": ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n"),
        "zip_archive": ("study.zip", polyglot_zip.getvalue()),
        "random_bytes": ("scan.dcm", np.random.default_rng(1).bytes(2048)),
        "truncated_png": ("cut.png", noisy_png[: len(noisy_png) // 2]),
        "truncated_jpeg": ("cut.jpg", noisy_jpeg[: len(noisy_jpeg) // 2]),
        "png_bad_ihdr_crc": ("crc.png", bytes(png_bad_crc)),
        "png_bomb_header_100000x100000": ("bomb.png", crafted_png(100_000, 100_000)),
        "png_20000x20000": ("huge.png", crafted_png(20_000, 20_000)),
        "png_8000x6000_over_app_cap": ("big.png", crafted_png(8_000, 6_000)),
        "png_1x1": ("dot.png", encode_image(Image.new("L", (1, 1), 128), "PNG")),
        "png_16x512_too_thin": ("strip.png", encode_image(Image.new("L", (16, 512), 128), "PNG")),
        "dicom_rgb": ("colour.dcm", encode_dicom(np.rint(colour * 255).astype(np.uint8), "RGB")),
        "dicom_multiframe": ("cine.dcm", encode_dicom(np.stack([dicom_12bit] * 3), bits_stored=12)),
        "dicom_jpegls_no_codec": (
            "jpegls.dcm",
            encode_dicom(
                dicom_12bit,
                bits_stored=12,
                transfer_syntax=NO_CODEC_TRANSFER_SYNTAX,
                frames=[b"\xff\xd8\xff\xf7" + bytes(64)],
            ),
        ),
        "dicom_truncated_pixel_data": ("cut.dcm", encode_dicom(dicom_12bit, bits_stored=12)[:-1000]),
        "dicom_without_pixel_data": ("report.dcm", _dicom_without_pixel_data()),
        "non_utf8_name_text": (non_utf8, b"not an image\n"),
    }
    return tuple(
        [BadInput(name, filename, data, "accept") for name, (filename, data) in accept.items()]
        + [BadInput(name, filename, data, "refuse") for name, (filename, data) in refuse.items()]
    )


def _with_transparent_corner(grey: Image.Image) -> Image.Image:
    rgba = grey.convert("RGBA")
    alpha = np.full((SIDE, SIDE), 255, dtype=np.uint8)
    alpha[:8, :8] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _dicom_dataset(
    pixels: np.ndarray,
    photometric: str,
    bits_stored: int | None,
    transfer_syntax: UID,
    frames: list[bytes] | None,
    elements: dict[str, Any],
) -> Dataset:
    dataset = _dicom_header(
        DigitalXRayImageStorageForPresentation,
        "DX",
        entropy=[pixels.tobytes(), photometric, str(sorted(elements.items()))],
    )
    dataset.set_pixel_data(
        pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, generate_instance_uid=False
    )  # keep the content-derived UID: same bytes each run
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    if frames is not None:
        dataset.file_meta.TransferSyntaxUID = transfer_syntax
        dataset.PixelData = encapsulate(frames)
    elif transfer_syntax != ExplicitVRLittleEndian:
        dataset.compress(transfer_syntax, generate_instance_uid=False)
    return dataset


def _dicom_header(sop_class: str, modality: str, entropy: list[Any]) -> Dataset:
    uid = generate_uid(entropy_srcs=[str(item) for item in entropy])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = uid
    dataset.Modality = modality
    return dataset


def _part10_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dicom_zip_polyglot(pixels: np.ndarray, archive: bytes) -> bytes:
    """A valid DICOM that is also a valid ZIP (cf. CVE-2019-11687).

    The preamble starts with a ZIP signature, so a sniffer that trusts the first bytes says ZIP;
    the archive rides in a private element of an odd group after 7FE0 (pixel data), so it is the
    last thing in the file, where ZIP readers look for the end-of-central-directory record.
    """
    dataset = _dicom_dataset(pixels, "MONOCHROME2", 12, ExplicitVRLittleEndian, None, {})
    dataset.preamble = b"PK\x03\x04" + bytes(124)
    dataset.private_block(0x7FE1, "MURA LENS POLYGLOT", create=True).add_new(0x00, "OB", archive)
    return _part10_bytes(dataset)


def _dicom_without_pixel_data() -> bytes:
    """A DICOM file with no image in it, like a structured report."""
    basic_text_sr = "1.2.840.10008.5.1.4.1.1.88.11"
    return _part10_bytes(_dicom_header(basic_text_sr, "SR", entropy=["mura-lens report"]))
