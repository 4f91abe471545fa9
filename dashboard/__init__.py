"""Streamlit dashboard of MURA Lens: entry point, shared state and UI pieces."""
