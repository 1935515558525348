"""A generator of hostile input files: the conformance suite every reader and command must survive.

In the spirit of ``zarr.testing.store``: :func:`build_hostile_cases` writes one small file (or
directory, link, FIFO...) per case into a folder and returns :class:`HostileCase` records saying what
a correct program does with each::

    from leukcore.testing.hostile import build_hostile_cases

    for case in build_hostile_cases(tmp_path):
        case.kind      # "ok", "warn" (opens and reads, with a warning), "open" / "read" (error there)
        case.error     # the SlideError subclass expected (open / read cases)
        case.words     # lower-case words the error or warning must contain
        case.field     # as a field for `leuk classify`: "ok", "refuse" (label null + reason) or "error"

Cases cover missing pixels (zero byte counts, offsets past the end of the file, a 60,000 px slide cut
inside its tile-offset table, missing zarr chunks, NaN / inf floats, multiscale metadata that disagrees
with the arrays), bit depths (12-bit in uint16, float 0..255), degenerate images (a side of 0, 1 x 60,000
px, huge declared sizes, blank / black / white / grey / noise), broken metadata (``PhysicalSizeX="abcd"``,
mpp 40 µm/px, garbage OME-XML), unsupported layouts (CMYK, 5 channels, 4-D stacks), and the file system
(zero bytes, text named ``.tif``, wrong extension, unicode names, symlink loops, a FIFO, a device, a
directory, no read permission).  Everything is built in about a second and takes ~10 MB.

This module needs no pytest; :mod:`tests.test_hostile_inputs` runs the cases through the API and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Optional

import numpy as np

from .hostile_files import (
    ZARR_BASE,
    classic_tiff_header,
    field_rgb,
    patch_tiff_tag,
    tiff_with_tiles,
)

__all__ = [
    "HostileCase",
    "CASE_NAMES",
    "build_hostile_cases",
    "tiff_with_tiles",
    "patch_tiff_tag",
    "classic_tiff_header",
]


@dataclass
class HostileCase:
    """One hostile input and what a correct program does with it."""

    name: str
    path: Path
    #: "ok" / "warn": opens and reads (warn: a warning containing ``words``); "open" / "read": ``error`` there
    kind: str
    error: Optional[type] = None
    words: tuple = ()
    #: as a field for ``classify_image``: "ok", "refuse" (label null with a reason), "error" (SlideError)
    field: str = "error"
    note: str = ""
    #: field error class when it differs from ``error`` (e.g. a valid slide refused as a field)
    field_error: Optional[type] = None
    tags: tuple = _field(default_factory=tuple)

    @property
    def valid(self) -> bool:
        """Whether the file opens and every pixel reads (``leuk info --check`` exits 0)."""
        return self.kind in ("ok", "warn")

    def __str__(self) -> str:  # pytest ids
        return self.name


#: every case name :func:`build_hostile_cases` can return, in order (``unreadable_permissions`` only
#: when not running as root), for parametrising tests before the files exist
CASE_NAMES = (
    "field_png",
    "field_jpeg",
    "field_bmp",
    "field_gif_palette",
    "png_palette",
    "png_rgba",
    "png_grey_field",
    "png_16bit_full",
    "png_16bit_12bit",
    "jpeg_cmyk",
    "png_named_svs",
    "jpeg_named_png",
    "unicode_name",
    "tiff_tiled",
    "tiff_stripped",
    "tiff_palette",
    "tiff_miniswhite",
    "tiff_grey_alpha",
    "tiff_uint16_full",
    "tiff_float01",
    "tiff_72dpi",
    "ome_tiff_pyramid",
    "ome_zarr_v04",
    "ome_zarr_v05",
    "bare_zarr",
    "tiff_uint16_12bit",
    "tiff_float_0_255",
    "zarr_uint16_12bit",
    "ome_physicalsize_abcd",
    "ome_mpp_40",
    "ome_xml_garbage",
    "philips_sparse_tile",
    "ome_unit_bogus",
    "png_black",
    "png_white",
    "png_grey",
    "png_near_uniform",
    "png_noise",
    "png_one_pixel",
    "tiff_grey16_uniform",
    "png_1x60000",
    "png_60000x1",
    "png_30x1000_aspect",
    "png_huge_declared",
    "png_huge_field",
    "tiff_width0",
    "tiff_height0",
    "tiff_huge_declared",
    "zarr_zero_sized",
    "tiff_tile_bytecount0",
    "tiff_tile_offset_past_eof",
    "tiff_tile_offset0",
    "tiff_strip_bytecount0",
    "tiff_truncated_half",
    "tiff_truncated_90pct",
    "tiff_truncated_in_header",
    "tiff_60k_cut_in_offset_table",
    "tiff_pyramid_level1_tile_missing",
    "tiff_float_nan",
    "tiff_float_inf",
    "tiff_float_all_nan",
    "zarr_float_nan",
    "zarr_missing_chunk_v2",
    "zarr_missing_chunk_v3_level1",
    "zarr_all_chunks_missing",
    "zarr_scale_disagrees_with_shape",
    "zarr_missing_level",
    "zarr_missing_zattrs",
    "zarr_garbage_zattrs",
    "zarr_multiscales_not_a_list",
    "zarr_empty_group",
    "zarr_4d",
    "tiff_cmyk",
    "tiff_5_channels",
    "tiff_4d_stack",
    "text_named_tif",
    "text_named_png",
    "tiff_magic_then_garbage",
    "zero_byte_png",
    "zero_byte_tif",
    "png_bad_crc",
    "png_truncated",
    "jpeg_truncated",
    "png_header_only",
    "plain_directory",
    "missing_file",
    "symlink_loop",
    "symlink_dangling",
    "symlink_valid",
    "fifo",
    "char_device",
    "unreadable_permissions",
)


# ------------------------------------------------------------------ the cases
@dataclass
class Cases:
    """What the case builders share: the folder, the field, its 2 x 2 tiling, the random draws, the list."""

    root: Path
    rgb: np.ndarray
    pyr: np.ndarray
    rng: np.random.Generator
    include_special: bool
    cases: list = _field(default_factory=list)

    def add(self, name, path, kind, error=None, words=(), field=None, note="", field_error=None):
        if field is None:
            field = "ok" if kind in ("ok", "warn") else "error"
        self.cases.append(HostileCase(name, Path(path), kind, error, tuple(words), field, note, field_error))


def build_hostile_cases(root, *, include_special: bool = True) -> list[HostileCase]:
    """Write every hostile input under ``root`` (created) and return the cases.

    ``include_special``: also the FIFO, the device, the unreadable file (skipped when running as
    root: root reads anything) and the symlinks.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ZARR_BASE.clear()
    rgb = field_rgb(256)
    c = Cases(root, rgb, np.tile(rgb, (2, 2, 1)), np.random.default_rng(18), include_special)
    from .hostile_damaged import file_system, missing_pixels, non_finite, unsupported, zarr_structure
    from .hostile_readable import degenerate_geometry, not_smears, valid_inputs, valid_with_warnings

    for section in (
        valid_inputs,
        valid_with_warnings,
        not_smears,
        degenerate_geometry,
        missing_pixels,
        non_finite,
        zarr_structure,
        unsupported,
        file_system,
    ):
        section(c)
    return c.cases
