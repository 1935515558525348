"""The slide exception family: every bad input raises a :class:`SlideError` subclass
whose message names the file and the problem.
"""

from __future__ import annotations

__all__ = [
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


class SlideError(Exception):
    """Base class for problems opening or reading a slide."""

    def __init__(self, path, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The file does not exist, or is a directory that is not a slide."""


class UnsupportedFormatError(SlideError):
    """The file is not in a format leukcore can read."""


class CorruptSlideError(SlideError):
    """The file is truncated or corrupt."""


class EmptySlideError(SlideError):
    """The image has zero size."""


class SlideTooLargeError(SlideError):
    """The declared image size exceeds the configured pixel limit (decompression bomb guard)."""


class UnsupportedLayoutError(SlideError):
    """The sample layout (channels, dimensions, dtype) cannot be converted to RGB uint8."""


class MissingTileError(CorruptSlideError):
    """A region's pixels are not in the file: a TIFF tile/strip with byte count 0, an offset past the end
    of the file or beyond a truncated offset table, or a missing OME-Zarr chunk.  Raised when such a
    region is read (and by :func:`leukcore.pipeline.analyze_slide` before it starts, unless
    ``skip_missing=True``).

    Attributes ``level`` (pyramid level) and ``box`` (``[y0, x0, y1, x1]`` in level-0 pixels) locate it.
    """

    def __init__(self, path, problem: str, level=None, box=None):
        super().__init__(path, problem)
        self.level = level
        self.box = list(box) if box is not None else None


class NonFinitePixelsError(MissingTileError):
    """Floating-point pixels that are NaN or infinite (not real pixel values) were read."""


class DegenerateImageError(SlideError):
    """An image whose geometry cannot be a microscope field (e.g. a 1 x 60,000 px strip)."""
