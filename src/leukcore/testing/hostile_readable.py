"""Hostile cases a reader must open: valid inputs, valid with a warning, images that are no smear,
degenerate geometry (see :mod:`leukcore.testing.hostile`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..io import errors as E
from .hostile_files import (
    bare_zarr,
    classic_tiff_header,
    cmyk_jpeg,
    ome_tiff,
    palette_png,
    palette_tiff,
    patch_tiff_tag,
    png16,
    png_header_only,
    tiff_with_tiles,
    write_png,
    write_tiff,
    zarr_slide,
)

if TYPE_CHECKING:
    from .hostile import Cases


def valid_inputs(c: Cases) -> None:
    """Valid inputs (must keep working)."""
    root, rgb, pyr = c.root, c.rgb, c.pyr
    add = c.add
    add("field_png", write_png(root / "field.png", rgb), "ok", note="a real smear field")
    add("field_jpeg", write_png(root / "field.jpg", rgb, quality=90), "ok")
    add("field_bmp", write_png(root / "field.bmp", rgb), "ok")
    add("field_gif_palette", write_png(root / "field.gif", rgb), "ok", note="palette (GIF)")
    add("png_palette", palette_png(root / "palette.png", rgb), "ok")
    add("png_rgba", write_png(root / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])), "ok")
    add("png_grey_field", write_png(root / "grey_field.png", rgb.mean(axis=2).astype(np.uint8)), "ok")
    add("png_16bit_full", png16(root / "full16.png", (rgb.astype(np.uint16) * 257)), "ok")
    add(
        "png_16bit_12bit",
        png16(root / "twelve.png", (rgb.astype(np.uint16) * 16)),
        "warn",
        words=("12-bit",),
        note="12-bit data in a 16-bit PNG: scaled by 255/4095 with a warning (decided at first decode)",
    )
    add("jpeg_cmyk", cmyk_jpeg(root / "cmyk.jpg", rgb), "ok", note="CMYK JPEG: Pillow converts to RGB")
    add(
        "png_named_svs",
        write_png(root / "actually_png.svs", rgb, format="PNG"),
        "ok",
        note="wrong extension: content decides",
    )
    add("jpeg_named_png", write_png(root / "actually_jpeg.png", rgb, format="JPEG"), "ok")
    add("unicode_name", write_png(root / "blöd 血液 🩸 ü.png", rgb), "ok")
    add("tiff_tiled", tiff_with_tiles(root / "tiled.tif", rgb), "ok")
    add("tiff_stripped", write_tiff(root / "stripped.tif", rgb, rowsperstrip=32), "ok")
    add("tiff_palette", palette_tiff(root / "palette.tif", rgb), "ok")
    add(
        "tiff_miniswhite",
        write_tiff(root / "miniswhite.tif", 255 - rgb.mean(axis=2).astype(np.uint8), photometric="miniswhite"),
        "ok",
    )
    add(
        "tiff_grey_alpha",
        write_tiff(
            root / "grey_alpha.tif",
            np.dstack([rgb[..., 0], np.full(rgb.shape[:2], 255, np.uint8)]),
            photometric="minisblack",
            extrasamples=[2],
        ),
        "ok",
        note="2 channels: grey + alpha",
    )
    add("tiff_uint16_full", write_tiff(root / "u16.tif", rgb.astype(np.uint16) * 257, photometric="rgb"), "ok")
    add("tiff_float01", write_tiff(root / "f01.tif", rgb.astype(np.float32) / 255, photometric="rgb"), "ok")
    add(
        "tiff_72dpi",
        write_tiff(root / "dpi72.tif", rgb, resolution=(72, 72), resolutionunit="INCH"),
        "ok",
        note="72 dpi = 353 um/px: not a microscope resolution, ignored quietly",
    )
    from ..io import write_slide

    add(
        "ome_tiff_pyramid",
        write_slide(root / "pyramid.ome.tif", pyr, mpp=0.25, tile=128) or root / "pyramid.ome.tif",
        "ok",
    )
    add("ome_zarr_v04", zarr_slide(root / "v04.ome.zarr", pyr, "0.4"), "ok")
    add("ome_zarr_v05", zarr_slide(root / "v05.ome.zarr", pyr, "0.5"), "ok")
    add("bare_zarr", bare_zarr(root / "bare.zarr", rgb, (128, 128, 3)), "ok")


def valid_with_warnings(c: Cases) -> None:
    """Valid, with a warning."""
    root, rgb = c.root, c.rgb
    add = c.add
    add(
        "tiff_uint16_12bit",
        write_tiff(root / "u16_12bit.tif", rgb.astype(np.uint16) * 16, photometric="rgb"),
        "warn",
        words=("12-bit",),
        note="12-bit camera data in uint16: max <= 4095",
    )
    add(
        "tiff_float_0_255",
        write_tiff(root / "f255.tif", rgb.astype(np.float32), photometric="rgb"),
        "warn",
        words=("0..255",),
        note="float data stored as 0..255 instead of 0..1",
    )
    add(
        "zarr_uint16_12bit",
        bare_zarr(root / "u16_12bit.zarr", rgb.astype(np.uint16) * 16, (128, 128, 3)),
        "warn",
        words=("12-bit",),
    )
    add(
        "ome_physicalsize_abcd",
        ome_tiff(root / "abcd.ome.tif", rgb, 'PhysicalSizeX="abcd" PhysicalSizeY="abcd"'),
        "warn",
        words=("abcd",),
        note="unparsable pixel size: unknown, with a warning",
    )
    add(
        "ome_mpp_40",
        ome_tiff(root / "mpp40.ome.tif", rgb, 'PhysicalSizeX="40" PhysicalSizeY="40"'),
        "warn",
        words=("plausible",),
        note="40 um/px: implausible, ignored with a warning (ran away before)",
    )
    add(
        "ome_xml_garbage",
        write_tiff(
            root / "garbage_xml.ome.tif",
            rgb,
            photometric="rgb",
            description='<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/'
            'Schemas/OME/2016-06"><Image><Pixels PhysicalSizeX="0.25"'
            "<<<garbage</OME>",
        ),
        "ok",
        note="broken OME-XML: read as a plain TIFF",
    )
    p = tiff_with_tiles(
        root / "philips_sparse.tif",
        rgb,
        software="Philips DP v1.0",
        description='<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport"></DataObject>',
    )
    patch_tiff_tag(p, "TileByteCounts", 1, 0)
    add(
        "philips_sparse_tile",
        p,
        "warn",
        words=("sparse",),
        note="Philips TIFF: byte count 0 is blank background by design, not damage",
    )
    add(
        "ome_unit_bogus",
        ome_tiff(root / "unit.ome.tif", rgb, 'PhysicalSizeX="0.25" PhysicalSizeXUnit="parsec"'),
        "warn",
        words=("unit",),
    )


def not_smears(c: Cases) -> None:
    """Near-uniform / noise (valid files)."""
    root, rng = c.root, c.rng
    add = c.add
    for name, arr in (
        ("black", np.zeros((256, 256, 3), np.uint8)),
        ("white", np.full((256, 256, 3), 255, np.uint8)),
        ("grey", np.full((256, 256, 3), 128, np.uint8)),
        ("near_uniform", np.clip(200 + rng.integers(-3, 4, (256, 256, 3)), 0, 255).astype(np.uint8)),
        ("noise", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        ("one_pixel", np.full((1, 1, 3), 90, np.uint8)),
    ):
        add(
            f"png_{name}",
            write_png(root / f"{name}.png", arr),
            "ok",
            field="refuse",
            note="not a blood smear: label null with a reason",
        )
    add(
        "tiff_grey16_uniform",
        write_tiff(root / "grey16.tif", np.full((64, 64), 30000, np.uint16)),
        "ok",
        field="refuse",
    )


def degenerate_geometry(c: Cases) -> None:
    """Degenerate geometry."""
    root, rgb = c.root, c.rgb
    add = c.add
    add(
        "png_1x60000",
        write_png(root / "strip_1x60000.png", np.full((1, 60000, 3), 128, np.uint8)),
        "ok",
        field="error",
        field_error=E.DegenerateImageError,
        note="a 260-byte file that drove memory to 23 GB through max(H, W)^2",
    )
    add(
        "png_60000x1",
        write_png(root / "strip_60000x1.png", np.full((60000, 1, 3), 128, np.uint8)),
        "ok",
        field="error",
        field_error=E.DegenerateImageError,
    )
    add(
        "png_30x1000_aspect",
        write_png(root / "aspect.png", np.tile(rgb[:30, :250], (1, 4, 1))),
        "ok",
        field="error",
        field_error=E.DegenerateImageError,
        note="aspect 33:1 > 20:1",
    )
    (root / "huge_declared.png").write_bytes(png_header_only(100_000, 100_000))
    add(
        "png_huge_declared",
        root / "huge_declared.png",
        "open",
        E.SlideTooLargeError,
        ("exceeds",),
        note="60-byte PNG declaring 1e10 px: refused before decoding",
    )
    (root / "huge_field.png").write_bytes(png_header_only(12_000, 12_000))
    add(
        "png_huge_field",
        root / "huge_field.png",
        "read",
        E.CorruptSlideError,
        ("decode",),
        field="error",
        field_error=E.SlideTooLargeError,
        note="1.4e8 px: too big for a field, refused before decode",
    )
    (root / "zero_width.tif").write_bytes(classic_tiff_header(0, 512, n_tiles=1))
    add("tiff_width0", root / "zero_width.tif", "open", E.SlideError, (), note="ZeroDivisionError before")
    (root / "zero_height.tif").write_bytes(classic_tiff_header(512, 0, n_tiles=1))
    add("tiff_height0", root / "zero_height.tif", "open", E.SlideError, ())
    (root / "huge_declared.tif").write_bytes(
        classic_tiff_header(200_000, 200_000, tile=4096, offsets_value=8, count_value=1)
    )
    add("tiff_huge_declared", root / "huge_declared.tif", "open", E.SlideTooLargeError, ("exceeds",))
    zs = root / "zero_sized.zarr"
    import zarr

    zarr.open_array(str(zs), mode="w", shape=(0, 10, 3), dtype="uint8", chunks=(8, 8, 3), zarr_format=2)
    add("zarr_zero_sized", zs, "open", E.EmptySlideError, ("zero-sized",))
