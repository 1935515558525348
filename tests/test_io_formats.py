"""Every readable format passes the shared SlideConformance suite (real smear fields as content)."""

from __future__ import annotations

import os

import numpy as np
import tifffile

from leukcore.io import WriteOptions, open_slide, write_slide
from leukcore.testing.slides import SlideConformance, sample_field


def _mosaic_ref(h=700, w=900):
    """A real-content reference image: bundled BCCD + four-class fields tiled into (h, w, 3)."""
    a = sample_field(0, "bccd")
    b = sample_field(3, "bccd")
    c = sample_field(0, "all4class")
    ref = np.full((h, w, 3), 240, np.uint8)
    ref[:480, :640] = a
    ref[h - 224 :, w - 224 :] = c
    ref[480:h, : min(640, w)] = b[: h - 480, : min(640, w)]
    return ref


REF = None


def ref():
    global REF
    if REF is None:
        REF = _mosaic_ref()
    return REF


class TestOmeTiffZlib(SlideConformance):
    expected_mpp = 0.25

    def make_slide(self, tmp_path):
        p = tmp_path / "s.ome.tif"
        if not p.exists():
            write_slide(p, ref(), mpp=0.25, tile=256, compression="zlib")
        return open_slide(p), ref()

    def test_has_subifd_pyramid(self, slide_dir):
        s, _ = self.make_slide(slide_dir)
        with s, tifffile.TiffFile(s.path) as tif:
            assert tif.is_ome and len(tif.series[0].levels) == s.n_levels > 1
            assert s.downsamples == [1.0, 2.0, 4.0][: s.n_levels]
            assert not s.metadata["computed_levels"]


class TestOmeTiffJpeg(SlideConformance):
    expected_mpp = 0.5
    atol = 3.0

    def make_slide(self, tmp_path):
        p = tmp_path / "s.ome.tiff"
        if not p.exists():
            write_slide(p, ref(), mpp=0.5, tile=128, compression="jpeg", options=WriteOptions(quality=92))
        return open_slide(p), ref()


class TestOmeZarrV04(SlideConformance):
    expected_mpp = 0.25

    def make_slide(self, tmp_path):
        p = tmp_path / "s.ome.zarr"
        if not p.exists():
            write_slide(p, ref(), mpp=0.25, tile=256, ngff_version="0.4")
        return open_slide(p), ref()

    def test_zarr_v2_layout(self, slide_dir):
        s, _ = self.make_slide(slide_dir)
        with s:
            assert (slide_dir / "s.ome.zarr" / ".zattrs").exists()
            assert s.metadata["zarr_format"] == 2 and s.metadata["ngff_version"] == "0.4"
            assert s.metadata["axes"] == "CYX"


class TestOmeZarrV05(SlideConformance):
    expected_mpp = 0.3

    def make_slide(self, tmp_path):
        p = tmp_path / "s.zarr"
        if not p.exists():
            write_slide(p, ref(), mpp=0.3, tile=256, ngff_version="0.5", compression="zstd")
        return open_slide(p), ref()

    def test_zarr_v3_layout(self, slide_dir):
        s, _ = self.make_slide(slide_dir)
        with s:
            assert (slide_dir / "s.zarr" / "zarr.json").exists()
            assert s.metadata["zarr_format"] == 3 and s.metadata["ngff_version"] == "0.5"


class TestOmeZarrYXC(SlideConformance):
    """A hand-made NGFF-like v0.5 image with y/x/c axes, nanometre units and no pyramid."""

    expected_mpp = 0.2

    def make_slide(self, tmp_path):
        import zarr

        p = tmp_path / "yxc.zarr"
        if not p.exists():
            g = zarr.open_group(str(p), mode="w", zarr_format=3)
            a = g.create_array("0", shape=ref().shape, chunks=(200, 300, 3), dtype="uint8")
            a[:] = ref()
            g.attrs["ome"] = {
                "version": "0.5",
                "multiscales": [
                    {
                        "axes": [
                            {"name": "y", "type": "space", "unit": "nanometer"},
                            {"name": "x", "type": "space", "unit": "nanometer"},
                            {"name": "c", "type": "channel"},
                        ],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [{"type": "scale", "scale": [200.0, 200.0, 1.0]}],
                            }
                        ],
                    }
                ],
            }
        return open_slide(p), ref()


class TestPlainTiffStripped(SlideConformance):
    """A single-page stripped TIFF with a resolution tag in inches."""

    expected_mpp = 25400 / 50000

    def make_slide(self, tmp_path):
        p = tmp_path / "plain.tif"
        if not p.exists():
            tifffile.imwrite(
                p, ref(), photometric="rgb", rowsperstrip=64, resolution=(50000, 50000), resolutionunit="INCH"
            )
        return open_slide(p), ref()


class TestAperioLikeSvs(SlideConformance):
    """A tiled TIFF with an Aperio ImageDescription (``MPP = ``) and a reduced-resolution page."""

    expected_mpp = 0.2527

    def make_slide(self, tmp_path):
        p = tmp_path / "aperio.svs"
        if not p.exists():
            r = ref()
            desc = (
                "Aperio Image Library v12.0.15 \r\n900x700 [0,0 900x700] (256x256) JPEG/RGB Q=70"
                "|AppMag = 40|MPP = 0.2527|Filename = test"
            )
            kw = dict(photometric="rgb", compression="zlib", metadata=None)
            with tifffile.TiffWriter(p) as tw:  # baseline, thumbnail, 4x level (the SVS page order)
                tw.write(r, tile=(256, 256), description=desc, **kw)
                tw.write(r[::8, ::8].copy(), description="Aperio Image Library v12.0.15 \r\nthumbnail", **kw)
                tw.write(
                    r[::4, ::4].copy(),
                    tile=(256, 256),
                    description="Aperio Image Library v12.0.15 \r\n225x175 -> 225x175",
                    **kw,
                )
        return open_slide(p), ref()

    def test_vendor_and_levels(self, slide_dir):
        s, _ = self.make_slide(slide_dir)
        with s:
            assert s.format == "svs" and s.vendor == "aperio"
            assert s.downsamples == [1.0, 4.0] and s.metadata["mpp_origin"] == "svs:MPP"


class TestPng(SlideConformance):
    expected_mpp = None
    lazy = True

    def make_slide(self, tmp_path):
        from PIL import Image

        p = tmp_path / "field.png"
        if not p.exists():
            Image.fromarray(ref()).save(p)
        return open_slide(p), ref()


class TestJpegField(SlideConformance):
    """A real JPEG field straight from the bundled data (as a user would open one)."""

    expected_mpp = None

    def make_slide(self, tmp_path):
        from PIL import Image

        from leukcore.testing.slides import sample_fields

        p = sample_fields("bccd")[1]
        with Image.open(p) as im:
            r = np.asarray(im.convert("RGB"))
        return open_slide(p), r


class TestBmp(SlideConformance):
    expected_mpp = None

    def make_slide(self, tmp_path):
        from PIL import Image

        p = tmp_path / "field.bmp"
        if not p.exists():
            Image.fromarray(ref()).save(p)
        return open_slide(p), ref()


class TestLargePlainImageGetsComputedLevels(SlideConformance):
    """A non-pyramidal image larger than 2048 px gets lazily computed lower levels."""

    expected_mpp = None

    def make_slide(self, tmp_path):
        p = tmp_path / "big.tif"
        big = np.tile(ref(), (4, 3, 1))  # 2800 x 2700
        if not p.exists():
            tifffile.imwrite(p, big, photometric="rgb", tile=(256, 256), compression="zlib")
        return open_slide(p), big

    def test_levels_computed(self, slide_dir):
        s, big = self.make_slide(slide_dir)
        with s:
            assert s.metadata["computed_levels"] and s.n_levels == 2
            lv1 = s.levels[1].compute()
            exp = big[:2800, :2700].reshape(1400, 2, 1350, 2, 3).astype(np.float32).mean((1, 3))
            assert np.abs(lv1.astype(np.float32) - exp).max() <= 1.0


class TestBioformats2rawLayout(SlideConformance):
    """OME-Zarr written by bioformats2raw: the image is the group ``0`` under the root."""

    expected_mpp = 0.25

    def make_slide(self, tmp_path):
        import zarr

        root = tmp_path / "b2r.zarr"
        if not root.exists():
            write_slide(tmp_path / "img.ome.zarr", ref(), mpp=0.25, tile=256, ngff_version="0.4")
            g = zarr.open_group(str(root), mode="w", zarr_format=2)
            g.attrs["bioformats2raw.layout"] = 3
            os.rename(tmp_path / "img.ome.zarr", root / "0")
        return open_slide(root), ref()
