"""MURA Lens inference core: imaging, models, prediction, explanation, metrics.

Nothing in this package imports Streamlit; the dashboard is one client of it, the CLIs another.
"""
