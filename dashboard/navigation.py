"""Moving between pages: the one table of pages, the st.Page objects built from it, and widget values
that survive a page switch.

st.navigation, st.switch_page and st.page_link all take the st.Page objects of :func:`page` and
:func:`all_pages`, so a page's file, title, icon and URL are written once (:data:`PAGES`) and a
renamed file fails where the table is read, not in a path string on another page. The objects are
built once per session (st.Page needs a running script and carries per-run state that
st.navigation sets, so one shared set for every session would race) and kept in its session state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

__all__ = [
    "PAGES_DIR",
    "PageSpec",
    "PAGES",
    "OVERVIEW",
    "EXPLAIN",
    "BROWSE",
    "PERFORMANCE",
    "ERROR_ANALYSIS",
    "HEATMAP_ACCURACY",
    "QUIZ",
    "DATA_MAP",
    "MODEL_CARD",
    "all_pages",
    "page",
    "kept_widget",
]

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


@dataclass(frozen=True)
class PageSpec:
    """One page: its file under pages/, its title and icon in the menu, and its URL path (its name here)."""

    file: str
    title: str
    icon: str
    url_path: str


OVERVIEW = "overview"
EXPLAIN = "explain"
BROWSE = "browse"
PERFORMANCE = "performance"
ERROR_ANALYSIS = "error_analysis"
HEATMAP_ACCURACY = "heatmap_accuracy"
QUIZ = "quiz"
DATA_MAP = "data_map"
MODEL_CARD = "model_card"
#: Every page in menu order; the first is the default, served at "/". URL paths are the file stems,
#: as Streamlit infers them, so links people saved before the table existed still work.
PAGES = (
    PageSpec("overview.py", "Overview", ":material/home:", OVERVIEW),
    PageSpec("explain.py", "Explain", ":material/visibility:", EXPLAIN),
    PageSpec("browse.py", "Browse", ":material/photo_library:", BROWSE),
    PageSpec("performance.py", "Performance", ":material/monitoring:", PERFORMANCE),
    PageSpec("error_analysis.py", "Error analysis", ":material/rule:", ERROR_ANALYSIS),
    PageSpec("heatmap_accuracy.py", "Heat-map accuracy", ":material/my_location:", HEATMAP_ACCURACY),
    PageSpec("data_map.py", "Data map", ":material/scatter_plot:", DATA_MAP),
    PageSpec("quiz.py", "Read it yourself", ":material/quiz:", QUIZ),
    PageSpec("model_card.py", "Model card", ":material/description:", MODEL_CARD),
)
_BUILT_KEY = "_navigation_pages"


def _built() -> dict[str, StreamlitPage]:
    """This session's st.Page objects by URL path, built on its first run."""
    built = st.session_state.get(_BUILT_KEY)
    if built is None:
        built = {
            spec.url_path: st.Page(
                PAGES_DIR / spec.file, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=index == 0
            )
            for index, spec in enumerate(PAGES)
        }
        st.session_state[_BUILT_KEY] = built
    return built


def all_pages() -> list[StreamlitPage]:
    """Every page, in menu order, for st.navigation."""
    return list(_built().values())


def page(url_path: str) -> StreamlitPage:
    """The page named by its URL path (:data:`EXPLAIN`, ...), for st.switch_page and st.page_link."""
    return _built()[url_path]


def _store(widget_key: str, store_key: str) -> None:
    """on_change: copy the widget's new value to its store before the script reruns."""
    st.session_state[store_key] = st.session_state[widget_key]


def kept_widget(widget_key: str, store_key: str, default: object) -> dict[str, object]:
    """Keyword arguments (key, on_change, args) for a widget whose value survives page switches.

    Streamlit drops a widget's value on runs of pages that do not draw it, and when st.switch_page
    reruns without the browser's widget states. So the value lives under a plain ``store_key``
    (``default`` until the user changes it): it is copied into the widget before the widget is
    drawn, and back by on_change. Writing ``store_key`` (a reset button) sets the widget too.
    """
    st.session_state[widget_key] = st.session_state.get(store_key, default)
    return {"key": widget_key, "on_change": _store, "args": (widget_key, store_key)}
