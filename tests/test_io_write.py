"""write_slide: formats, metadata, chunked (never whole) computation, atomicity; conversion rules."""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile

from leukcore.io import WriteOptions, open_slide, write_slide
from leukcore.io.convert import to_rgb8
from leukcore.io.write import pyramid_shapes
from leukcore.testing.slides import sample_field


def test_pyramid_shapes_halve_with_floor():
    assert pyramid_shapes((1300, 1700), 512) == [(1300, 1700), (650, 850), (325, 425)]
    assert pyramid_shapes((100, 100), 512) == [(100, 100)]


@pytest.mark.parametrize(
    "suffix,fmt", [(".ome.tif", "ome-tiff"), (".tiff", "ome-tiff"), (".ome.zarr", "ome-zarr"), (".zarr", "ome-zarr")]
)
def test_format_from_suffix(tmp_path, suffix, fmt):
    p = tmp_path / f"x{suffix}"
    write_slide(p, sample_field(1, "bccd"), mpp=0.3, tile=128)
    with open_slide(p) as s:
        assert s.format == fmt and s.mpp == pytest.approx(0.3)
        np.testing.assert_array_equal(s.levels[0].compute(), sample_field(1, "bccd"))


def test_unknown_suffix_and_bad_args(tmp_path):
    img = sample_field(0, "bccd")
    with pytest.raises(ValueError, match="suffix"):
        write_slide(tmp_path / "x.png", img)
    with pytest.raises(ValueError, match="tile"):
        write_slide(tmp_path / "x.ome.tif", img, tile=100)
    with pytest.raises(ValueError, match="compression"):
        write_slide(tmp_path / "x.ome.tif", img, compression="rar")
    with pytest.raises(ValueError, match="compression"):
        write_slide(tmp_path / "x.ome.zarr", img, compression="jpeg")
    with pytest.raises(ValueError, match="5 channels"):
        write_slide(tmp_path / "x.ome.tif", np.zeros((8, 8, 5), np.uint8))
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_metadata_attribution_and_resolution(tmp_path):
    p = tmp_path / "m.ome.tif"
    write_slide(
        p,
        sample_field(0, "all4class"),
        mpp=0.46,
        tile=128,
        options=WriteOptions(description="four-class field", attribution="CC BY 4.0 Aria et al."),
    )
    with tifffile.TiffFile(p) as tif:
        assert tif.is_ome
        assert 'PhysicalSizeX="0.46"' in tif.ome_metadata
        assert "CC BY 4.0 Aria et al." in tif.ome_metadata
        assert tif.pages[0].tags["Copyright"].value == "CC BY 4.0 Aria et al."
        assert tif.pages[0].tags["ResolutionUnit"].value == 3
    with open_slide(p) as s:
        assert "four-class field" in s.metadata["ome_description"]


def test_zarr_attributes(tmp_path):
    import zarr

    p = tmp_path / "m.ome.zarr"
    write_slide(
        p,
        sample_field(0, "bccd"),
        mpp=0.085,
        tile=128,
        ngff_version="0.5",
        options=WriteOptions(attribution="MIT shenggan"),
    )
    g = zarr.open_group(str(p), mode="r")
    ms = g.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.085, 0.085]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == pytest.approx([1.0, 0.17, 0.17])
    assert g.attrs["leukcore"]["attribution"] == "MIT shenggan"


def test_mpp_none_round_trip(tmp_path):
    p = tmp_path / "n.ome.tif"
    write_slide(p, sample_field(0, "bccd"), tile=128)
    with open_slide(p) as s:
        assert s.mpp is None and s.mpp_source is None
    with open_slide(p, mpp=0.2) as s:
        assert s.mpp == 0.2 and s.mpp_source == "user"


def test_slide_input_keeps_mpp(tmp_path):
    a = tmp_path / "a.ome.zarr"
    write_slide(a, sample_field(2, "bccd"), mpp=0.085, tile=128)
    b = tmp_path / "b.ome.tif"
    with open_slide(a) as s:
        write_slide(b, s, tile=128)
    with open_slide(b) as t:
        assert t.mpp == pytest.approx(0.085)
        np.testing.assert_array_equal(t.levels[0].compute(), sample_field(2, "bccd"))


class _CountingGetter:
    """Array-like that records every window requested from it."""

    ndim, dtype = 3, np.dtype(np.uint8)

    def __init__(self, img):
        self.img, self.shape, self.calls = img, img.shape, []

    def __getitem__(self, key):
        self.calls.append(key)
        return self.img[key]


def test_written_chunk_by_chunk_never_whole(tmp_path):
    img = np.tile(sample_field(0, "bccd"), (3, 3, 1))  # 1440 x 1920
    src = _CountingGetter(img)
    lazy = da.from_array(src, chunks=(256, 256, 3), asarray=False, fancy=False, meta=np.empty((0, 0, 3), np.uint8))
    p = tmp_path / "c.ome.tif"
    with dask.config.set(scheduler="synchronous"):
        write_slide(p, lazy, mpp=0.1, tile=256, compression="zlib")
    # every source read is one 256 x 256 chunk, each read exactly once (no full-image compute)
    sizes = {(k[0].stop - k[0].start, k[1].stop - k[1].start) for k in src.calls}
    assert max(h * w for h, w in sizes) <= 256 * 256
    assert len(src.calls) == len(set(map(repr, src.calls))) == (1440 // 256 + 1) * (1920 // 256 + 1)
    with open_slide(p) as s:
        np.testing.assert_array_equal(s.levels[0].compute(), img)


def test_failed_write_leaves_nothing(tmp_path):
    class Boom:
        ndim, dtype, shape = 3, np.dtype(np.uint8), (2048, 2048, 3)

        def __getitem__(self, key):
            if key[0].start >= 1024:
                raise RuntimeError("source failed mid-write")
            return np.zeros((key[0].stop - key[0].start, key[1].stop - key[1].start, 3), np.uint8)

    lazy = da.from_array(Boom(), chunks=(512, 512, 3), asarray=False, fancy=False, meta=np.empty((0, 0, 3), np.uint8))
    for name in ("f.ome.tif", "f.ome.zarr"):
        with pytest.raises(RuntimeError, match="mid-write"):
            write_slide(tmp_path / name, lazy, tile=512)
    assert sorted(os.listdir(tmp_path)) == []


def test_overwrite_existing(tmp_path):
    p = tmp_path / "o.ome.zarr"
    write_slide(p, np.zeros((64, 64, 3), np.uint8), tile=32)
    write_slide(p, np.full((64, 64, 3), 7, np.uint8), tile=32)
    with open_slide(p) as s:
        assert (s.levels[0].compute() == 7).all()


# --------------------------------------------------------------- conversion rules
def test_convert_grey_replicated():
    g = np.array([[0, 100], [200, 255]], np.uint8)
    out = to_rgb8(g)
    assert out.shape == (2, 2, 3) and (out[..., 0] == g).all() and (out[..., 2] == g).all()


def test_convert_rgba_composited_on_white():
    px = np.array([[[200, 0, 0, 255], [200, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)
    out = to_rgb8(px)
    assert out[0, 0].tolist() == [200, 0, 0]  # opaque: unchanged
    assert out[0, 1].tolist() == [255, 255, 255]  # transparent: white background
    assert out[0, 2].tolist() == [127, 127, 127]  # half: halfway to white


def test_convert_16bit_by_dtype_max_not_percentile():
    a = np.array([[0, 257, 65535, 1000]], np.uint16)
    assert to_rgb8(a)[0, :, 0].tolist() == [0, 1, 255, 4]


def test_convert_float_bool_and_minwhite():
    assert to_rgb8(np.array([[0.0, 0.5, 2.0, np.nan]], np.float32))[0, :, 0].tolist() == [0, 128, 255, 0]
    assert to_rgb8(np.array([[True, False]]))[0, :, 1].tolist() == [255, 0]
    assert to_rgb8(np.array([[0, 255]], np.uint8), min_is_white=True)[0, :, 0].tolist() == [255, 0]


def test_read_conversions_through_files(tmp_path):
    from PIL import Image

    rgb = sample_field(0, "bccd")[:64, :64]
    grey16 = rgb[..., 1].astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "g16.tif", grey16)
    with open_slide(tmp_path / "g16.tif") as s:
        out = s.levels[0].compute()
        assert (out[..., 0] == rgb[..., 1]).all() and (out[..., 2] == rgb[..., 1]).all()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s:
        out = s.levels[0].compute()
        assert (out[:10, :10] == 255).all() and (out[20:, 20:] == rgb[20:, 20:]).all()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    with open_slide(tmp_path / "p.png") as s:
        assert np.abs(s.levels[0].compute().astype(int) - rgb).mean() < 8
    Image.fromarray(grey16.astype(np.uint16)).save(tmp_path / "g16.png")
    with open_slide(tmp_path / "g16.png") as s:
        assert np.abs(s.levels[0].compute()[..., 0].astype(int) - rgb[..., 1]).max() <= 1
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, 2, 0).copy(), photometric="rgb", planarconfig="separate")
    with open_slide(tmp_path / "planar.tif") as s:
        np.testing.assert_array_equal(s.levels[0].compute(), rgb)


def test_disk_buffered_levels_match_in_memory(tmp_path, monkeypatch):
    import leukcore.io.pyramid as w  # the level buffers (write_slide's pyramid)

    img = np.tile(sample_field(3, "bccd"), (2, 2, 1))[:950, :1270]  # odd-ish sizes
    write_slide(tmp_path / "mem.ome.tif", img, tile=128)
    monkeypatch.setattr(w, "_MEM_BUFFER_BYTES", 1000)  # force every level buffer to disk
    write_slide(tmp_path / "disk.ome.tif", img, tile=128)
    with open_slide(tmp_path / "mem.ome.tif") as a, open_slide(tmp_path / "disk.ome.tif") as b:
        assert a.n_levels == b.n_levels == 5
        for la, lb in zip(a.levels, b.levels, strict=False):
            np.testing.assert_array_equal(la.compute(), lb.compute())
        # level 1 is the 2x2 mean of level 0 (rounded)
        exp = (img[:950, :1270].reshape(475, 2, 635, 2, 3).astype(np.uint16).sum((1, 3)) + 2) // 4
        np.testing.assert_array_equal(b.levels[1].compute(), exp.astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.ome.tif", "mem.ome.tif"]


@pytest.mark.slow
def test_write_and_read_under_a_distributed_client(tmp_path):
    """A dask.distributed Client becomes dask's default scheduler: write_slide's band store and
    Slide reads must still run locally (they wrote/returned uninitialised pixels before the fix)."""
    distributed = pytest.importorskip("distributed")

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (600, 700, 3), dtype=np.uint8)
    lazy = da.from_array(img, chunks=(128, 128, 3))
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        p = write_slide(tmp_path / "c.ome.tif", lazy, mpp=0.5, tile=256)
        with open_slide(p) as s:
            np.testing.assert_array_equal(s.read_region(0, 0, 0, 600, 700), img)
            assert s.thumbnail(350).shape[:2] == (300, 350)
            np.testing.assert_array_equal(s.read_region(1, 0, 0, 300, 350), s.thumbnail(350))
