"""npe2 reader: each slide format -> lazy multiscale image layer with physical scale; results folders."""

import json

import numpy as np
import pytest

from leukcore.io import SlideError, write_slide
from napari_leuk._reader import napari_get_reader, read_results, read_slide

pytestmark = pytest.mark.napari


def _image(h=600, w=800):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(yy * 255 // h), (xx * 255 // w), np.full_like(yy, 200)], -1).astype(np.uint8)


def _write(tmp_path, kind, img):
    from PIL import Image

    if kind == "ome.tif":
        return write_slide(tmp_path / "s.ome.tif", img, mpp=0.5, tile=256), 0.5
    if kind == "ome.zarr":
        return write_slide(tmp_path / "s.ome.zarr", img, mpp=0.5, tile=256), 0.5
    if kind == "ome.zarr-v0.5":
        return write_slide(tmp_path / "s5.ome.zarr", img, mpp=0.25, tile=256, ngff_version="0.5"), 0.25
    if kind == "svs":  # tiled TIFF with an Aperio description and a 4x page (the SVS layout)
        import tifffile

        p = tmp_path / "aperio.svs"
        desc = (
            "Aperio Image Library v12.0.15 \r\n800x600 [0,0 800x600] (256x256) JPEG/RGB Q=70"
            "|AppMag = 40|MPP = 0.2527|Filename = test"
        )
        kw = dict(photometric="rgb", compression="zlib", metadata=None)
        with tifffile.TiffWriter(p) as tw:
            tw.write(img, tile=(256, 256), description=desc, **kw)
            tw.write(img[::8, ::8].copy(), description="Aperio Image Library v12.0.15 \r\nthumbnail", **kw)
            tw.write(
                img[::4, ::4].copy(),
                tile=(256, 256),
                description="Aperio Image Library v12.0.15 \r\n200x150 -> 200x150",
                **kw,
            )
        return str(p), 0.2527
    if kind == "tif":
        import tifffile

        p = tmp_path / "plain.tif"
        tifffile.imwrite(p, img, photometric="rgb")
        return str(p), None
    p = tmp_path / f"s.{kind}"
    Image.fromarray(img).save(p)
    return str(p), None


@pytest.mark.parametrize("kind", ["ome.tif", "ome.zarr", "ome.zarr-v0.5", "svs", "tif", "png", "jpg", "bmp"])
def test_reader_gives_lazy_multiscale_rgb_with_scale(tmp_path, kind):
    import dask.array as da

    img = _image()
    path, mpp = _write(tmp_path, kind, img)
    reader = napari_get_reader(path)
    assert reader is read_slide
    ((data, kw, ltype),) = reader(path)
    assert ltype == "image" and kw["rgb"] and kw["multiscale"]
    assert isinstance(data, list) and all(isinstance(d, da.Array) for d in data)
    assert data[0].shape == (600, 800, 3) and data[0].dtype == np.uint8
    assert kw["scale"] == ((mpp, mpp) if mpp else (1.0, 1.0))
    assert kw["metadata"]["leuk_slide_path"] == str(path)
    lvl0 = np.asarray(data[0][:50, :50])
    if kind in ("jpg",):
        assert np.abs(lvl0.astype(int) - img[:50, :50]).mean() < 4
    else:
        np.testing.assert_array_equal(lvl0, img[:50, :50])


def test_viewer_open_uses_the_reader_and_bad_files_fail_clearly(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path, _ = _write(tmp_path, "ome.tif", _image())
    layers = viewer.open(path, plugin="leukcore")
    assert layers[0].multiscale and tuple(layers[0].scale) == (0.5, 0.5)
    bad = tmp_path / "broken.ome.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(Exception, match="broken.ome.tif"):
        viewer.open(str(bad), plugin="leukcore")


def test_reader_declines_unknown_and_multiple_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.png"), str(tmp_path / "b.png")]) is None
    for suf in ("svs", "ndpi", "tiff", "jpeg"):
        assert napari_get_reader(str(tmp_path / f"x.{suf}")) is read_slide


def test_reader_bad_file_raises_slide_error_naming_it(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(SlideError, match="broken.png"):
        read_slide(str(bad))


def test_results_folder_shows_cells_over_their_slide(tmp_path, table_factory):
    img = _image(2000, 2000)
    slide_path = write_slide(tmp_path / "s.ome.tif", img, mpp=0.5, tile=256)
    tab = table_factory(6)
    out = tmp_path / "results"
    tab.meta["slide"] = "s.ome.tif"
    tab.to_parquet(out / "cells.parquet")
    (out / "summary.json").write_text(
        json.dumps({"slide": {"path": str(slide_path), "name": "s.ome.tif"}, "mpp": {"value": 0.5}})
    )
    for p in (out, out / "cells.parquet"):
        reader = napari_get_reader(str(p))
        assert reader is read_results
        layers = reader(str(p))
        assert [lt for _, _, lt in layers] == ["image", "shapes"]
        cells_data, ckw, _ = layers[1]
        assert len(cells_data) == 6 and ckw["scale"] == (0.5, 0.5)
        assert list(ckw["features"]["label"]) == list(tab.df["label"])


def test_geojson_alone_shows_cells(tmp_path, table_factory):
    from leukcore.export.geojson import write_geojson

    tab = table_factory(4)
    p = write_geojson(tab, tmp_path / "cells.geojson")
    assert napari_get_reader(str(p)) is read_results
    layers = read_results(str(p))  # the slide is not found: cells alone (with a warning)
    assert len(layers) == 1
    data, kw, lt = layers[0]
    assert lt == "shapes" and len(data) == 4
    assert list(kw["features"]["label"]) == list(tab.df["label"])
