"""MURA Lens inference core: data, store, model, cam, eval, scoping and datamap, by concern, and the
command lines (``python -m core.<name>``) as thin modules at this level.

Nothing in this package imports Streamlit; the dashboard is one client of it, the CLIs another.
"""
