"""core.data.imaging counts bytes, not only pixels: a legal-size upload adds at most DECODE_BUDGET_BYTES
while it decodes, one whose decode would need more is refused from its header in one sentence, and
the decodes of a process share TOTAL_DECODE_BYTES (issue 25, item 2).

Peak memory is measured in a child Python (VmHWM around the calls), as in test_decompression_bombs.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from core.data import imaging
from core.data.imaging import DECODE_BUDGET_BYTES, RadiographDecodeError, load_radiograph
from tests.bad_inputs import encode_dicom, encode_image
from tests.test_imaging import assert_one_sentence

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/self/status")

REPO_ROOT = Path(__file__).resolve().parent.parent
_CHILD = r"""
import json, sys, threading
from core.data.imaging import RadiographDecodeError, load_radiograph

def peak():
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
outcomes = []

def decode():
    try:
        outcomes.append(load_radiograph(data).pixels.shape)
    except RadiographDecodeError as exc:
        outcomes.append(str(exc))

before = peak()
threads = [threading.Thread(target=decode) for _ in range(int(sys.argv[2]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"outcomes": [list(o) if isinstance(o, tuple) else o for o in outcomes],
                  "peak_growth": peak() - before}))
"""


def decode_in_child(data: bytes, tmp_path: Path, copies: int = 1) -> dict:
    """``copies`` threads decoding ``data`` at once in a fresh Python: outcomes and peak RSS growth."""
    path = tmp_path / "upload"
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(copies)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def rescaled_windowed_dicom(height: int, width: int) -> bytes:
    """A deflated 12-bit DICOM with rescale slope/intercept and a window: the pydicom steps that made
    float64 copies of the whole image (+1.1 GB at 40 MP)."""
    y, x = np.mgrid[0:height, 0:width]
    stored = ((x * 7 + y * 3) % 4096).astype(np.uint16)
    dataset = pydicom.dcmread(
        io.BytesIO(
            encode_dicom(
                stored, bits_stored=12, RescaleSlope=0.5, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=1500
            )
        )
    )
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def large_dicom() -> bytes:
    return rescaled_windowed_dicom(5000, 4000)  # 20 MP, 16 bits: 40 MB of samples in a file of 0.3 MB


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_a_rescaled_windowed_16_bit_dicom_stays_within_a_few_bytes_per_pixel(
    large_dicom: bytes, tmp_path: Path
) -> None:
    measured = decode_in_child(large_dicom, tmp_path)
    assert measured["outcomes"] == [[5000, 4000]]
    # The samples (2 B/px), one transient copy, the uint8 result (1 B/px) and strips; it was 27 B/px.
    assert measured["peak_growth"] < 6 * 20_000_000, measured


@pytest.mark.slow  # measures peak memory in a fresh interpreter
def test_four_large_decodes_at_once_share_the_process_budget(large_dicom: bytes, tmp_path: Path) -> None:
    measured = decode_in_child(large_dicom, tmp_path, copies=4)
    assert measured["outcomes"] == [[5000, 4000]] * 4
    assert measured["peak_growth"] < imaging.TOTAL_DECODE_BYTES, measured


def test_strip_wise_luts_give_the_whole_image_result(large_dicom: bytes) -> None:
    """The LUTs are pointwise, so running them a strip at a time changes no pixel."""
    dataset = pydicom.dcmread(io.BytesIO(large_dicom))
    whole = apply_voi_lut(apply_modality_lut(dataset.pixel_array[:1500], dataset), dataset)
    low, high = float(whole.min()), float(whole.max())
    expected = np.rint(np.clip((whole - low) * (255.0 / (high - low)), 0, 255)).astype(np.uint8)
    dataset.Rows = 1500  # the first 1,500 rows: 6 MP, several strips
    dataset.PixelData = dataset.PixelData[: 1500 * 4000 * 2]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    decoded = load_radiograph(buffer.getvalue())
    assert decoded.notes == ("DICOM window (VOI LUT) applied",)
    assert np.abs(decoded.pixels.astype(int) - expected).max() <= 1  # float32 strips vs float64: rounding only


def progressive_jpeg_claiming(width: int, height: int) -> bytes:
    """A colour progressive JPEG whose frame header (SOF2) says ``width`` x ``height``: a decoder
    would hold every coefficient of that size; only the header is crafted."""
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    frame = bytearray(encode_image(Image.fromarray(rgb), "JPEG", progressive=True, quality=80))
    sof = frame.index(b"\xff\xc2")
    frame[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(frame)


def j2k_dicom_claiming(width: int, height: int) -> bytes:
    """A 16-bit JPEG 2000 DICOM whose header and codestream agree on ``width`` x ``height`` (headers
    crafted): within the pixel cap, but OpenJPEG's 32-bit buffer would go past the byte budget."""
    stored = np.zeros((64, 64), dtype=np.uint16)
    frame = bytearray(encode_image(Image.fromarray(stored), "JPEG2000", no_jp2=True, irreversible=False))
    frame[8:16] = struct.pack(">II", width, height)  # Xsiz, Ysiz
    frame[24:32] = struct.pack(">II", width, height)  # one tile of that size
    return encode_dicom(stored, transfer_syntax=JPEG2000Lossless, frames=[bytes(frame)], Rows=height, Columns=width)


@pytest.mark.slow  # measures peak memory in a fresh interpreter
@pytest.mark.parametrize(
    "data",
    [progressive_jpeg_claiming(6000, 6600), j2k_dicom_claiming(6000, 6600)],
    ids=["40 MP progressive colour JPEG", "40 MP 16-bit JPEG 2000 DICOM"],
)
def test_a_decode_over_the_byte_budget_is_refused_from_its_header(data: bytes, tmp_path: Path) -> None:
    measured = decode_in_child(data, tmp_path)
    (outcome,) = measured["outcomes"]
    assert f"more than the {DECODE_BUDGET_BYTES // 2**20} MB this server allows one image" in outcome
    assert_one_sentence(outcome)
    assert measured["peak_growth"] < 16 * 2**20, measured


def test_a_decode_waits_for_its_share_then_says_the_server_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = imaging._DecodeBudget(100)
    monkeypatch.setattr(imaging, "_DECODE_WAIT_SECONDS", 0.2)
    released = threading.Event()

    def hold() -> None:
        with budget.reserve(80):
            released.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    with pytest.raises(RadiographDecodeError, match="busy") as caught:
        with budget.reserve(30):
            pass
    assert_one_sentence(str(caught.value))
    released.set()
    holder.join()
    with budget.reserve(100):  # all of it is free again
        pass
