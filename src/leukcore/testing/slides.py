"""Reusable conformance tests for slide readers (in the style of ``zarr.testing.store``).

Every format's tests subclass :class:`SlideConformance` and implement
:meth:`SlideConformance.make_slide`; pytest then runs all ``test_*`` methods
against that format::

    from leukcore.testing.slides import SlideConformance

    class TestMyFormat(SlideConformance):
        expected_mpp = 0.25
        def make_slide(self, tmp_path):
            path = write_my_format(tmp_path, REFERENCE)
            return open_slide(path), REFERENCE

This module imports pytest; it is only for tests.
"""

from __future__ import annotations

import json
import pickle
from typing import Optional

import numpy as np
import pytest

from ..io.lazy import LevelReader
from ..io.slide import PAD_VALUE, Slide

__all__ = ["SlideConformance", "sample_field", "sample_fields", "readers_of", "n_reads"]


def sample_fields(source: Optional[str] = None) -> list:
    """Paths of the real smear fields bundled in ``leukcore/data/sample`` (``source``: 'all4class' / 'bccd')."""
    from ..sample import bundled_fields

    return [f.path for f in bundled_fields() if source is None or f.source == source]


def sample_field(index: int = 0, source: str = "bccd") -> np.ndarray:
    """One bundled real field as an RGB uint8 array."""
    from PIL import Image

    with Image.open(sample_fields(source)[index]) as im:
        return np.asarray(im.convert("RGB"))


def readers_of(slide: Slide) -> list:
    """The :class:`LevelReader` objects under a slide's levels (for counting native reads)."""
    out = []
    for lv in slide.levels:
        graph = lv.__dask_graph__()
        for v in graph.values():
            obj = v
            for attr in ("value", "obj"):  # dask >= 2024.12 wraps literal values in DataNode
                obj = getattr(obj, attr, obj)
            if isinstance(obj, LevelReader) and all(obj is not r for r in out):
                out.append(obj)
    return out


def n_reads(slide: Slide) -> int:
    """Total native reads performed through a slide so far."""
    return sum(r.n_reads for r in readers_of(slide))


class SlideConformance:
    """Behaviour every slide reader must have.  Subclasses implement :meth:`make_slide`.

    Class attributes
    ----------------
    expected_mpp : float or None
        Level-0 pixel size the file declares (``None``: the reader must report ``None``).
    atol : int
        Tolerance against the reference for lossy codecs (max abs difference of the mean error).
    lazy : bool
        Whether opening must perform zero native reads.
    """

    expected_mpp: Optional[float] = None
    atol: float = 0.0
    lazy: bool = True

    def make_slide(self, tmp_path) -> tuple[Slide, Optional[np.ndarray]]:  # pragma: no cover - abstract
        """Create the format's file(s) under ``tmp_path`` (a per-class directory: reuse files that exist);
        return ``(open_slide(...), reference level 0 or None)``.
        """
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def slide_dir(cls, tmp_path_factory):
        """One directory per test class, so ``make_slide`` can write its file once and reuse it."""
        return tmp_path_factory.mktemp(cls.__name__)

    @pytest.fixture
    def slide_ref(self, slide_dir):
        slide, ref = self.make_slide(slide_dir)
        try:
            yield slide, ref
        finally:
            slide.close()

    # ------------------------------------------------------------ structure
    def test_levels_are_rgb_uint8_dask(self, slide_ref):
        import dask.array as da

        slide, _ = slide_ref
        assert slide.n_levels >= 1
        for lv in slide.levels:
            assert isinstance(lv, da.Array)
            assert lv.ndim == 3 and lv.shape[2] == 3
            assert lv.dtype == np.uint8

    def test_downsamples_consistent_with_shapes(self, slide_ref):
        slide, _ = slide_ref
        assert slide.downsamples[0] == 1.0
        assert len(slide.downsamples) == slide.n_levels
        assert all(b > a for a, b in zip(slide.downsamples, slide.downsamples[1:], strict=False))
        H, W = slide.shape
        for lv, ds in zip(slide.levels, slide.downsamples, strict=False):
            h, w = lv.shape[:2]
            assert abs(h - H / ds) <= 1 + 0.01 * h, (h, H, ds)
            assert abs(w - W / ds) <= 1 + 0.01 * w, (w, W, ds)

    def test_level0_matches_reference(self, slide_ref):
        slide, ref = slide_ref
        if ref is None:
            pytest.skip("no reference image for this format")
        got = slide.levels[0].compute()
        assert got.shape == ref.shape
        err = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        assert err.mean() <= self.atol, err.mean()
        if self.atol == 0:
            assert np.array_equal(got, ref)

    def test_read_region_equals_level_slicing(self, slide_ref):
        slide, _ = slide_ref
        rng = np.random.default_rng(0)
        for level in range(slide.n_levels):
            h, w = slide.level_shape(level)
            for _ in range(3):
                rh, rw = int(rng.integers(1, max(2, h // 2))), int(rng.integers(1, max(2, w // 2)))
                y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
                reg = slide.read_region(level, y, x, rh, rw)
                assert reg.shape == (rh, rw, 3) and reg.dtype == np.uint8
                np.testing.assert_array_equal(reg, slide.levels[level][y : y + rh, x : x + rw].compute())

    def test_out_of_bounds_is_padded(self, slide_ref):
        slide, _ = slide_ref
        h, w = slide.level_shape(0)
        reg = slide.read_region(0, -5, w - 7, 20, 20)
        assert reg.shape == (20, 20, 3)
        assert (reg[:5] == PAD_VALUE).all() and (reg[:, 7:] == PAD_VALUE).all()
        np.testing.assert_array_equal(reg[5:, :7], slide.levels[0][:15, w - 7 :].compute())
        far = slide.read_region(0, h + 100, w + 100, 8, 8)
        assert (far == PAD_VALUE).all()
        with pytest.raises(IndexError):
            slide.read_region(slide.n_levels, 0, 0, 4, 4)

    # ------------------------------------------------------------ metadata
    def test_mpp_from_metadata(self, slide_ref):
        slide, _ = slide_ref
        if self.expected_mpp is None:
            assert slide.mpp is None and slide.mpp_source is None
        else:
            assert slide.mpp == pytest.approx(self.expected_mpp, rel=1e-4)
            assert slide.mpp_source == "metadata"

    def test_mpp_override(self, slide_ref):
        slide, _ = slide_ref
        s2 = slide.with_mpp(0.123, "user")
        assert s2.mpp == 0.123 and s2.mpp_source == "user"
        assert s2.level_mpp(s2.n_levels - 1) == pytest.approx(0.123 * s2.downsamples[-1])
        with pytest.raises(ValueError):
            slide.with_mpp(-1.0)

    def test_info_is_json(self, slide_ref):
        slide, _ = slide_ref
        info = json.loads(json.dumps(slide.info()))
        assert info["format"] == slide.format
        assert [lv["shape"][:2] for lv in info["levels"]] == [list(slide.level_shape(i)) for i in range(slide.n_levels)]

    def test_thumbnail(self, slide_ref):
        slide, _ = slide_ref
        th = slide.thumbnail(64)
        assert th.dtype == np.uint8 and th.ndim == 3 and th.shape[2] == 3
        assert max(th.shape[:2]) <= 64

    # ------------------------------------------------------------ laziness / lifetime
    def test_opening_reads_no_pixels(self, slide_dir):
        slide, _ = self.make_slide(slide_dir)
        try:
            readers = readers_of(slide)
            assert readers, "slide levels are not backed by LevelReaders"
            if self.lazy:
                assert n_reads(slide) == 0
            before = n_reads(slide)
            slide.read_region(0, 0, 0, 4, 4)
            # a 4x4 region touches exactly one dask chunk -> one native read
            assert n_reads(slide) - before == 1
        finally:
            slide.close()

    def test_pickle_roundtrip(self, slide_ref):
        slide, _ = slide_ref
        lv = pickle.loads(pickle.dumps(slide.levels[0]))
        h, w = slide.level_shape(0)
        np.testing.assert_array_equal(
            lv[: min(h, 33), : min(w, 47)].compute(), slide.levels[0][: min(h, 33), : min(w, 47)].compute()
        )
        s2 = pickle.loads(pickle.dumps(slide))  # whole slides too (e.g. sent to dask workers)
        assert s2.mpp == slide.mpp and s2.downsamples == slide.downsamples
        np.testing.assert_array_equal(s2.read_region(0, 1, 2, 20, 30), slide.read_region(0, 1, 2, 20, 30))
        s2.close()

    def test_context_manager_closes(self, slide_dir):
        slide, _ = self.make_slide(slide_dir)
        with slide as s:
            assert s is slide
            s.read_region(0, 0, 0, 2, 2)
        assert slide._closer is None
        slide.close()  # idempotent
