"""The slide exception family: every bad input raises a :class:`SlideError` subclass
whose message names the file and the problem."""
from __future__ import annotations

__all__ = ["SlideError", "SlideNotFoundError", "UnsupportedFormatError", "CorruptSlideError",
           "EmptySlideError", "SlideTooLargeError", "UnsupportedLayoutError"]


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
