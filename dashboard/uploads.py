"""Uploaded files -> radiographs, in memory, with one user-facing sentence per refused file.

Uploads are untrusted: the widget is capped (per file, tighter than or equal to
``server.maxUploadSize``; per study, in views and in bytes), the bytes go straight to
:func:`core.data.imaging.load_radiograph` (which
sniffs the format from the content, so the widget does not filter by extension: DICOM files
often have none, and a wrong extension is reported by the decoder, not by a Streamlit
exception), nothing is written to disk, and the file name is only ever shown after sanitising.
What is cached is display-sized (:func:`core.data.imaging.downsized`), so the process-wide decode cache
holds at most ``16 x 1024 x 1024`` bytes, whatever was uploaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.data.imaging import Radiograph, RadiographDecodeError, downsized, load_radiograph

__all__ = [
    "MAX_UPLOAD_MB",
    "MAX_VIEWS",
    "MAX_STUDY_MB",
    "UploadedView",
    "UploadRefusal",
    "safe_display_name",
    "decode_upload",
    "read_uploads",
    "upload_widget",
    "show_refusals",
]

#: Per-file cap of the Explain uploader (MB); .streamlit/config.toml caps the server at the same.
MAX_UPLOAD_MB = 20
#: Views accepted for one study (MURA studies have at most 11); more are refused, not truncated silently.
MAX_VIEWS = 12
#: Bytes decoded for one study, all views together: a dozen typical DICOM views, not a dozen 20 MB files.
MAX_STUDY_MB = 100
_NAME_LIMIT = 60
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^\w .()+-]")


@dataclass(frozen=True)
class UploadedView:
    """A decoded upload: its display-safe name and the radiograph."""

    name: str
    radiograph: Radiograph


@dataclass(frozen=True)
class UploadRefusal:
    """An upload that was refused, and the one sentence that says why."""

    name: str
    reason: str

    @property
    def message(self) -> str:
        """The refusal as one markdown line: the file's name in a code span, then the reason."""
        return f"`{self.name}`: {self.reason}"


def safe_display_name(raw_name: str) -> str:
    """The file's base name with anything but letters, digits, spaces and ``_.()+-`` replaced by ``_``.

    Browsers send whatever the user's file system holds (path-like, markdown, control or
    lone-surrogate characters); shown unescaped they could format the page or forge links.
    Callers show it inside a code span, so the underscores left are not markdown either.
    """
    base = re.split(r"[\\/]", raw_name)[-1]
    cleaned = _UNSAFE_NAME_CHARACTERS.sub("_", base).strip() or "unnamed file"
    if len(cleaned) <= _NAME_LIMIT:
        return cleaned
    keep = (_NAME_LIMIT - 1) // 2  # cut the middle: the start and the extension both identify a file
    return cleaned[:keep] + "…" + cleaned[-keep:]


# Display-sized (at most 1 MB of pixels each), few and briefly: the cache is shared by every session.
@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def _decode_cached(content_digest: str, _data: bytes, name: str) -> Radiograph:
    """Decoded once per content (digest-keyed), so slider-driven reruns do not decode again."""
    return downsized(load_radiograph(_data, filename=name))


def decode_upload(data: bytes, name: str) -> Radiograph:
    """Decode one upload's bytes; raises RadiographDecodeError with one sentence when refused."""
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise RadiographDecodeError(f"The file is larger than the {MAX_UPLOAD_MB} MB upload limit.")
    return _decode_cached(hashlib.sha256(data).hexdigest(), data, name)


def read_uploads(files: Sequence[UploadedFile]) -> tuple[list[UploadedView], list[UploadRefusal]]:
    """Decode every uploaded file; each failure becomes a refusal and never stops the others."""
    views: list[UploadedView] = []
    refusals: list[UploadRefusal] = []
    budget = MAX_STUDY_MB * 2**20
    for index, uploaded in enumerate(files):
        name = safe_display_name(uploaded.name)
        if index >= MAX_VIEWS:
            refusals.append(UploadRefusal(name, f"A study holds at most {MAX_VIEWS} views; this one was skipped."))
            continue
        if uploaded.size > budget:
            refusals.append(
                UploadRefusal(
                    name, f"The views of one study may total {MAX_STUDY_MB} MB; this one goes beyond and was skipped."
                )
            )
            continue
        budget -= uploaded.size
        try:
            views.append(UploadedView(name, decode_upload(uploaded.getvalue(), uploaded.name)))
        except RadiographDecodeError as exc:
            refusals.append(UploadRefusal(name, str(exc)))
    return views, refusals


def upload_widget(label: str, *, key: str) -> list[UploadedFile]:
    """The capped, multi-file uploader for the views of one study."""
    return st.file_uploader(
        label,
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
        key=key,
        help=(
            f"PNG, JPEG or DICOM (also TIFF, GIF, BMP, WebP), up to {MAX_UPLOAD_MB} MB each, "
            f"{MAX_VIEWS} views and {MAX_STUDY_MB} MB in all. Files stay in memory and are never stored; "
            "views larger than 1024 pixels are shrunk to that."
        ),
    )


def show_refusals(refusals: Sequence[UploadRefusal]) -> None:
    """One st.error per refused file: its name and the decoder's sentence."""
    for refusal in refusals:
        st.error(refusal.message)
