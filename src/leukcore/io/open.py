"""``open_slide``: open any supported slide or image file as a lazy :class:`Slide`.

The format is recognised from the file's magic bytes (not its suffix):
TIFF / BigTIFF (incl. OME-TIFF, SVS, NDPI), a zarr directory (OME-Zarr),
or an image Pillow can read (PNG, JPEG, BMP, ...).  Opening reads metadata only.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

from .errors import SlideNotFoundError, UnsupportedFormatError
from .mppcheck import check_user_mpp
from .slide import Slide

__all__ = [
    "open_slide",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_DECODE_PIXELS",
    "max_pixels_default",
    "max_decode_pixels_default",
]

#: default limit on the declared level-0 size of any slide (env ``LEUK_MAX_PIXELS``)
DEFAULT_MAX_PIXELS = 2e10
#: default limit on what is decoded in one piece: a whole PNG/JPEG/BMP, or one TIFF strip/tile
#: or zarr chunk (env ``LEUK_MAX_DECODE_PIXELS``); 4e8 px is about 1.2 GB of RGB
DEFAULT_MAX_DECODE_PIXELS = 4e8

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    if not v:
        return default
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not a number") from None
    if not f > 0:
        raise ValueError(f"environment variable {name}={v!r} must be positive")
    return f


def max_pixels_default() -> float:
    """The level-0 pixel limit: ``LEUK_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    return _env_float("LEUK_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def max_decode_pixels_default() -> float:
    """The whole-decode pixel limit: ``LEUK_MAX_DECODE_PIXELS`` or :data:`DEFAULT_MAX_DECODE_PIXELS`."""
    return _env_float("LEUK_MAX_DECODE_PIXELS", DEFAULT_MAX_DECODE_PIXELS)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def stat_slide_path(p: str) -> os.stat_result:
    """``os.stat`` of a slide path, refusing anything but a regular file or a directory **before** it
    is opened (a FIFO or a device would block a reader forever).

    Raises :class:`SlideNotFoundError` (missing, dangling or looping symlink, no permission to
    look) or :class:`UnsupportedFormatError` (FIFO, device, socket).
    """
    try:
        st = os.stat(p)
    except FileNotFoundError:
        why = "dangling symbolic link" if os.path.islink(p) else "no such file or directory"
        raise SlideNotFoundError(p, why) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SlideNotFoundError(p, "symbolic link loop (too many levels of symbolic links)") from None
        raise SlideNotFoundError(p, f"cannot access: {e.strerror or e}") from None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return st
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    raise UnsupportedFormatError(p, f"is {kind}, not a slide file (refused without reading it)")


def open_slide(
    path, mpp: Optional[float] = None, *, max_pixels: Optional[float] = None, max_decode_pixels: Optional[float] = None
) -> Slide:
    """Open a slide or image lazily.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF-family file (pyramidal/tiled/stripped TIFF, OME-TIFF, SVS, NDPI),
        an OME-Zarr directory (NGFF v0.4 / zarr v2 or v0.5 / zarr v3), or a plain
        image (PNG, JPEG, BMP).
    mpp : float, optional
        Level-0 pixel size in microns; overrides the file's metadata
        (``mpp_source == "user"``); must lie in 0.05..10 µm/px (``ValueError`` otherwise).  Without it ``mpp`` comes from metadata
        (``"metadata"``) or is ``None``.
    max_pixels : float, optional
        Refuse slides whose declared level-0 size exceeds this many pixels
        (default ``LEUK_MAX_PIXELS`` or 2e10).
    max_decode_pixels : float, optional
        Refuse anything that would be decoded in one piece beyond this many pixels:
        a whole PNG/JPEG/BMP, or one TIFF strip/tile or zarr chunk (default
        ``LEUK_MAX_DECODE_PIXELS`` or 4e8; plain images are also bound by ``max_pixels``).

    Returns
    -------
    Slide
        Levels are dask arrays ``(Y, X, 3)`` uint8; nothing but metadata has been read.

    Raises
    ------
    SlideNotFoundError, UnsupportedFormatError, CorruptSlideError, EmptySlideError,
    SlideTooLargeError, UnsupportedLayoutError
        All subclasses of :class:`~leukcore.io.errors.SlideError`; the message names
        the file and the problem.
    """
    if isinstance(path, Slide):
        return path if mpp is None else path.with_mpp(mpp, "user")
    if mpp is not None:
        mpp = check_user_mpp(mpp)
    max_pixels = float(max_pixels) if max_pixels is not None else max_pixels_default()
    max_decode = float(max_decode_pixels) if max_decode_pixels is not None else max_decode_pixels_default()
    p = os.fspath(path)
    st = stat_slide_path(p)
    if stat.S_ISDIR(st.st_mode):
        from .omezarr import is_zarr_dir, open_omezarr

        if not is_zarr_dir(p):
            raise SlideNotFoundError(p, "is a directory, not a slide (no OME-Zarr metadata found)")
        slide = open_omezarr(p, max_pixels=max_pixels, max_decode_pixels=max_decode)
    else:
        try:
            # O_NONBLOCK: never wait on a FIFO that appeared after the check above
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise UnsupportedFormatError(p, "not a regular file")
                head = f.read(16)
        except PermissionError as e:
            raise SlideNotFoundError(p, f"cannot read file: permission denied ({e.strerror})") from None
        except OSError as e:
            raise SlideNotFoundError(p, f"cannot read file: {e.strerror or e}") from None
        if len(head) == 0:
            from .errors import EmptySlideError

            raise EmptySlideError(p, "empty file (0 bytes)")
        if head[:4] in _TIFF_MAGIC:
            from .tiff import open_tiff

            slide = open_tiff(p, max_pixels=max_pixels, max_decode_pixels=max_decode)
        else:
            from .image import open_image

            slide = open_image(p, max_pixels=max_pixels, max_decode_pixels=max_decode)
    if mpp is not None:
        slide.metadata.setdefault("mpp_metadata", slide.mpp)
        slide.mpp, slide.mpp_source = mpp, "user"
    return slide
