"""The web demo: an upload page at ``/``, ``POST /predict``, ``GET /health`` (FastAPI on uvicorn).

Needs the ``serve`` extra: ``pip install "leukcore[serve]"`` (fastapi, uvicorn, python-multipart).
``import leukcore`` (and ``import leukcore.serve``) never imports the web stack; :func:`make_app`,
:func:`make_server` and :func:`serve` do, and raise :class:`MissingExtra` (one line) without it.
Run it with ``leuk serve [--host 127.0.0.1] [--port 8000] [--model all-binary]``.

``POST /predict``
    Body: the raw bytes of one image (PNG, JPEG, BMP, TIFF, WebP), or a ``multipart/form-data``
    upload with a field named ``file``.  Optional query ``?model=NAME``.  Answers ``200`` with
    JSON ``{"label": ..., "probabilities": {class: p}, "model": ..., ...}`` (the record of
    ``leuk classify``).  Every error is JSON ``{"error": "..."}`` without internals: ``400``
    unreadable image or malformed request, ``403`` Host or Origin not allowed, ``404`` unknown
    model, ``408`` body too slow, ``413`` body or image too large, ``503`` (with ``Retry-After``)
    when the worker queue is full, ``500`` for an unexpected failure (details only in the log).
``GET /health``
    ``{"status": "ok", "version": ..., "models": [...], "device": ..., "queue": {...}}``; answered
    by the event loop, never behind inference.
``GET /docs``, ``GET /openapi.json``
    FastAPI's schema and Swagger page (the Swagger page loads its assets from a CDN; the upload
    page at ``/`` is self-contained and works offline).

Limits (each tested in ``tests/test_serve*.py``; see :class:`Limits`): the body is streamed and
cut at ``max_bytes`` whatever ``Content-Length`` says; image dimensions are read from the file
header and refused before decoding above ``max_pixels``, ``max_side`` or ``max_aspect``; inference
runs on a pool of ``workers`` threads with at most ``queue`` requests waiting (then ``503``); a
request head must arrive within ``header_timeout`` s and a body within ``body_timeout`` s
(slowloris); at most ``max_connections`` connections; a request head at most 16 KiB (else 400 or
431).  The server binds loopback by default and answers only requests whose ``Host`` is loopback,
the bound host or one given with ``allow_hosts`` (DNS rebinding); a ``POST`` with an ``Origin``
must be same-origin.
"""

from .app import default_predictor, make_app, require_web
from .images import BadImage, ImageTooLarge, Limits, MissingExtra, decode_image, image_size
from .page import render_page
from .server import DemoServer, make_server, serve

__all__ = [
    "Limits",
    "MissingExtra",
    "BadImage",
    "ImageTooLarge",
    "DemoServer",
    "make_app",
    "make_server",
    "default_predictor",
    "decode_image",
    "image_size",
    "serve",
    "require_web",
    "render_page",
]
