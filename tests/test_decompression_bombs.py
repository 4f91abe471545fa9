"""core.data.imaging against DICOM files whose pixels, once decompressed, would dwarf the upload.

Each bomb is decoded in a child Python whose peak resident memory (VmHWM) is measured
around the one load_radiograph call. The child also runs under an address-space limit, so a
regression fails the test (too much memory, or a MemoryError that reads as "corrupt") instead of
taking the machine's memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from core.data.imaging import RadiographDecodeError, load_radiograph
from tests.bad_inputs import encode_dicom, encode_image, phantom
from tests.test_imaging import assert_one_sentence

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read the Linux way (/proc/self/status)")

REPO_ROOT = Path(__file__).resolve().parent.parent
SIDE = 64
BOMB_BYTES = 400 * 2**20
# Peak growth allowed around the call: the default cap's inflate bound (92 MiB) plus slack, far
# below what any of the bombs expands to.
PEAK_GROWTH_LIMIT = 160 * 2**20
# Address space the child may add after its imports: enough for a bounded decode, not for a bomb.
CHILD_EXTRA_ADDRESS_SPACE = 1024 * 2**20
_CHILD = r"""
import json, resource, sys
from core.data.imaging import RadiographDecodeError, load_radiograph

def status(field):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, large) through exec.
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + int(sys.argv[2]), resource.RLIM_INFINITY))
data = open(sys.argv[1], "rb").read() if sys.argv[3:] != ["path"] else sys.argv[1]  # a str is read as a path
before = status("VmHWM")
try:
    load_radiograph(data)
    outcome = "accepted"
except RadiographDecodeError as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome, "peak_growth": status("VmHWM") - before}))
"""


def grey() -> np.ndarray:
    return np.rint(phantom(SIDE) * 255).astype(np.uint8)


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + file meta, dataset) of a Part 10 file."""
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    return data[: stream.tell()], data[stream.tell() :]


def deflated_dicom(pixels: np.ndarray, trailing_zeros: int = 0) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM of ``pixels``, optionally followed by a private
    OB element of ``trailing_zeros`` zero bytes (compressed as a stream: never held in memory)."""
    dataset = pydicom.dcmread(io.BytesIO(encode_dicom(pixels)))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    head, deflated = split_part10(buffer.getvalue())
    plain = zlib.decompress(deflated, -zlib.MAX_WBITS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [head, compressor.compress(plain)]
    if trailing_zeros:
        parts.append(compressor.compress(struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, trailing_zeros)))
        chunk = bytes(4 * 2**20)  # BOMB_BYTES and the other sizes are multiples of it
        for _ in range(trailing_zeros // len(chunk)):
            parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return b"".join(parts)


def j2k_claiming(side: int) -> bytes:
    """A 64 x 64 DICOM whose JPEG 2000 codestream's SIZ marker says ``side`` x ``side``."""
    frame = bytearray(encode_image(Image.fromarray(grey()), "JPEG2000", no_jp2=True, irreversible=False))
    siz = frame.index(b"\xff\x4f\xff\x51") + 4
    frame[siz + 4 : siz + 12] = struct.pack(">II", side, side)  # Xsiz, Ysiz
    frame[siz + 20 : siz + 28] = struct.pack(">II", side, side)  # one tile, as an encoder of that size writes
    return encode_dicom(grey(), transfer_syntax=JPEG2000Lossless, frames=[bytes(frame)])


def _box(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(content), kind) + content


def jp2_with_decoy(stream_side: int, header_side: int, decoy: bool = True) -> bytes:
    """A 64 x 64 DICOM whose JPEG 2000 frame is a JP2 file: an ``ihdr`` of ``header_side``, then
    (with ``decoy``) an ``xml `` box holding a 64 x 64 codestream start, then the ``jp2c``
    codestream whose SIZ says ``stream_side``; the headers are crafted, nothing that large is encoded."""
    small = encode_image(Image.fromarray(grey()), "JPEG2000", no_jp2=True, irreversible=False)
    large = bytearray(small)
    large[8:16] = struct.pack(">II", stream_side, stream_side)  # Xsiz, Ysiz (SIZ follows the 4-byte start)
    large[24:32] = struct.pack(">II", stream_side, stream_side)  # one tile of that size
    ihdr = struct.pack(">IIHBBBB", header_side, header_side, 1, 7, 7, 0, 0)
    boxes = [
        b"\x00\x00\x00\x0cjP  \r\n\x87\n",
        _box(b"ftyp", b"jp2 \0\0\0\0jp2 "),
        _box(b"jp2h", _box(b"ihdr", ihdr) + _box(b"colr", b"\x01\0\0\0\0\0\x11")),
    ]
    if decoy:
        boxes.append(_box(b"xml ", small[:64]))
    boxes.append(_box(b"jp2c", bytes(large)))
    return encode_dicom(grey(), transfer_syntax=JPEG2000Lossless, frames=[b"".join(boxes)])


def jpeg_claiming(side: int) -> bytes:
    """A 64 x 64 DICOM whose baseline JPEG frame header (SOF0) says ``side`` x ``side``."""
    frame = bytearray(encode_image(Image.fromarray(grey()), "JPEG", quality=90))
    sof = frame.index(b"\xff\xc0")
    frame[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return encode_dicom(grey(), transfer_syntax=JPEGBaseline8Bit, frames=[bytes(frame)])


def rle_bomb(segment_bytes: int) -> bytes:
    """A 64 x 64 8-bit RLE DICOM whose one segment is ``segment_bytes`` of 128-byte repeat runs."""
    runs = b"\x81\x00" * (segment_bytes // 2)  # 0x81: repeat the next byte 257 - 129 = 128 times
    frame = struct.pack("<16I", 1, 64, *[0] * 14) + runs
    return encode_dicom(grey(), transfer_syntax=RLELossless, frames=[frame])


def decode_in_child(data: bytes | Path, tmp_path: Path) -> dict:
    """load_radiograph in a fresh Python (of the bytes, or of a path it reads itself): its outcome and
    the growth of its peak RSS during the call."""
    path = data if isinstance(data, Path) else tmp_path / "upload.dcm"
    if not isinstance(data, Path):
        path.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    mode = ["path"] if isinstance(data, Path) else []
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(CHILD_EXTRA_ADDRESS_SPACE), *mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_deflated_dicom_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = deflated_dicom(grey(), trailing_zeros=BOMB_BYTES)
    assert len(bomb) < 1_000_000, "the bomb is a small upload"
    measured = decode_in_child(bomb, tmp_path)
    assert "expands to more than" in measured["outcome"]
    assert_one_sentence(measured["outcome"])
    assert measured["peak_growth"] < PEAK_GROWTH_LIMIT, measured


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_jpeg2000_stream_larger_than_its_header_is_refused_before_decoding(tmp_path: Path) -> None:
    measured = decode_in_child(j2k_claiming(13_000), tmp_path)
    assert "13000 x 13000" in measured["outcome"] and "64 x 64" in measured["outcome"]
    assert_one_sentence(measured["outcome"])
    assert measured["peak_growth"] < PEAK_GROWTH_LIMIT, measured


@pytest.mark.slow  # measures peak memory in a fresh interpreter
@pytest.mark.parametrize("header_side", [64, 13_377])
def test_jp2_decoy_size_ahead_of_a_large_codestream_is_refused_before_decoding(
    tmp_path: Path, header_side: int
) -> None:
    """The size checked is the one of the codestream the decoder reads (the jp2c box's SIZ), and a
    codestream start in any other box, or an ihdr that disagrees with it, refuses the file."""
    measured = decode_in_child(jp2_with_decoy(13_377, header_side), tmp_path)
    # Refused by the size check, before any decoder runs (a decoder's failure reads "truncated or corrupt").
    assert "compressed image has no readable size" in measured["outcome"], measured
    assert_one_sentence(measured["outcome"])
    assert measured["peak_growth"] < PEAK_GROWTH_LIMIT, measured


def test_jp2_header_that_disagrees_with_its_codestream_is_refused() -> None:
    for data in (jp2_with_decoy(64, 13_377, decoy=False), jp2_with_decoy(64, 64, decoy=True)):
        with pytest.raises(RadiographDecodeError, match="no readable size") as caught:
            load_radiograph(data)
        assert_one_sentence(str(caught.value))


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_rle_segment_longer_than_its_header_is_refused_before_decoding(tmp_path: Path) -> None:
    measured = decode_in_child(rle_bomb(8 * 2**20), tmp_path)  # 8 MB of runs: 512 MB decoded
    assert "RLE" in measured["outcome"]
    assert_one_sentence(measured["outcome"])
    assert measured["peak_growth"] < PEAK_GROWTH_LIMIT, measured


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_a_huge_sparse_file_is_refused_by_its_size_before_any_byte_is_read(tmp_path: Path) -> None:
    """10 GB of holes on disk: the size says no at once (it read 512 MB before refusing)."""
    path = tmp_path / "huge.dcm"
    with path.open("wb") as handle:
        handle.truncate(10 * 2**30)
    measured = decode_in_child(path, tmp_path)
    assert "larger than 512 MB" in measured["outcome"]
    assert_one_sentence(measured["outcome"])
    assert measured["peak_growth"] < 16 * 2**20, measured


def test_jpeg_frame_larger_than_its_header_is_refused() -> None:
    with pytest.raises(
        RadiographDecodeError, match="64 x 64 pixels but its compressed image is 13000 x 13000"
    ) as caught:
        load_radiograph(jpeg_claiming(13_000))
    assert_one_sentence(str(caught.value))


def test_deflated_dicom_within_the_bound_decodes_like_the_plain_one() -> None:
    plain = load_radiograph(encode_dicom(grey()))
    deflated = load_radiograph(deflated_dicom(grey()))
    np.testing.assert_array_equal(deflated.pixels, plain.pixels)


def test_inflate_bound_follows_the_callers_pixel_cap() -> None:
    """2 bytes per pixel of the cap plus 16 MB: a 20 MB inflated dataset passes the default cap only."""
    data = deflated_dicom(grey(), trailing_zeros=20 * 2**20)
    assert load_radiograph(data).pixels.shape == (SIDE, SIDE)
    with pytest.raises(RadiographDecodeError, match="expands to more than 16 MB"):
        load_radiograph(data, max_pixels=SIDE * SIDE)


def test_compressed_streams_that_agree_with_the_header_still_decode() -> None:
    j2k = encode_image(Image.fromarray(grey()), "JPEG2000", no_jp2=True, irreversible=False)
    decoded = load_radiograph(encode_dicom(grey(), transfer_syntax=JPEG2000Lossless, frames=[j2k]))
    np.testing.assert_array_equal(decoded.pixels, grey())
    jp2 = encode_image(Image.fromarray(grey()), "JPEG2000", irreversible=False)  # a JP2 file, boxes and all
    decoded = load_radiograph(encode_dicom(grey(), transfer_syntax=JPEG2000Lossless, frames=[jp2]))
    np.testing.assert_array_equal(decoded.pixels, grey())
    rle = load_radiograph(encode_dicom(grey(), transfer_syntax=RLELossless))
    np.testing.assert_array_equal(rle.pixels, grey())
