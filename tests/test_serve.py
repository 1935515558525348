"""The web demo server, on loopback, with a real HTTP client."""
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from leukcore.serve import make_server


@pytest.fixture
def server():
    calls = []

    def fake_predict(image, model):
        # records what the server decoded; the real predictor is tested end-to-end below
        calls.append((image.shape, model))
        return {"label": "normal", "probabilities": {"ALL": 0.1, "normal": 0.9}}

    srv = make_server("127.0.0.1", 0, models=["all-binary", "all-4class"], predict=fake_predict,
                      max_bytes=200_000)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", calls
    srv.shutdown()
    srv.server_close()


def _png(h=32, w=48):
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _post(url, data, ctype="application/octet-stream", timeout=10):
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health(server):
    base, _ = server
    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "ok" and "all-binary" in body["models"]


def test_predict_raw_and_multipart(server):
    base, calls = server
    st, body = _post(base + "/predict?model=all-4class", _png())
    assert st == 200 and body["label"] == "normal" and body["model"] == "all-4class"
    assert calls[-1] == ((32, 48, 3), "all-4class")
    boundary = "XyZ"
    mp = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
          f"Content-Type: image/png\r\n\r\n").encode() + _png(20, 10) + f"\r\n--{boundary}--\r\n".encode()
    st, body = _post(base + "/predict", mp, f"multipart/form-data; boundary={boundary}")
    assert st == 200 and calls[-1] == ((20, 10, 3), "all-binary")


def test_predict_errors(server):
    base, _ = server
    st, body = _post(base + "/predict", b"not an image")
    assert st == 400 and "cannot decode" in body["error"]
    st, body = _post(base + "/predict?model=nope", _png())
    assert st == 404 and "unknown model" in body["error"]
    st, body = _post(base + "/predict", b"\0" * 300_000)
    assert st == 413
    st, body = _post(base + "/predict", b"")
    assert st == 400


@pytest.mark.slow
def test_real_model_predicts_a_pbc_cell():
    """End to end with the shipped all-binary model on a real PBC neutrophil (normal)."""
    import os
    from pathlib import Path

    from leukcore.models import list_models

    data = Path(os.environ.get("LEUK_DATA", Path(__file__).parents[1] / ".." / "shared" / "data"))
    cells = sorted((data / "pbc" / "neutrophil").glob("*.jpg"))
    if "all-binary" not in list_models("classification") or not cells:
        pytest.skip("needs the shipped all-binary model and ../shared/data/pbc")
    srv = make_server("127.0.0.1", 0, device="cpu")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        st, body = _post(f"http://127.0.0.1:{srv.server_address[1]}/predict?model=all-binary",
                         cells[-1].read_bytes(), timeout=180)   # the first request loads both models
    finally:
        srv.shutdown()
        srv.server_close()
    assert st == 200
    assert set(body["probabilities"]) == {"ALL", "normal"}
    assert body["label"] == "normal"
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
