"""napari-leuk: napari plugin over leukcore (reader, widget, sample data)."""
from leukcore._version import __version__

__all__ = ["__version__", "guard_triton"]


def guard_triton() -> bool:
    """Keep ``triton`` out of the napari process (it crashes next to Mesa's OpenGL).

    Importing ``torchvision`` imports ``torch._dynamo``, which imports ``triton``; once
    Mesa (llvmpipe on a virtual display, radeonsi, ...) has loaded its ``libLLVM`` for
    napari's canvas, loading triton's own LLVM kills the process with a segmentation
    fault (seen with torch 2.14 / triton on Debian 12 + Xvfb).  The canvas may create its
    GL context after this plugin is imported, so the guard does not wait for it:
    unless triton is already imported, ``sys.modules["triton"]`` is set to ``None`` and
    torch sees triton as absent.  Only ``torch.compile`` needs triton and leukcore does not
    use it; eager CPU / CUDA inference is unaffected.  ``LEUK_NAPARI_ALLOW_TRITON=1``
    turns the guard off.  Returns True when triton is blocked.
    """
    import os
    import sys

    if os.environ.get("LEUK_NAPARI_ALLOW_TRITON") == "1":
        return False
    if "triton" not in sys.modules:
        sys.modules["triton"] = None
    return sys.modules["triton"] is None


guard_triton()
