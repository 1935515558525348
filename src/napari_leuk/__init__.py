"""napari-leuk: napari plugin over leukcore (reader, widget, sample data)."""

from leukcore._version import __version__

__all__ = ["__version__", "guard_triton", "guard_pyside_none"]


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


def guard_pyside_none() -> bool:
    """Keep PySide6's lost references to ``None`` from killing the process (Python < 3.12 only).

    The PySide6 / shiboken6 6.12 ``abi3`` wheels drop one reference to ``None`` on every call of a method that
    returns nothing (``setText``, ``setData``, ``setSelected``...; measured here: ``sys.getrefcount(None)`` falls
    by one per call), as if ``None`` were immortal, which it is from Python 3.12 on (PEP 683).  On 3.11 the count
    reaches zero after enough Qt calls (a long napari session, the napari test suite) and the interpreter aborts
    with ``Fatal Python error: none_dealloc``.  When PySide6 is loaded and a probe shows the loss, ``None``'s
    reference count is raised by 2**40 (what 3.12 does: it can then never reach zero).  Returns True when applied.
    """
    import sys

    if sys.version_info >= (3, 12) or "PySide6.QtCore" not in sys.modules:
        return False
    if sys.getrefcount(None) > 2**39:
        return True
    try:
        from PySide6.QtCore import QObject

        o = QObject()
        before = sys.getrefcount(None)
        for _ in range(64):
            o.setObjectName("leuk-probe")
        lost = before - sys.getrefcount(None)
        del o
    except Exception:
        return False
    if lost < 32:
        return False
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 2**40
    return True


guard_triton()
guard_pyside_none()
