"""``leuk info SLIDE``: what a slide is, without reading its pixels.

Prints the format / vendor, file size, level-0 size, pixel size and where it came
from, and every pyramid level with its shape, downsample, pixel size and chunking
(``--json`` prints the same as one JSON object), plus the integrity warnings found
at open (missing tiles, tifffile warnings, ignored pixel sizes, 12-bit / float rescaling).
Bad input prints one line ``leuk info: error: <path>: <problem>`` and exits with
status 2; so does a slide whose index shows stored tiles without pixel data (the
description is still printed first).
"""

from __future__ import annotations

import json


def register(sub):
    """Add the ``leuk info`` subcommand to ``sub``."""
    p = sub.add_parser(
        "info",
        help="describe a slide: format, levels, pixel size, chunking (reads no pixels)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("slide", help="slide or image file (TIFF/OME-TIFF/SVS/NDPI, OME-Zarr directory, PNG/JPEG/BMP)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--check",
        action="store_true",
        help="also read every stored tile of every level, one at a time (slow for big slides): "
        "finds tiles that do not decode and NaN pixels",
    )
    p.add_argument("--mpp", type=float, default=None, help="override the level-0 pixel size (microns per pixel)")
    p.set_defaults(func=run)


def _size(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return str(n)  # pragma: no cover


def format_info(info: dict) -> str:
    """Human-readable text of :meth:`leukcore.io.Slide.info`."""
    h, w = info["shape"]
    mpp = info["mpp"]
    lines = [
        f"path:      {info['path']}",
        f"format:    {info['format']}" + (f" ({info['vendor']})" if info.get("vendor") else ""),
        f"file size: {_size(info.get('file_size'))}",
        f"size:      {w} x {h} px (width x height)"
        + (f" = {w * mpp / 1000:.2f} x {h * mpp / 1000:.2f} mm" if mpp else ""),
        "mpp:       "
        + (
            f"{mpp:.4g} um/px (source: {info['mpp_source']})"
            if mpp
            else "unknown (no pixel size in the file; pass --mpp)"
        ),
        f"levels:    {len(info['levels'])}",
    ]
    meta = info.get("metadata") or {}
    if meta.get("compression"):
        lines.append(f"codec:     {meta['compression']}")
    lines.append("  level  width x height    downsample   um/px     chunks (dask)   stored tile")
    for lv in info["levels"]:
        lh, lw = lv["shape"][:2]
        ch = lv.get("chunks") or ["?", "?"]
        nat = lv.get("native_chunks")
        nat_s = "computed lazily" if lv.get("computed") else (f"{nat[1]} x {nat[0]}" if nat else "?")
        lmpp = f"{lv['mpp']:.4g}" if lv.get("mpp") else "-"
        lines.append(
            f"  {lv['level']:>5}  {lw:>7} x {lh:<7}  {lv['downsample']:>10.4g}   {lmpp:<8}  "
            f"{ch[1]:>6} x {ch[0]:<6}   {nat_s}"
        )
    if meta.get("ome_description") or meta.get("description"):
        lines.append(f"description: {meta.get('ome_description') or meta.get('description')}")
    if meta.get("attribution"):
        lines.append(f"attribution: {meta['attribution']}")
    integ = info.get("integrity") or {}
    if integ and not integ.get("ok", True):
        lines.append(f"integrity: DAMAGED: {integ.get('missing_tiles')} stored tile(s) without pixel data")
    for w in info.get("warnings") or []:
        lines.append(f"warning:   {w}")
    return "\n".join(lines)


def run(args) -> int:
    """Run ``leuk info`` with the parsed ``args``; the exit code."""
    import sys

    from ..io import open_slide
    from ..io.errors import MissingTileError, SlideError
    from ..io.integrity import verify_pixels

    with open_slide(args.slide, mpp=args.mpp) as slide:
        damage = None
        try:
            slide.check_missing()
            if getattr(args, "check", False):
                verify_pixels(slide)
        except MissingTileError as e:
            damage = e
        except SlideError as e:  # undecodable tile: nothing more to describe
            damage = e
        info = slide.info()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print(format_info(info))
    if damage is not None:
        sys.stdout.flush()
        print(f"leuk info: error: {damage}", file=sys.stderr)
        return 2
    return 0
