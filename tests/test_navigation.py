"""dashboard.navigation: one table of pages behind st.navigation, st.switch_page and st.page_link.
(kept_widget is exercised wherever a value must survive a page switch: tests/test_app_performance.py,
tests/test_app_model_compare.py, tests/test_app_browse_overview.py.)"""

from __future__ import annotations

from pathlib import Path

from dashboard import navigation
from tests.app_pages import assert_clean, start_app


def test_every_page_file_is_in_the_table_once() -> None:
    files = [spec.file for spec in navigation.PAGES]
    assert sorted(files) == sorted(path.name for path in navigation.PAGES_DIR.glob("*.py"))
    url_paths = [spec.url_path for spec in navigation.PAGES]
    assert len(set(url_paths)) == len(url_paths) == len(set(files))


def test_overview_links_lead_to_the_pages_of_the_table(use_scratch_weights: Path) -> None:
    at = start_app()
    assert_clean(at)
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    assert links == {
        "Explain a radiograph": navigation.EXPLAIN,
        "Browse studies": navigation.BROWSE,
        "See performance": navigation.PERFORMANCE,
    }
