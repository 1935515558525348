import threading

import pytest

from leukcore.device import available_devices, device_settings, resolve_device
from leukcore.progress import Cancelled, CancelToken, ProgressEvent, emit, is_cancelled


def test_cancel_token_variants():
    tok = CancelToken()
    assert not is_cancelled(tok)
    tok.cancel()
    assert is_cancelled(tok)
    with pytest.raises(Cancelled):
        tok.raise_if_cancelled()
    ev = threading.Event()
    assert not is_cancelled(ev)
    ev.set()
    assert is_cancelled(ev)
    assert is_cancelled(lambda: True) and not is_cancelled(lambda: False)
    assert not is_cancelled(None)


def test_emit_calls_back_with_event():
    got = []
    emit(got.append, "detect", 3, 10, cells=7)
    emit(None, "detect", 3, 10)  # no-op
    assert got == [ProgressEvent("detect", 3, 10, cells=7)]
    assert got[0].fraction == pytest.approx(0.3)


def test_resolve_device_cpu_and_errors():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    names = [d.name for d in available_devices()]
    assert names[0] == "cpu"
    assert device_settings(resolve_device("cpu"))["amp"] is False
