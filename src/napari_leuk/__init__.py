"""napari-leuk: napari plugin over leukcore (reader, widget, sample data)."""
from leukcore._version import __version__

__all__ = ["__version__"]
