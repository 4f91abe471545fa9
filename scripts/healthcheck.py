"""Exit 0 when the dashboard on this machine answers /_stcore/health, else 1.

The Docker HEALTHCHECK runs it (python:3.11-slim has no curl); tests/test_deploy.py runs the
same line against a live server so it cannot silently break.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def dashboard_is_healthy(port: str) -> bool:
    """Whether Streamlit's health route on loopback says ``ok``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=TIMEOUT_S) as reply:
            return reply.status == 200 and reply.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if dashboard_is_healthy(os.environ.get("PORT") or "8501") else 1)
