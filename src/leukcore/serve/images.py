"""What the web demo accepts: upload :class:`Limits`, the image checks made from the file header before
decoding (:func:`image_size`), decoding (:func:`decode_image`) and the errors they raise.  No web stack here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "Limits",
    "MissingExtra",
    "BadImage",
    "ImageTooLarge",
    "image_size",
    "decode_image",
]

#: image formats the demo opens (Pillow plugins); anything else is refused before parsing
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
INSTALL_HINT = 'the web demo needs the serve extra: pip install "leukcore[serve]"'


class MissingExtra(ImportError):
    """fastapi / uvicorn / python-multipart are not installed."""


class BadImage(ValueError):
    """The upload is not an image the demo can read (400)."""


class ImageTooLarge(BadImage):
    """The image's header announces too many pixels or an extreme shape (413)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the demo server (defaults suit one CPU machine)."""

    max_bytes: int = 20_000_000  #: request body (bytes), whatever Content-Length says
    max_pixels: int = 25_000_000  #: width * height from the image header
    max_side: int = 8192  #: longest side (px)
    max_aspect: float = 10.0  #: longest side / shortest side
    min_side: int = 8  #: shortest side (px)
    workers: int = 2  #: inference threads
    queue: int = 8  #: requests waiting for a worker before 503
    header_timeout: float = 10.0  #: s to receive a whole request head (slowloris)
    body_timeout: float = 60.0  #: s to receive the body
    keep_alive: int = 5  #: s an idle keep-alive connection is kept
    max_connections: int = 200  #: open connections (more are answered 503 and closed)
    max_header_bytes: int = 16 * 1024  #: request line + headers
    allow_hosts: tuple = field(default=())  #: extra Host names accepted ("*" accepts any)


# --------------------------------------------------------------------------- images


def image_size(data: bytes, limits: Limits = Limits()) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding; refuses what the demo won't decode.

    Raises :class:`BadImage` (not an image of :data:`FORMATS`) or :class:`ImageTooLarge`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty request body: send the image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image too large: more than {limits.max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise BadImage("cannot decode the uploaded image (PNG, JPEG, BMP, TIFF or WebP expected)") from None
    _check_shape(w, h, limits)
    return w, h


def _check_shape(w: int, h: int, limits: Limits) -> None:
    lo, hi = min(w, h), max(w, h)
    if w * h > limits.max_pixels:
        raise ImageTooLarge(f"image too large: {w} x {h} px > {limits.max_pixels} pixels")
    if hi > limits.max_side:
        raise ImageTooLarge(f"image too large: a side of {hi} px > {limits.max_side}")
    if lo < limits.min_side:
        raise BadImage(f"image too small: {w} x {h} px (a side < {limits.min_side})")
    if hi / lo > limits.max_aspect:
        raise BadImage(f"image too elongated: {w} x {h} px (aspect > {limits.max_aspect:g})")


def decode_image(data: bytes, limits: Limits = Limits()):
    """Decode image bytes to a ``(Y, X, 3)`` uint8 array after :func:`image_size`'s checks.

    Raises :class:`BadImage` / :class:`ImageTooLarge`.
    """
    import numpy as np
    from PIL import Image

    image_size(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                _check_shape(*im.size, limits)
                im.load()
                return np.asarray(im.convert("RGB"))
    except BadImage:
        raise
    except Exception:  # a corrupt stream: Pillow raises many types
        raise BadImage("cannot decode the uploaded image (truncated or corrupt)") from None
