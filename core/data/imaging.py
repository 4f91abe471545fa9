"""Safe decoding of an uploaded radiograph (PNG, JPEG, DICOM, ...) into a greyscale uint8 array.

Design notes: docs/architecture.md, "Decoding uploads safely".

Example:
    >>> radiograph = load_radiograph(uploaded.getvalue(), filename=uploaded.name)  # doctest: +SKIP
    >>> radiograph.pixels.shape, radiograph.notes  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from PIL import ExifTags, Image, ImageOps
from pydicom import uid
from pydicom.encaps import get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

__all__ = [
    "DISPLAY_MAX_SIDE",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MAX_FILE_BYTES",
    "ACCEPTED_EXTENSIONS",
    "Radiograph",
    "RadiographDecodeError",
    "load_radiograph",
    "downsized",
]

MAX_PIXELS = 40_000_000
"""Largest image accepted (width x height); a 40-megapixel radiograph is already unusually big."""

DISPLAY_MAX_SIDE = 1024
"""Longest side kept of an image a server holds on to: what a screen shows of one view, and several
times what the models see (224-320 px)."""

MIN_SIDE = 32
"""Smallest side accepted in pixels: below this there is no anatomy to classify."""

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Largest file read from disk; bounds memory before any format is even known."""

DECODE_BUDGET_BYTES = 300 * 2**20
"""Memory one decode may add, estimated from the header (bits per sample, samples, the decoder's own
buffers and the conversion's copies) before any pixel is decoded; above it the file is refused."""

TOTAL_DECODE_BYTES = 720 * 2**20
"""Memory all decodes of the process may add together: a decode waits until its estimate fits, so
four large uploads at once stay under 1 GiB."""

_DECODE_WAIT_SECONDS = 120.0  # how long a decode waits for the others before saying the server is busy
_STRIP_PIXELS = 1 << 20  # pixels converted at a time: float copies of a few MB, never of the whole image
_CONVERSION_BYTES = 24 * 2**20  # what the strip-wise conversion itself holds (float copies, samples)
_WINDOW_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE = 1_000_000  # pixels: enough for stable percentiles, cheap on 40 MP images
_COLOUR_SAMPLE = 65_536  # pixels looked at by the saturation test
_CHROMA_THRESHOLD = 32  # max-min over R, G, B above this is a visibly coloured pixel (JPEG noise stays below)
_COLOURFUL_FRACTION = 0.05  # coloured pixels needed to call it a photograph (annotations stay below)
# A deflated DICOM may inflate to a 16-bit image at the pixel cap plus this much for its other elements.
_DICOM_HEADER_ALLOWANCE = 16 * 2**20
_INFLATE_STEP = 8 * 2**20  # bytes inflated at a time while a deflated DICOM's size is counted
# Start-of-frame markers of JPEG (all processes but the differential ones) and JPEG-LS (SOF55).
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_RLE_MAX_EXPANSION = 64  # two RLE bytes decode to at most 128
_RLE_PADDING = 128  # decoded bytes past the image tolerated, as pydicom does (it warns)
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the SIZ marker that holds the image size
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the first box of a JP2 file

# Display name, file extensions and Pillow's format id for every format sniffed from bytes.
_DISPLAY_NAMES = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "DICOM": "DICOM",
    "TIFF": "TIFF",
    "GIF": "GIF",
    "BMP": "BMP",
    "WEBP": "WebP",
}
_EXTENSIONS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "DICOM": (".dcm", ".dicom", ".dic"),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "BMP": (".bmp", ".dib"),
    "WEBP": (".webp",),
}
ACCEPTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(ext for exts in _EXTENSIONS.values() for ext in exts))
"""File extensions of the accepted formats (DICOM files often have none: do not require one)."""

_SUPPORTED_SENTENCE = "upload a PNG, JPEG or DICOM radiograph"


class RadiographDecodeError(ValueError):
    """The upload cannot be turned into a radiograph; ``str(error)`` is one user-facing sentence."""


class _DecodeBudget:
    """The bytes decodes in flight may add together: each waits until its estimate fits (a server's
    four sessions decoding at once share it rather than each taking the most one may)."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        with self._condition:
            if not self._condition.wait_for(lambda: self._free >= amount, _DECODE_WAIT_SECONDS):
                raise RadiographDecodeError("The server is busy decoding other large images; try again in a minute.")
            self._free -= amount
        try:
            yield
        finally:
            with self._condition:
                self._free += amount
                self._condition.notify_all()


_BUDGET = _DecodeBudget(TOTAL_DECODE_BYTES)


def _reserve(estimate: int) -> contextlib.AbstractContextManager[None]:
    """Refuse a decode whose estimated memory is over the per-image budget; else wait for its share."""
    if estimate > DECODE_BUDGET_BYTES:
        raise RadiographDecodeError(
            f"Decoding this image would take about {estimate / 2**20:,.0f} MB of memory, more than the "
            f"{DECODE_BUDGET_BYTES // 2**20} MB this server allows one image (fewer pixels or bits per pixel fit)."
        )
    return _BUDGET.reserve(estimate)


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A decoded radiograph ready for :func:`core.data.preprocess.letterbox`.

    ``eq=False``: comparing two images means comparing arrays, which the caller should do
    explicitly; identity equality keeps the object hashable (usable as a cache key).
    """

    pixels: np.ndarray
    """uint8, shape (height, width), greyscale, EXIF orientation applied."""
    width: int
    height: int
    bit_depth: int
    """Bits per sample in the source: 8 or 16 for almost every radiograph (1 or 32 are rare)."""
    source_format: str
    """Sniffed from the bytes, not the file name: "PNG", "JPEG", "DICOM", "TIFF", "GIF", "BMP", "WEBP"."""
    looks_like_radiograph: bool
    """False for visibly coloured images (accepted, shown in grey, but likely not an X-ray)."""
    notes: tuple[str, ...] = ()
    """What was done to the image on the way, in plain words, e.g. "MONOCHROME1 inverted"."""


def load_radiograph(
    source: bytes | str | os.PathLike[str],
    *,
    filename: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> Radiograph:
    """Decode an uploaded file (its bytes) or a file on disk (a path) into a :class:`Radiograph`.

    Args:
        source: the file's bytes, or a path to read. Bytes are never interpreted as a path.
        filename: the name the user gave the file; only a label and a hint (an extension that
            disagrees with the content adds a note). Defaults to the path's name.
        max_pixels: refuse images whose declared width x height exceeds this (before decoding).
            Pillow's own ``MAX_IMAGE_PIXELS`` also applies, so this can only tighten it.
        min_side: refuse images whose shorter side is below this.

    Raises:
        RadiographDecodeError: whenever the source is not a decodable, safely sized image.
    """
    data, filename = _read_source(source, filename)
    source_format = _sniff_format(data)
    limit = _effective_pixel_limit(max_pixels)
    try:
        if source_format == "DICOM":
            radiograph = _decode_dicom(data, limit, min_side)
        else:
            radiograph = _decode_with_pillow(data, source_format, limit, min_side)
    except RadiographDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception only when the process promotes warnings to errors.
        raise RadiographDecodeError(f"The image is larger than the limit of {limit:,} pixels.") from exc
    except Exception as exc:  # noqa: BLE001 - untrusted bytes reach deep into Pillow, zlib and pydicom;
        # whatever they raise on a malformed file, the user-facing meaning is the same.
        raise RadiographDecodeError(
            f"The file looks like a {_DISPLAY_NAMES[source_format]} image but is truncated or corrupt "
            "and could not be decoded."
        ) from exc
    mismatch = _extension_mismatch_note(filename, source_format)
    if mismatch:
        return replace(radiograph, notes=(*radiograph.notes, mismatch))
    return radiograph


def downsized(radiograph: Radiograph, max_side: int = DISPLAY_MAX_SIDE) -> Radiograph:
    """The radiograph with its longer side shrunk to ``max_side`` (with a note); as is when no longer.

    A server keeps decoded views and their heat maps in caches shared by every visitor: at full
    size a 40-megapixel upload holds 40 MB of pixels and a 160 MB float heat map per method. The
    model letterboxes to its own input size anyway, with the same antialiased bilinear filter.
    """
    longer = max(radiograph.width, radiograph.height)
    if longer <= max_side:
        return radiograph
    width = max(1, round(radiograph.width * max_side / longer))
    height = max(1, round(radiograph.height * max_side / longer))
    pixels = np.array(Image.fromarray(radiograph.pixels).resize((width, height), Image.Resampling.BILINEAR))
    note = f"downsized from {radiograph.width} x {radiograph.height} to {width} x {height} pixels"
    return replace(radiograph, pixels=pixels, width=width, height=height, notes=(*radiograph.notes, note))


def _read_source(source: bytes | str | os.PathLike[str], filename: str | None) -> tuple[bytes, str | None]:
    """The bytes to decode and the label for them; paths are read here and nowhere else."""
    too_large = RadiographDecodeError(
        f"The file is larger than {MAX_FILE_BYTES // 2**20} MB, too large to be one radiograph."
    )
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        filename = path.name if filename is None else filename
        if not path.is_file():
            raise RadiographDecodeError("The file does not exist or is not a regular file.")
        try:
            with path.open("rb") as handle:
                # The size first: a 10 GB sparse file is refused at once, not after 512 MB are read. The
                # bounded read still holds for a file whose size says nothing (/proc) or that grows.
                if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
                    raise too_large
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise RadiographDecodeError("The file could not be read.") from exc
    if len(data) > MAX_FILE_BYTES:
        raise too_large
    return data, filename


def _sniff_format(data: bytes) -> str:
    """The image format named by the magic bytes, or a refusal that says what the file is."""
    if not data:
        raise RadiographDecodeError("The file is empty.")
    if data[128:132] == b"DICM":
        # Checked first: a DICOM preamble may start with another format's signature (polyglots).
        return "DICOM"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    raise RadiographDecodeError(_not_an_image_message(data))


def _not_an_image_message(data: bytes) -> str:
    """One sentence naming the common things people upload by mistake."""
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return "HEIC/HEIF photos are not supported; convert the photo to JPEG or PNG first."
    if data.startswith(b"%PDF-"):
        kind = "a PDF document"
    elif data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        kind = "a ZIP archive"
    else:
        head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
            kind = "an HTML page"
        elif _is_text(data[:4096]):
            kind = "plain text"
        else:
            return f"The file is not in a supported image format; {_SUPPORTED_SENTENCE} (or TIFF, GIF, BMP, WebP)."
    return f"The file is {kind}, not an image; {_SUPPORTED_SENTENCE}."


def _is_text(head: bytes) -> bool:
    """UTF-8 without NUL bytes; a multi-byte character cut at the end still counts."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3
    return True


def _effective_pixel_limit(max_pixels: int) -> int:
    """The caller's cap, tightened to Pillow's warning threshold (its warning counts as an error)."""
    if Image.MAX_IMAGE_PIXELS is None:
        return max_pixels
    return min(max_pixels, Image.MAX_IMAGE_PIXELS)


def _check_declared_size(width: int, height: int, limit: int, min_side: int) -> None:
    """Refuse from the header alone, before any pixel is decompressed."""
    if width * height > limit:
        raise RadiographDecodeError(
            f"The image is {width} x {height} pixels, larger than the limit of {limit:,} pixels."
        )
    if min(width, height) < min_side:
        raise RadiographDecodeError(
            f"The image is {width} x {height} pixels; a radiograph must be at least {min_side} pixels on each side."
        )


def _decode_with_pillow(data: bytes, source_format: str, limit: int, min_side: int) -> Radiograph:
    """PNG, JPEG, TIFF, GIF, BMP, WebP: header and memory checks, full decode, orientation, greyscale."""
    notes: list[str] = []
    # formats=[...]: only the sniffed format's plugin may parse the bytes (no format confusion).
    with Image.open(io.BytesIO(data), formats=[source_format]) as image:
        _check_declared_size(image.width, image.height, limit, min_side)
        if getattr(image, "is_animated", False):
            notes.append(f"{_DISPLAY_NAMES[source_format]} has several frames; only the first is used")
        with _reserve(_pillow_estimate(image)):
            image.load()  # full decode now: a truncated file fails here, not in the model
            notes.extend(_apply_exif_orientation(image))
            pixels, bit_depth, looks_like_radiograph, conversion_notes = _pillow_to_grey(image)
    notes.extend(conversion_notes)
    return _radiograph(pixels, bit_depth, source_format, looks_like_radiograph, notes)


def _pillow_bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel in ``mode``: one byte for 1/L/P, two for I;16, four for the rest
    (every multi-band mode is stored as four bytes, RGB included)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _pillow_estimate(image: Image.Image) -> int:
    """Memory the decode of ``image`` adds, from its header: the decoded image, a transposed copy when
    EXIF says to rotate, a palette expanded to RGB(A), a progressive JPEG's coefficient buffers
    (two bytes per sample), the greyscale result and its array copy, and the strip-wise conversion.
    Measured at 40 MP: 16-bit PNG +129 MiB, float TIFF +209, RGB PNG +266 (estimates 175, 250, 291)."""
    pixels = image.width * image.height
    stored = _pillow_bytes_per_pixel(image.mode)
    # Colour is converted once more on the way to grey (RGB -> L, then the array).
    total = pixels * (stored + (3 if len(image.getbands()) > 1 else 2)) + _CONVERSION_BYTES
    if image.mode in ("P", "PA"):
        total += 4 * pixels
    if image.format == "JPEG" and image.info.get("progressive"):
        total += 2 * len(image.getbands()) * pixels
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
            total += stored * pixels
    except Exception:  # noqa: BLE001 - broken EXIF is ignored when the image is decoded, too
        pass
    return total


def _apply_exif_orientation(image: Image.Image) -> list[str]:
    """Rotate/flip as the camera or scanner said, so the pixels are upright as viewers show them."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in range(2, 9):
            return []
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost a readable image
        return ["EXIF orientation unreadable; image left as stored"]
    return [f"EXIF orientation {orientation} applied"]


def _pillow_to_grey(image: Image.Image) -> tuple[np.ndarray, int, bool, list[str]]:
    """uint8 greyscale pixels, source bit depth, the radiograph flag and notes, for any Pillow mode."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        bit_depth = 16 if image.mode.startswith("I;16") else 32
        read = _pillow_strips(image)
        low, high = _percentile_window(read, image.height, image.width)
        return (
            _scaled_uint8(read, image.height, image.width, low, high),
            bit_depth,
            True,
            [f"{bit_depth}-bit image windowed to 8-bit (0.5-99.5 percentiles)"],
        )
    bit_depth = 1 if image.mode == "1" else 8
    notes: list[str] = []
    if image.mode in ("P", "PA"):
        # A palette can be grey or colour; expanding it lets the saturation test decide.
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    if "A" in image.getbands() or "a" in image.getbands():
        alpha = image.getchannel("A" if "A" in image.getbands() else "a")
        if alpha.getextrema()[0] < 255:  # type: ignore[operator]  # one band: (min, max); Pillow types every mode
            notes.append("transparency ignored")
        image = image.convert("L" if image.mode in ("LA", "La") else "RGB")
    if image.mode in ("1", "L"):
        return np.array(image.convert("L")), bit_depth, True, notes
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # also CMYK, YCbCr, LAB, HSV
    looks_like_radiograph = not _is_visibly_coloured(
        _sample(_pillow_strips(rgb), rgb.height, rgb.width, _COLOUR_SAMPLE)
    )
    if not looks_like_radiograph:
        notes.append("colour image converted to greyscale")
    return np.array(rgb.convert("L")), bit_depth, looks_like_radiograph, notes


def _is_visibly_coloured(sample: np.ndarray) -> bool:
    """Cheap saturation test on a sample of an RGB image's pixels: enough of them whose channels
    differ clearly.

    Equal channels (a radiograph saved as RGB) give zero chroma; JPEG chroma noise and thin
    coloured annotations stay under the thresholds; skin, clothes and scenery do not.
    """
    sample = sample.astype(np.int16)
    chroma = sample.max(axis=-1) - sample.min(axis=-1)
    return bool(np.mean(chroma > _CHROMA_THRESHOLD) >= _COLOURFUL_FRACTION)


# --- strip-wise conversion: a 40 MP image never gets a float copy of its own ----------------------

#: Rows [start, stop) of an image's values, in any numeric dtype (already through the LUTs for DICOM).
StripReader = Callable[[int, int], np.ndarray]


def _pillow_strips(image: Image.Image) -> StripReader:
    """Rows of a decoded Pillow image as arrays, copied a strip at a time."""
    return lambda start, stop: np.asarray(image.crop((0, start, image.width, stop)))


def _strips(height: int, width: int, step: int = 1) -> Iterator[tuple[int, int]]:
    """Row ranges of about _STRIP_PIXELS pixels each, starting on multiples of ``step``."""
    rows = max(step, _STRIP_PIXELS // max(width, 1) // step * step)
    for start in range(0, height, rows):
        yield start, min(start + rows, height)


def _sample(read: StripReader, height: int, width: int, target: int) -> np.ndarray:
    """Every n-th row and column (about ``target`` values), read strip by strip."""
    step = max(1, int(np.sqrt(height * width / target)))
    # A copy of each strip's sample: a view would keep the whole strip alive until the end.
    return np.concatenate([read(start, stop)[::step, ::step].copy() for start, stop in _strips(height, width, step)])


def _percentile_window(read: StripReader, height: int, width: int) -> tuple[float, float]:
    """The 0.5-99.5 percentile range of the finite values, from a sample.

    Percentiles, not min/max: one hot pixel or a burned-in label at full scale would otherwise
    squeeze the anatomy into a few grey levels. Non-finite values (float TIFF) are ignored; a
    nearly constant image falls back to its full range.
    """
    sample = _sample(read, height, width, _PERCENTILE_SAMPLE).astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(sample, _WINDOW_PERCENTILES)
    if high <= low:
        low, high = sample.min(), sample.max()
    return float(low), float(high)


def _value_range(read: StripReader, height: int, width: int) -> tuple[float, float]:
    """The smallest and largest finite value, strip by strip."""
    low, high = np.inf, -np.inf
    for start, stop in _strips(height, width):
        values = np.asarray(read(start, stop), dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return (low, high) if low <= high else (0.0, 0.0)


def _scaled_uint8(read: StripReader, height: int, width: int, low: float, high: float) -> np.ndarray:
    """Every value mapped linearly from [low, high] onto 0..255, clipped; a constant image is black."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    if high > low:
        for start, stop in _strips(height, width):
            pixels[start:stop] = _linear_to_uint8(read(start, stop), low, high)
    return pixels


def _linear_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """values (a strip) in [low, high] -> 0..255, clipped, on one float32 copy; ``high > low``."""
    scaled = np.array(values, dtype=np.float32)
    np.nan_to_num(scaled, copy=False, nan=low, posinf=high, neginf=low)
    scaled -= low
    scaled *= 255.0 / (high - low)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _decode_dicom(data: bytes, limit: int, min_side: int) -> Radiograph:
    """Single-frame greyscale DICOM: header checks, pixel decode, modality and VOI LUTs, MONOCHROME1."""
    dataset = _read_dicom(data, limit)
    if "PixelData" not in dataset:
        raise RadiographDecodeError("The DICOM file contains no image (it has no Pixel Data).")
    if any(keyword not in dataset for keyword in ("Rows", "Columns", "PhotometricInterpretation")):
        raise RadiographDecodeError(
            "The DICOM file's pixel data comes without its size or photometric interpretation, so it cannot be shown."
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if int(dataset.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RadiographDecodeError(
            "The DICOM image is not greyscale (MONOCHROME1 or MONOCHROME2), and colour DICOM is not supported."
        )
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise RadiographDecodeError(
            f"The DICOM file holds {frames} frames; only single-frame radiographs are supported."
        )
    _check_declared_size(int(dataset.Columns), int(dataset.Rows), limit, min_side)
    _require_decoder(dataset.file_meta.TransferSyntaxUID)
    _check_compressed_size(dataset)

    with _reserve(_dicom_estimate(dataset)):
        raw = dataset.pixel_array
        del dataset.PixelData  # the stored bytes are no longer needed: free them before converting
        pixels, notes = _dicom_to_uint8(raw, dataset)
    if photometric == "MONOCHROME1":
        np.subtract(255, pixels, out=pixels)  # MONOCHROME1 shows its lowest value white; invert so bone is bright
        notes.append("MONOCHROME1 inverted")
    return _radiograph(pixels, int(dataset.BitsAllocated), "DICOM", True, notes)


def _read_dicom(data: bytes, limit: int) -> pydicom.Dataset:
    """Parse a DICOM file, inflating a deflated one within a bound first.

    pydicom inflates a Deflated Explicit VR Little Endian dataset whole, before any element can
    be checked (a few MB of zeros inflate to gigabytes), so that syntax is inflated here with a
    cap tied to the pixel cap. The file meta is read with pydicom's own reader, so the transfer
    syntax seen here is the one dcmread would act on.
    """
    stream = io.BytesIO(data)
    preamble = read_preamble(stream, False)
    file_meta = _read_file_meta_info(stream)
    if file_meta.get("TransferSyntaxUID") != uid.DeflatedExplicitVRLittleEndian:
        return pydicom.dcmread(io.BytesIO(data))
    max_bytes = 2 * limit + _DICOM_HEADER_ALLOWANCE
    payload = memoryview(data)[stream.tell() :]
    size, complete = _inflated_size(payload, max_bytes)
    if size > max_bytes:
        raise RadiographDecodeError(
            f"The deflated DICOM file expands to more than {max_bytes // 2**20} MB, more than one "
            "radiograph within the pixel limit can hold."
        )
    if not complete:
        raise RadiographDecodeError("The deflated DICOM file is truncated or corrupt and could not be decoded.")
    # Its size known, the dataset is inflated into one buffer of exactly that size (a growing
    # buffer would hold it twice at the end).
    inflated = zlib.decompress(payload, -zlib.MAX_WBITS, max(size, 1))
    # pydicom's own dcmread hands read_dataset a DicomBytesIO; its annotation says BinaryIO.
    dataset = read_dataset(DicomBytesIO(inflated), is_implicit_VR=False, is_little_endian=True)  # type: ignore[arg-type]
    file_dataset = pydicom.FileDataset(
        "upload", dataset, preamble=preamble, file_meta=file_meta, is_implicit_VR=False, is_little_endian=True
    )
    file_dataset.set_original_encoding(False, True, dataset._character_set)
    return file_dataset


def _inflated_size(payload: memoryview, max_bytes: int) -> tuple[int, bool]:
    """(bytes a raw deflate stream inflates to, counted up to just past ``max_bytes``; whether the
    stream ends): inflated 8 MB at a time and thrown away, so a bomb costs 8 MB, not its size."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    pending: bytes | memoryview = payload
    while not inflater.eof and size <= max_bytes:
        inflated = len(inflater.decompress(pending, _INFLATE_STEP))
        pending = inflater.unconsumed_tail
        if not inflated and not pending:
            break  # the input ended before the stream did
        size += inflated
    return size, inflater.eof


def _check_compressed_size(dataset: pydicom.Dataset) -> None:
    """Refuse a compressed image whose own codestream disagrees with the header's size.

    JPEG and JPEG 2000 decoders allocate for the size written in the codestream (SOF or SIZ
    marker), not the DICOM header's Rows and Columns, so a 1 KB file can claim 64 x 64 in its
    header and 13000 x 13000 in its stream. The stream's size is read here, before decoding;
    compressed syntaxes whose size cannot be checked this way are refused.
    """
    transfer_syntax = dataset.file_meta.TransferSyntaxUID
    if not transfer_syntax.is_compressed:
        return  # native pixel data is checked against the header by pydicom
    if transfer_syntax in uid.RLETransferSyntaxes:
        _check_rle_segments(
            get_frame(dataset.PixelData, 0, number_of_frames=1), int(dataset.Columns) * int(dataset.Rows)
        )
        return
    if transfer_syntax in uid.JPEG2000TransferSyntaxes:
        size = _j2k_size(get_frame(dataset.PixelData, 0, number_of_frames=1))
    elif transfer_syntax in (*uid.JPEGTransferSyntaxes, *uid.JPEGLSTransferSyntaxes):
        size = _jpeg_size(get_frame(dataset.PixelData, 0, number_of_frames=1))
    else:
        raise RadiographDecodeError("The DICOM file uses a compressed transfer syntax that cannot be decoded.")
    if size is None:
        raise RadiographDecodeError("The DICOM file's compressed image has no readable size; it is corrupt.")
    width, height, components = size
    if (width, height, components) != (int(dataset.Columns), int(dataset.Rows), 1):
        raise RadiographDecodeError(
            f"The DICOM header says {int(dataset.Columns)} x {int(dataset.Rows)} pixels but its compressed "
            f"image is {width} x {height} pixels with {components} component(s); refused."
        )


def _check_rle_segments(frame: bytes, segment_bytes: int) -> None:
    """Refuse an RLE frame whose segments decode to more bytes than the header's image holds.

    pydicom decodes each segment whole before comparing its length with the header's, and two
    bytes of RLE can stand for 128, so the runs are summed here first. Hand-written: no library
    measures an RLE segment without decoding it. A segment too short to exceed the size is skipped.
    """
    count, *offsets = struct.unpack("<16I", frame[:64].ljust(64, b"\0"))
    starts = offsets[:count]
    allowed = segment_bytes + _RLE_PADDING
    for start, end in zip(starts, [*starts[1:], len(frame)], strict=True):
        if _RLE_MAX_EXPANSION * (end - start) <= allowed:
            continue
        decoded, position = 0, start
        while position < end and decoded <= allowed:
            header = frame[position]
            if header > 128:  # the next byte repeated 257 - header times
                decoded, position = decoded + 257 - header, position + 2
            elif header < 128:  # header + 1 literal bytes
                decoded, position = decoded + header + 1, position + header + 2
            else:
                position += 1
        if decoded > allowed:
            raise RadiographDecodeError(
                "The DICOM file's RLE image decodes to more pixels than its header says; refused."
            )


def _j2k_size(frame: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of the JPEG 2000 codestream the decoder reads: a bare codestream
    (the SIZ marker right after its start), or a JP2 file, whose boxes are walked; None when unreadable.

    Hand-read: Pillow takes a JP2 file's size from its header box, not from the codestream the
    decoder allocates for. A JP2 file must hold one header (``jp2h``/``ihdr``) and one codestream
    (``jp2c``) of the same size, and no codestream start in any other box: a small decoy SIZ in an
    ``xml `` box ahead of a large codestream is refused.
    """
    if frame.startswith(_J2K_SOC_SIZ):
        return _siz_size(frame)
    if not frame.startswith(_JP2_SIGNATURE):
        return None
    boxes = _jp2_boxes(frame, 0, len(frame))
    if boxes is None:
        return None
    headers = [(start, end) for kind, start, end in boxes if kind == b"jp2h"]
    streams = [(start, end) for kind, start, end in boxes if kind == b"jp2c"]
    if len(headers) != 1 or len(streams) != 1:
        return None
    header_boxes = _jp2_boxes(frame, *headers[0]) or []
    image_headers = [frame[start:end] for kind, start, end in header_boxes if kind == b"ihdr"]
    stream_start, stream_end = streams[0]
    outside = frame[:stream_start] + b"\0" + frame[stream_end:]
    size = _siz_size(frame[stream_start:stream_end])
    if len(image_headers) != 1 or len(image_headers[0]) < 10 or _J2K_SOC_SIZ in outside or size is None:
        return None
    height, width, components = struct.unpack(">IIH", image_headers[0][:10])
    return size if (width, height, components) == size else None


def _siz_size(codestream: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from the SIZ marker that must follow a codestream's start."""
    fields = codestream[4:42]
    if not codestream.startswith(_J2K_SOC_SIZ) or len(fields) < 38:
        return None
    _lsiz, _rsiz, xsiz, ysiz, x_offset, y_offset, *_tiles, components = struct.unpack(">HHIIIIIIIIH", fields)
    return xsiz - x_offset, ysiz - y_offset, components


def _jp2_boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]] | None:
    """(type, content start, content end) of the JP2 boxes in ``data[start:end]``; None when a box's
    length runs past the end or is too short to hold its own header."""
    boxes = []
    position = start
    while position < end:
        if position + 8 > end:
            return None
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        header = 8
        if length == 1:  # the length follows as 64 bits
            if position + 16 > end:
                return None
            length, header = struct.unpack(">Q", data[position + 8 : position + 16])[0], 16
        elif length == 0:  # the last box runs to the end
            length = end - position
        if length < header or position + length > end:
            return None
        boxes.append((kind, position + header, position + length))
        position += length
    return boxes


def _jpeg_size(frame: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from the frame header of a JPEG or JPEG-LS stream.

    Hand-walked: Pillow cannot parse JPEG-LS, and one marker walk covers both.
    """
    if not frame.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return None
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker in _JPEG_STANDALONE_MARKERS:
            position += 2
        elif marker in _JPEG_SOF_MARKERS:
            header = frame[position + 5 : position + 10]
            if len(header) < 5:
                return None
            height, width, components = struct.unpack(">HHB", header)
            return width, height, components
        elif marker == 0xDA:  # a scan before any frame header
            return None
        else:
            position += 2 + int.from_bytes(frame[position + 2 : position + 4], "big")
    return None


def _require_decoder(transfer_syntax: pydicom.uid.UID) -> None:
    """Refuse compressed pixel data that no installed pydicom plugin can decode, naming the codec."""
    if not transfer_syntax.is_compressed:
        return
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise RadiographDecodeError("The DICOM file uses a compressed transfer syntax that cannot be decoded.") from exc
    if not decoder.is_available:
        raise RadiographDecodeError(
            f"The DICOM image is compressed with {transfer_syntax.name}, and no decoder for it is installed."
        )


def _within(value_range: tuple[float, float], low: float, high: float) -> bool:
    return low <= value_range[0] and value_range[1] <= high


def _dicom_estimate(dataset: pydicom.Dataset) -> int:
    """Memory the pixel decode and conversion add, from the header: the decoded array and one
    transient copy of it (pydicom's decoders, Pillow's image for JPEG), OpenJPEG's 32-bit buffer for
    JPEG 2000, the uint8 result and the strip-wise conversion (never a float copy of the image)."""
    pixels = int(dataset.Rows) * int(dataset.Columns)
    decoded = pixels * max(1, (int(dataset.BitsAllocated) + 7) // 8)
    total = 2 * decoded + pixels + _CONVERSION_BYTES
    if dataset.file_meta.TransferSyntaxUID in uid.JPEG2000TransferSyntaxes:
        total += 4 * pixels
    return total


def _dicom_to_uint8(raw: np.ndarray, dataset: pydicom.Dataset) -> tuple[np.ndarray, list[str]]:
    """The stored values through the modality LUT (rescale) and the file's own VOI LUT or window,
    scaled to 0..255, with notes. Both LUTs are pointwise, so pydicom's functions run a strip at a
    time: their float64 copies are of a strip, not of a 40 MP image (+1.1 GB before)."""
    height, width = raw.shape

    def modality(start: int, stop: int) -> np.ndarray:
        return apply_modality_lut(raw[start:stop], dataset)

    if dataset.get("VOILUTSequence") or ("WindowCenter" in dataset and "WindowWidth" in dataset):

        def windowed(start: int, stop: int) -> np.ndarray:
            return apply_voi_lut(modality(start, stop), dataset)

        try:
            # The window already clipped the tails, so its output range maps straight onto 0..255.
            low, high = _value_range(windowed, height, width)
        except Exception:  # noqa: BLE001 - an invalid window (e.g. width 0) should not cost the image
            low, high = _percentile_window(modality, height, width)
            return (
                _scaled_uint8(modality, height, width, low, high),
                ["DICOM window invalid; 0.5-99.5 percentile window used instead"],
            )
        return _scaled_uint8(windowed, height, width, low, high), ["DICOM window (VOI LUT) applied"]
    if int(dataset.BitsStored) == 8 and _within(_value_range(modality, height, width), 0.0, 255.0):
        # 8-bit data is shown as stored, like an 8-bit PNG (0..255 onto 0..255 is the identity).
        return _scaled_uint8(modality, height, width, 0.0, 255.0), []
    low, high = _percentile_window(modality, height, width)
    return (
        _scaled_uint8(modality, height, width, low, high),
        [f"{int(dataset.BitsStored)}-bit image windowed to 8-bit (0.5-99.5 percentiles)"],
    )


def _radiograph(
    pixels: np.ndarray, bit_depth: int, source_format: str, looks_like_radiograph: bool, notes: list[str]
) -> Radiograph:
    """The result, with width and height taken from the final (upright) pixels."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape
    return Radiograph(pixels, width, height, bit_depth, source_format, looks_like_radiograph, tuple(notes))


def _extension_mismatch_note(filename: str | None, source_format: str) -> str | None:
    """A note when a known image extension disagrees with the content (the content wins).

    Only known extensions are echoed back, so odd or non-UTF-8 names never reach the UI text.
    """
    if not filename:
        return None
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS or suffix in _EXTENSIONS[source_format]:
        return None
    actual = _DISPLAY_NAMES[source_format]
    return f"file named {suffix} but holds {actual} data; decoded as {actual}"
