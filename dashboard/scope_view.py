"""What the scope head says of uploaded views, cached, and shown before any verdict.

The head (core.scope) recognises the body part and flags images unlike the model's training
radiographs; Explain suggests (or, where the head earned it, pre-selects) the body part from it and
gives no verdict outside the scope.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from core.model.checkpoint import LoadedModel
from core.scoping.head import ScopeAssessment, ScopeHeadError, assess_images, fracture_scope_reason, head_for
from dashboard import views

__all__ = ["cached_scopes", "preselects", "show_scopes"]


@st.cache_data(show_spinner="Recognising the body part…", max_entries=256)
def _scopes(
    model: str, keys: tuple[str, ...], _loaded: LoadedModel, _images: Sequence[np.ndarray]
) -> list[ScopeAssessment] | None:
    return assess_images(_loaded, list(_images))


def cached_scopes(
    loaded: LoadedModel, images: Sequence[np.ndarray], colour: Sequence[bool] = ()
) -> list[ScopeAssessment] | None:
    """One assessment per image (None when the model has no scope head, or its head is unreadable).

    ``colour[i]`` marks an image decoded as visibly coloured: never a radiograph, whatever the head says.
    """
    try:
        scopes = _scopes(views.model_key(loaded), tuple(views.image_key(p) for p in images), loaded, tuple(images))
    except ScopeHeadError as exc:
        st.warning(f"Body-part recognition is unavailable: {exc}")
        return None
    if scopes is None:
        return None
    flags = list(colour) + [False] * (len(scopes) - len(colour))
    return [
        ScopeAssessment(s.probabilities, s.distance, s.distance_threshold, colour_image=flag)
        for s, flag in zip(scopes, flags, strict=True)
    ]


def show_scopes(names: Sequence[str], scopes: Sequence[ScopeAssessment], *, fracture_output: bool = False) -> None:
    """Each view's recognised body part in one line; views outside the scope, and forearm calls that may be
    a wrist, stand out. With ``fracture_output`` a view outside the abnormal output's scope but inside the
    fracture output's (a hand, a shoulder) says that the fracture reading still judges it."""
    for name, scope in zip(names, scopes, strict=True):
        if scope.forearm_or_wrist:  # not flagged, but no suggestion: the user names the body part
            st.warning(f"`{name}`: {scope.reason()}", icon=":material/help:")
        elif not scope.out_of_scope:
            st.caption(f"`{name}`: {scope.reason()}")
        elif fracture_output and fracture_scope_reason(scope) is None:
            st.warning(
                f"`{name}`: {scope.reason()} No *abnormal* verdict for it; the **fracture** output, trained on "
                "hands, wrists, forearms and shoulders too, reads it (see Fracture).",
                icon=":material/info:",
            )
        else:
            st.error(f"`{name}`: {scope.reason()}", icon=":material/block:")


def preselects(loaded: LoadedModel) -> bool:
    """Whether the model's scope head may pre-select the body part (it met its rule on MURA valid/)."""
    try:
        head = head_for(loaded)
    except ScopeHeadError:
        return False
    return head is not None and head.preselect
