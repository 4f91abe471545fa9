"""MURA Lens: the Streamlit entry point (``streamlit run dashboard/app.py``).

Builds the shared sidebar (model and MURA folder), then hands over to the chosen page with
st.navigation. The sidebar lives here, not in the pages, so its choices survive page switches:
the model selector is a keyed widget rendered on every run, and the validated MURA folder is
stored in st.session_state under state.MURA_ROOT_KEY. A deployer's MURA_LENS_LOCK_DATA=1 replaces
the folder box by MURA_ROOT, so visitors of a public server cannot name folders of the server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts only dashboard/ on sys.path; hosts that run the app
# without installing this package (Streamlit Community Cloud) need the checkout's root too.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

# The CAM stack is imported here, before any page: two sessions of a fresh server importing pytorch_grad_cam
# through different pages at the same moment deadlocked on its circular imports (two browser tabs at once).
import core.cam.explain  # noqa: E402, F401
from core.data import mura  # noqa: E402 - needs the path set above
from core.model.checkpoint import DEFAULT_MODEL  # noqa: E402
from core.model.prediction import configure_threads  # noqa: E402
from dashboard import navigation, state, warmup  # noqa: E402
from dashboard.markup import escape_markdown  # noqa: E402

# Widget keys. The chosen values live under plain keys (state.MODEL_KEY, MURA_TEXT_KEY): see
# navigation.kept_widget.
MODEL_WIDGET_KEY = "model_select"
MURA_INPUT_KEY = "mura_root_input"
MURA_TEXT_KEY = "mura_root_text"
#: What visitors see when the locked MURA_ROOT cannot be used (the reason goes to the server log).
LOCKED_ROOT_UNUSABLE = "The server's MURA folder cannot be used right now; the app shows its synthetic samples."


def model_selector() -> None:
    """Pick a model folder under weights/; the choice lives in session_state[state.MODEL_KEY]."""
    models = state.available_models()
    if not models:
        st.sidebar.error("No model found: the weights folder has no model with a checkpoint and a model card.")
        return
    if st.session_state.get(state.MODEL_KEY) not in models:
        st.session_state[state.MODEL_KEY] = DEFAULT_MODEL if DEFAULT_MODEL in models else models[0]
    st.sidebar.selectbox(
        "Model",
        models,
        **navigation.kept_widget(MODEL_WIDGET_KEY, state.MODEL_KEY, None),
        help="A folder under weights/ with a checkpoint, a model card and cached evaluation.",
    )


NO_MURA_CAPTION = (
    "Data: real FracAtlas radiographs (CC BY 4.0, resized; Abedeen et al., Scientific Data 2023, "
    "doi:10.1038/s41597-023-02432-4) and the app's synthetic samples"
)


def mura_root_input() -> None:
    """The MURA folder, stored as a str or None: typed (default MURA_ROOT) and validated, or,
    when the deployer locked it (MURA_LENS_LOCK_DATA=1), MURA_ROOT with no box to type in."""
    if mura.data_folder_locked():
        root, reason = state.locked_mura_root()
        if reason:
            st.sidebar.warning(LOCKED_ROOT_UNUSABLE)
        caption = "Data: the server's MURA folder" if root else NO_MURA_CAPTION
    else:
        kept = navigation.kept_widget(MURA_INPUT_KEY, MURA_TEXT_KEY, os.environ.get("MURA_ROOT", ""))
        text = st.sidebar.text_input(
            "MURA v1.1 folder",
            **kept,
            placeholder="/data/MURA-v1.1",
            help="Your own copy of Stanford's MURA v1.1 (the folder holding valid_image_paths.csv). "
            "Leave empty to use the real FracAtlas radiographs and synthetic samples shipped with the app.",
        ).strip()
        root, reason = state.resolve_mura_root(text) if text else (None, None)
        if reason:
            st.sidebar.error(escape_markdown(reason))
        caption = f"Data: MURA folder {escape_markdown(str(root))}" if root else NO_MURA_CAPTION
    st.session_state[state.MURA_ROOT_KEY] = str(root) if root else None
    st.sidebar.caption(caption)


def main() -> None:
    """Set up the page and the sidebar's model and MURA-folder inputs, then run the chosen page."""
    st.set_page_config(page_title="MURA Lens", page_icon=":material/radiology:", layout="wide")
    # torch's thread count is per thread here and every session runs in its own script thread:
    # set it on each run (cheap) so every session computes with the same count.
    configure_threads()
    chosen = st.navigation(navigation.all_pages())
    st.sidebar.title("MURA Lens")
    model_selector()
    mura_root_input()
    try:
        chosen.run()
    finally:  # after the first page is drawn (or stopped): warm the slow pages' caches in the background, once
        warmup.start()


main()
