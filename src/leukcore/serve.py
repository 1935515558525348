"""A small web demo: ``GET /health``, ``POST /predict``, and an upload page at ``/``.

Standard library only (``http.server``), so the core gains no web dependency.
Run it with ``leuk serve [--host 127.0.0.1] [--port 8000] [--model all-binary]``.

``POST /predict``
    Body: the raw bytes of one image (PNG, JPEG, BMP, TIFF), or a
    ``multipart/form-data`` upload with a field named ``file``.  Optional query
    ``?model=NAME``.  Answers ``200`` with JSON
    ``{"label": ..., "probabilities": {class: p}, "model": ..., "cells": N, ...}``;
    ``400`` with ``{"error": ...}`` for an unreadable image, ``413`` when the
    body exceeds ``max_bytes``, ``404`` for an unknown model.
``GET /health``
    ``{"status": "ok", "version": ..., "models": [...], "device": ...}``.
"""
from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlparse

__all__ = ["make_server", "default_predictor", "decode_image", "serve"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>leuk demo</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}pre{background:#f4f4f4;padding:1em}</style></head>
<body><h1>leuk: white-cell classifier demo</h1>
<p>Upload a blood-smear field or a single-cell crop. Research use only; not a diagnostic device.</p>
<form id="f"><input type="file" name="file" accept="image/*"> <select name="model">{options}</select>
<button>Predict</button></form><pre id="out"></pre>
<script>
document.getElementById('f').onsubmit = async (e) => {{
  e.preventDefault(); const fd = new FormData(e.target);
  const r = await fetch('/predict?model=' + fd.get('model'), {{method: 'POST', body: fd.get('file')}});
  document.getElementById('out').textContent = JSON.stringify(await r.json(), null, 2);
}};
</script></body></html>"""


class BadImage(ValueError):
    pass


def decode_image(data: bytes):
    """Decode image bytes to a ``(Y, X, 3)`` uint8 array (raises :class:`BadImage`)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty request body: send the image bytes")
    try:
        Image.MAX_IMAGE_PIXELS = 50_000_000
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise BadImage(f"cannot decode the uploaded image: {e}") from None


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """Extract the ``file`` part of a multipart/form-data body."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    raise BadImage("multipart upload has no field named 'file'")


def default_predictor(device: str = "auto") -> Callable[[Any, str], dict]:
    """Predict with shipped classifiers (models cached per name, loaded on first use)."""
    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def predict(image, model: str) -> dict:
        # same function as ``leuk classify`` (fields: detect cells, the card's field rule;
        # crops: whole image), so the demo and the command line always agree
        from .classify import Classifier
        from .field import classify_image

        with lock:
            if model not in cache:
                cache[model] = Classifier.load(model, device=device)
            return classify_image(image, cache[model], device=device)

    return predict


def make_server(host: str = "127.0.0.1", port: int = 8000, *, models: Optional[list[str]] = None,
                default_model: str = "all-binary", predict: Optional[Callable[[Any, str], dict]] = None,
                max_bytes: int = 20_000_000, device: str = "auto") -> ThreadingHTTPServer:
    """Build (not start) the demo server; ``port=0`` picks a free port (see ``server.server_address``)."""
    from ._version import __version__

    if models is None:
        from .models import list_models
        models = list_models("classification")
    predict = predict or default_predictor(device)
    options = "".join(f'<option value="{m}"{" selected" if m == default_model else ""}>{m}</option>'
                      for m in models)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"leuk/{__version__}"

        def log_message(self, fmt, *args):  # quiet by default
            pass

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = urlparse(self.path).path
            if path == "/health":
                self._json(200, {"status": "ok", "version": __version__, "models": models,
                                 "default_model": default_model, "device": device})
            elif path == "/":
                data = PAGE.format(options=options).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._json(404, {"error": f"no such endpoint {path}"})

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/predict":
                self._json(404, {"error": f"no such endpoint {url.path}"})
                return
            model = parse_qs(url.query).get("model", [default_model])[0]
            if model not in models:
                self._json(404, {"error": f"unknown model {model!r}; available: {models}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_bytes:
                self._json(413, {"error": f"image too large: {length} bytes > {max_bytes}"})
                return
            body = self.rfile.read(length)
            try:
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    body = _multipart_file(body, ctype)
                image = decode_image(body)
                result = predict(image, model)
            except BadImage as e:
                self._json(400, {"error": str(e)})
                return
            except Exception as e:  # pragma: no cover - reported, server keeps running
                self._json(500, {"error": f"{type(e).__name__}: {e}"})
                return
            self._json(200, {"model": model, **result})

    return ThreadingHTTPServer((host, port), Handler)


def serve(host: str = "127.0.0.1", port: int = 8000, **kw) -> None:
    """Run the demo server until interrupted."""
    srv = make_server(host, port, **kw)
    h, p = srv.server_address[:2]
    print(f"leuk demo server on http://{h}:{p}/  (GET /health, POST /predict)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
