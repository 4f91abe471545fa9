"""data_samples/make_fracatlas_samples.py and the real FracAtlas radiographs it committed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.data import fracatlas
from data_samples import make_fracatlas_samples as samples
from tests.fake_fracatlas import make_fake_fracatlas

SHARED_FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "fracatlas"


def test_rule_draws_each_category_leaves_copies_out_and_repeats(tmp_path: Path) -> None:
    source = make_fake_fracatlas(tmp_path / "source")
    chosen = samples.write_samples(source, tmp_path / "out")
    again = samples.write_samples(source, tmp_path / "again")
    assert chosen["file"].tolist() == again["file"].tolist()
    # The fake root's last two images are one radiograph: neither may be picked.
    assert not set(chosen["file"]) & {"images/IMG0000023.jpg", "images/IMG0000024.jpg"}
    assert chosen["category"].nunique() == len(samples.CATEGORIES)
    out = fracatlas.resolve_root(tmp_path / "out")
    copied = fracatlas.read_images(out)
    assert copied["file"].tolist() == chosen["file"].tolist()
    source_labels = pd.read_csv(source / "labels.csv").set_index("file")
    pd.testing.assert_frame_equal(pd.read_csv(out / "labels.csv").set_index("file"), source_labels.loc[chosen["file"]])
    outlines = fracatlas.read_outlines(out)
    assert set(outlines.files()) == set(copied.loc[copied["fractured"] == 1, "file"])
    assert (outlines.mask(outlines.files()[0]) == fracatlas.read_outlines(source).mask(outlines.files()[0])).all()
    assert "CC BY 4.0" in (out / "README.md").read_text()


def test_committed_samples_are_a_credited_fracatlas_root() -> None:
    root = fracatlas.resolve_root(samples.DEFAULT_OUT)
    images = fracatlas.read_images(root)
    assert 12 <= len(images) <= 16 and len(images) == len(pd.read_csv(root / "labels.csv"))
    assert {"hand", "shoulder", "leg/hip"} <= set(images["region"])
    assert images["hardware"].any() and (images["fractured"] == 0).any()
    outlines = fracatlas.read_outlines(root)
    assert set(outlines.files()) == set(images.loc[images["fractured"] == 1, "file"])
    readme = (root / "README.md").read_text()
    for credit in ("Abedeen", "10.1038/s41597-023-02432-4", "CC BY 4.0", "resized"):
        assert credit in readme


@pytest.mark.slow  # redraws the samples from the real FracAtlas copy
@pytest.mark.skipif(
    not (SHARED_FRACATLAS / "labels.csv").is_file(),
    reason="no FracAtlas copy at ../shared/fracatlas to redraw the samples from",
)
def test_committed_samples_are_what_the_rule_draws(tmp_path: Path) -> None:
    chosen = samples.write_samples(fracatlas.resolve_root(SHARED_FRACATLAS), tmp_path / "out")
    committed = fracatlas.read_images(fracatlas.resolve_root(samples.DEFAULT_OUT))
    assert chosen["file"].tolist() == committed["file"].tolist()
    for file in chosen["file"]:
        assert (tmp_path / "out" / file).read_bytes() == (samples.DEFAULT_OUT / file).read_bytes()
