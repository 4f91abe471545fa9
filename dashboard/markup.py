"""Text from outside the app (folder names, messages that quote them) shown literally in markdown."""

from __future__ import annotations

import re

__all__ = ["escape_markdown"]

# Every ASCII punctuation mark CommonMark lets a backslash escape that could start markup
# (links, emphasis, code, HTML, Streamlit's :colour[...] and $maths$).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&])")


def escape_markdown(text: str) -> str:
    """``text`` backslash-escaped so st.markdown, st.caption and st.error show it as typed.

    Hand-written: Streamlit has no public escape function.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
