"""Plain image reader: PNG, JPEG, BMP (and other single-frame formats Pillow knows).

Such files have to be decoded whole.  The header is read first and the pixel
limit (``max_decode_pixels``) is enforced *before* any decoding; the decode
itself happens lazily on the first pixel access and is cached by the slide.
16-bit PNGs are decoded with imagecodecs (keeping 16 bits, then converted by the
documented dtype rule); everything else with Pillow.
"""

from __future__ import annotations

import threading
import warnings
from typing import Optional

import numpy as np

from .convert import check_layout, value_range_rule
from .errors import CorruptSlideError, EmptySlideError, SlideTooLargeError, UnsupportedFormatError
from .lazy import LevelReader, Source, as_dask, file_token
from .mppcheck import plausible_metadata_mpp
from .slide import Slide, downsample2

__all__ = ["open_image", "PIL_FORMATS"]

PIL_FORMATS = {
    "PNG": "png",
    "JPEG": "jpeg",
    "BMP": "bmp",
    "GIF": "gif",
    "WEBP": "webp",
    "TIFF": "tiff",
    "PPM": "ppm",
    "TGA": "tga",
}

#: Pillow mode -> (channels, numpy dtype) after decoding (modes not listed are converted to RGB(A) by Pillow)
_MODES = {
    "1": (1, np.bool_),
    "L": (1, np.uint8),
    "LA": (2, np.uint8),
    "RGB": (3, np.uint8),
    "RGBA": (4, np.uint8),
    "I;16": (1, np.uint16),
    "I;16B": (1, np.uint16),
    "I;16L": (1, np.uint16),
    "I": (1, np.int32),
    "F": (1, np.float32),
}


def _header(path):
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit is checked from the header below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.format, im.size, im.mode, dict(im.info), getattr(im, "n_frames", 1)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode(path, fmt, mode):
    """Decode the whole image to a (Y, X[, C]) array (called lazily, once)."""
    from PIL import Image

    if fmt == "PNG" and mode in ("I;16", "I;16B", "I;16L", "RGB", "RGBA", "LA", "L", "I"):
        try:
            import imagecodecs

            with open(path, "rb") as f:
                return imagecodecs.png_decode(f.read())
        except ImportError:  # pragma: no cover
            pass
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                if im.mode not in _MODES:
                    im = im.convert("RGBA" if ("transparency" in im.info or im.mode.endswith("A")) else "RGB")
                return np.asarray(im)
    finally:
        Image.MAX_IMAGE_PIXELS = old


class _Cached:
    """Holds the decoded array of a plain image (decoded once, on first access)."""

    def __init__(self, path, fmt, mode):
        self.path, self.fmt, self.mode = path, fmt, mode
        self.array = None
        self._lock = threading.Lock()

    def __getitem__(self, key):
        if self.array is None:
            with self._lock:
                if self.array is None:
                    self.array = _decode(self.path, self.fmt, self.mode)
        return self.array[key]

    @property
    def chunks(self):  # pragma: no cover - informative
        return None


def _open_cached(path, fmt, mode):
    return _Cached(path, fmt, mode)


def _identity(obj):
    return obj


def _pil_mpp(info) -> tuple[Optional[float], Optional[str]]:
    from .mppcheck import valid_mpp

    dpi = info.get("dpi")
    if not dpi:
        return None, None
    try:
        x = float(dpi[0])
    except (TypeError, ValueError, IndexError):
        return None, None
    if x <= 0 or round(x) in (72, 96):  # the usual "no real resolution" defaults
        return None, None
    mpp = valid_mpp(25400.0 / x)
    return mpp, ("image:dpi" if mpp else None)


def open_image(path, *, max_pixels: float, max_decode_pixels: float) -> Slide:
    """Open a plain image file as a :class:`Slide` (decoded lazily, whole, on first access)."""
    from PIL import UnidentifiedImageError

    path = str(path)
    try:
        fmt, (w, h), mode, info, n_frames = _header(path)
    except UnidentifiedImageError as e:
        raise UnsupportedFormatError(path, "unknown image format (not TIFF, OME-Zarr, PNG, JPEG or BMP)") from e
    except MemoryError:
        raise
    except Exception as e:  # OSError, SyntaxError, ValueError, struct.error, ... from a damaged header
        raise CorruptSlideError(path, f"corrupt or truncated image header: {type(e).__name__}: {e}") from e
    if w == 0 or h == 0:
        raise EmptySlideError(path, f"zero-sized image ({w} x {h})")
    limit = min(max_pixels, max_decode_pixels)
    if w * h > limit:
        raise SlideTooLargeError(
            path,
            f"declared size {w} x {h} = {w * h:.3g} pixels exceeds the limit "
            f"{limit:.3g} for images decoded whole (max_pixels / LEUK_MAX_DECODE_PIXELS)",
        )
    nchan, dtype = _MODES.get(mode, (4 if ("transparency" in info or mode.endswith("A")) else 3, np.uint8))
    if fmt == "PNG" and mode == "RGB" and info.get("bitdepth", 8) == 16:  # pragma: no cover - Pillow detail
        dtype = np.uint16
    problem = check_layout(nchan, dtype)
    if problem:  # pragma: no cover - all Pillow modes map to a supported layout
        from .errors import UnsupportedLayoutError

        raise UnsupportedLayoutError(path, problem)
    source = Source(_open_cached, (path, fmt, mode), None)
    axes = "YXC"
    reader = _ImageReader(path, source, _identity, axes, (h, w), level=0)
    a = as_dask(reader, (min(h, 2048), min(w, 2048)), f"leuk-image-{file_token(path)}")
    levels, downs = [a], [1.0]
    while max(levels[-1].shape[:2]) > 2048 and min(levels[-1].shape[:2]) >= 2:
        levels.append(downsample2(levels[-1]))
        downs.append(downs[-1] * 2)
    warns: list = []
    reader.warnings = warns
    mpp, origin = _pil_mpp(info)
    mpp, origin = plausible_metadata_mpp(mpp, origin, warns, path)
    meta = {
        "image_format": fmt,
        "mode": mode,
        "mpp_origin": origin,
        "computed_levels": len(levels) > 1,
        "native_chunks": [[h, w]],
    }
    return Slide(
        levels=levels,
        downsamples=downs,
        mpp=mpp,
        mpp_source="metadata" if mpp else None,
        path=path,
        format=PIL_FORMATS.get(fmt, fmt.lower() if fmt else "image"),
        vendor=None,
        metadata=meta,
        warnings=warns,
        _closer=source.close,
        _readers=[reader] + [None] * (len(levels) - 1),
    )


class _ImageReader(LevelReader):
    """LevelReader whose native array may be 2-D (grey) or 3-D (channels last)."""

    def _read(self, ys, xs):
        arr = self.source.get()
        try:
            if arr.array is None:
                arr[0:0]  # trigger (and time) the decode inside the error wrapper
        except Exception as e:
            raise CorruptSlideError(self.path, f"cannot decode image: {type(e).__name__}: {e}") from e
        a = arr.array
        self.axes = "YXC" if a.ndim == 3 else "YX"
        if not self._range_done:
            self._range_done = True
            if a.dtype != np.uint8 and a.dtype.kind in "uif":
                b = a[..., :-1] if (a.ndim == 3 and a.shape[2] in (2, 4)) else a
                b = b[np.isfinite(b)] if b.dtype.kind == "f" else b
                scale_max, w = value_range_rule(a.dtype, float(b.max()) if b.size else None)
                if scale_max is not None:
                    self.convert = {**self.convert, "scale_max": scale_max}
                    if self.warnings is not None:
                        self.warnings.append(w)
        return super()._read(ys, xs)

    _range_done = False
    warnings: Optional[list] = None
