"""Lazy whole-slide I/O: :func:`open_slide`, :func:`write_slide` (:class:`WriteOptions`), :class:`Slide`,
:class:`SlideError`.
"""

from .errors import (
    CorruptSlideError,
    DegenerateImageError,
    EmptySlideError,
    MissingTileError,
    NonFinitePixelsError,
    SlideError,
    SlideNotFoundError,
    SlideTooLargeError,
    UnsupportedFormatError,
    UnsupportedLayoutError,
)
from .slide import PAD_VALUE, Slide

__all__ = [
    "Slide",
    "PAD_VALUE",
    "open_slide",
    "write_slide",
    "WriteOptions",
    "SlideError",
    "SlideNotFoundError",
    "UnsupportedFormatError",
    "CorruptSlideError",
    "EmptySlideError",
    "SlideTooLargeError",
    "UnsupportedLayoutError",
    "MissingTileError",
    "NonFinitePixelsError",
    "DegenerateImageError",
]


def __getattr__(name):
    # open_slide / write_slide live in their own modules (filled in by the readers / writer)
    if name == "open_slide":
        from .open import open_slide

        return open_slide
    if name == "write_slide":
        from .write import write_slide

        return write_slide
    if name == "WriteOptions":
        from .write import WriteOptions

        return WriteOptions
    raise AttributeError(name)
