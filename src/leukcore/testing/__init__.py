"""Reusable test helpers (import pytest; for test suites only).

* :mod:`leukcore.testing.slides` — :class:`~leukcore.testing.slides.SlideConformance`,
  the behaviour every slide reader must have, plus helpers to get real sample fields
  and count native reads.
* :mod:`leukcore.testing.bigslide` — :func:`~leukcore.testing.bigslide.write_repeated_tile_slide`,
  huge valid pyramidal OME-TIFFs in seconds for laziness tests and benchmarks.
"""
