"""npe2 sample data: the bundled sample smear (real fields, see leukcore/data/sample/ATTRIBUTION.md)."""

from __future__ import annotations

__all__ = ["sample_slide"]


def sample_slide() -> list[tuple]:
    """The sample whole-slide mosaic as a lazy multiscale image layer (built on first use into the cache)."""
    from leukcore.io import open_slide
    from leukcore.sample import sample_slide_path

    from ._reader import slide_layer_data

    slide = open_slide(sample_slide_path())
    return [slide_layer_data(slide, name="sample smear")]
