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
import html
import io
import json
import logging
import socket
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["Limits", "MissingExtra", "BadImage", "ImageTooLarge", "DemoServer", "make_app",
           "make_server", "default_predictor", "decode_image", "image_size", "serve",
           "require_web"]

log = logging.getLogger("leukcore.serve")

#: image formats the demo opens (Pillow plugins); anything else is refused before parsing
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
INSTALL_HINT = 'the web demo needs the serve extra: pip install "leukcore[serve]"'


class MissingExtra(ImportError):
    """fastapi / uvicorn / python-multipart are not installed."""


class BadImage(ValueError):
    """The upload is not an image the demo can read (400)."""


class ImageTooLarge(BadImage):
    """The image's header announces too many pixels or an extreme shape (413)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the demo server (defaults suit one CPU machine)."""

    max_bytes: int = 20_000_000          #: request body (bytes), whatever Content-Length says
    max_pixels: int = 25_000_000         #: width * height from the image header
    max_side: int = 8192                 #: longest side (px)
    max_aspect: float = 10.0             #: longest side / shortest side
    min_side: int = 8                    #: shortest side (px)
    workers: int = 2                     #: inference threads
    queue: int = 8                       #: requests waiting for a worker before 503
    header_timeout: float = 10.0         #: s to receive a whole request head (slowloris)
    body_timeout: float = 60.0           #: s to receive the body
    keep_alive: int = 5                  #: s an idle keep-alive connection is kept
    max_connections: int = 200           #: open connections (more are answered 503 and closed)
    max_header_bytes: int = 16 * 1024    #: request line + headers
    allow_hosts: tuple = field(default=())  #: extra Host names accepted ("*" accepts any)


def require_web():
    """Import the web stack or raise :class:`MissingExtra` with the install hint."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"{INSTALL_HINT} ({e.name or e} is missing)") from None


# --------------------------------------------------------------------------- images

def image_size(data: bytes, limits: Limits = Limits()) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding; refuses what the demo won't decode.

    Raises :class:`BadImage` (not an image of :data:`FORMATS`) or :class:`ImageTooLarge`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty request body: send the image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image too large: more than {limits.max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise BadImage("cannot decode the uploaded image (PNG, JPEG, BMP, TIFF or WebP expected)") from None
    _check_shape(w, h, limits)
    return w, h


def _check_shape(w: int, h: int, limits: Limits) -> None:
    lo, hi = min(w, h), max(w, h)
    if w * h > limits.max_pixels:
        raise ImageTooLarge(f"image too large: {w} x {h} px > {limits.max_pixels} pixels")
    if hi > limits.max_side:
        raise ImageTooLarge(f"image too large: a side of {hi} px > {limits.max_side}")
    if lo < limits.min_side:
        raise BadImage(f"image too small: {w} x {h} px (a side < {limits.min_side})")
    if hi / lo > limits.max_aspect:
        raise BadImage(f"image too elongated: {w} x {h} px (aspect > {limits.max_aspect:g})")


def decode_image(data: bytes, limits: Limits = Limits()):
    """Decode image bytes to a ``(Y, X, 3)`` uint8 array after :func:`image_size`'s checks.

    Raises :class:`BadImage` / :class:`ImageTooLarge`.
    """
    import numpy as np
    from PIL import Image

    image_size(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                _check_shape(*im.size, limits)
                im.load()
                return np.asarray(im.convert("RGB"))
    except BadImage:
        raise
    except Exception:   # a corrupt stream: Pillow raises many types
        raise BadImage("cannot decode the uploaded image (truncated or corrupt)") from None


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The ``file`` part of a buffered multipart/form-data body (python-multipart)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadImage("multipart upload without a boundary")
    parts: list[dict] = []
    cur: dict = {}
    hname, hval = bytearray(), bytearray()

    def on_part_begin():
        cur.clear()
        cur.update(headers={}, data=bytearray())

    def on_header_field(d, s, e):
        hname.extend(d[s:e])

    def on_header_value(d, s, e):
        hval.extend(d[s:e])

    def on_header_end():
        cur["headers"][bytes(hname).lower()] = bytes(hval)
        hname.clear()
        hval.clear()

    def on_part_data(d, s, e):
        cur["data"].extend(d[s:e])

    def on_part_end():
        parts.append(dict(cur))

    try:
        parser = MultipartParser(boundary, dict(
            on_part_begin=on_part_begin, on_header_field=on_header_field,
            on_header_value=on_header_value, on_header_end=on_header_end,
            on_part_data=on_part_data, on_part_end=on_part_end))
        parser.write(body)
        parser.finalize()
    except Exception:
        raise BadImage("malformed multipart/form-data body") from None
    for part in parts:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disp.get(b"name") == b"file":
            return bytes(part["data"])
    raise BadImage("multipart upload has no field named 'file'")


# --------------------------------------------------------------------------- predictor

def default_predictor(device: str = "auto") -> Callable[[Any, str], dict]:
    """Predict with shipped classifiers: ``leuk classify``'s rule, models loaded on first use.

    Loading (and the first prediction, which also loads the detector) is serialised; later
    predictions run concurrently on the server's worker threads.
    """
    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def predict(image, model: str) -> dict:
        from .classify import Classifier
        from .field import classify_image

        clf = cache.get(model)
        if clf is None:
            with lock:
                clf = cache.get(model)
                if clf is None:
                    clf = Classifier.load(model, device=device)
                    rec = classify_image(image, clf, device=device)
                    cache[model] = clf
                    return rec
        return classify_image(image, clf, device=device)

    return predict


# --------------------------------------------------------------------------- page

_STYLE = ("body{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em}"
          "pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}#label{font-size:1.4em}")
_SCRIPT = """
const form = document.getElementById('f'), out = document.getElementById('out');
const label = document.getElementById('label');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const file = document.getElementById('file').files[0];
  if (!file) { out.textContent = 'choose an image first'; return; }
  const fd = new FormData(); fd.append('file', file);
  const model = document.getElementById('model').value;
  out.dataset.state = 'busy'; out.textContent = 'working...'; label.textContent = '';
  try {
    const r = await fetch('predict?model=' + encodeURIComponent(model), {method: 'POST', body: fd});
    const j = await r.json();
    label.textContent = r.ok ? ('label: ' + j.label) : ('error ' + r.status + ': ' + j.error);
    out.textContent = JSON.stringify(j, null, 2);
    out.dataset.status = String(r.status); out.dataset.state = r.ok ? 'done' : 'error';
  } catch (err) {
    out.textContent = 'request failed: ' + err; out.dataset.state = 'error';
  }
});
"""
_PAGE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
         "<link rel=\"icon\" href=\"data:,\"><title>leuk demo</title><style>" + _STYLE + "</style></head><body>"
         "<h1>leuk: white-cell classifier demo</h1>"
         "<p>Upload a blood-smear field or a single-cell crop (PNG, JPEG, BMP, TIFF, WebP; "
         "at most @MAXMB@ MB and @MAXMPX@ megapixels). Research use only; not a diagnostic device.</p>"
         "<form id=\"f\"><input type=\"file\" id=\"file\" name=\"file\" accept=\"image/*\"> "
         "<select id=\"model\" name=\"model\">@OPTIONS@</select> "
         "<button id=\"go\" type=\"submit\">Predict</button></form>"
         "<p id=\"label\"></p><pre id=\"out\" data-state=\"idle\"></pre>"
         "<script>" + _SCRIPT + "</script></body></html>")


def _csp() -> str:
    import base64
    import hashlib

    def h(s):
        return "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
    return (f"default-src 'none'; script-src {h(_SCRIPT)}; style-src {h(_STYLE)}; connect-src 'self'; "
            "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def render_page(models: list[str], default_model: str, limits: Limits = Limits()) -> str:
    """The self-contained upload page (no external asset, works offline)."""
    options = "".join(
        f'<option value="{html.escape(m)}"{" selected" if m == default_model else ""}>{html.escape(m)}</option>'
        for m in models)
    return (_PAGE.replace("@OPTIONS@", options).replace("@MAXMB@", f"{limits.max_bytes / 1e6:g}")
            .replace("@MAXMPX@", f"{limits.max_pixels / 1e6:g}"))


# --------------------------------------------------------------------------- guards

def _hostname(host: str) -> str:
    """``Host`` header -> lower-case name without port; IPv6 in brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    if host.count(":") > 1:           # a bare IPv6 address (as given on the command line)
        return f"[{host}]"
    return host.split(":", 1)[0].rstrip(".")


def allowed_hosts(bound_host: str, extra=()) -> Optional[set]:
    """Host names the server answers (``None``: any, when ``"*"`` is in ``extra``)."""
    if "*" in extra:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", _hostname(bound_host)}
    names.update(_hostname(h) for h in extra)
    return names


def _json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()


async def _send_json(send, status: int, obj: dict, headers=()) -> None:
    body = _json_bytes(obj)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                     (b"cache-control", b"no-store")]


class _Guard:
    """ASGI middleware: Host allow list (DNS rebinding), same-origin POST, security headers."""

    def __init__(self, app, hosts: Optional[set], max_header_bytes: int = 16 * 1024):
        self.app, self.hosts, self.max_header_bytes = app, hosts, max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if size + sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_header_bytes:
            # h11 bounds a head arriving in pieces; this bounds one that arrived whole
            return await _send_json(send, 431, {"error": "request head too large"}, [(b"connection", b"close")])
        headers = {}
        for k, v in scope["headers"]:
            headers.setdefault(k, v.decode("latin-1"))
        host = headers.get(b"host", "")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            return await _send_json(send, 403, {"error": "Host header not allowed (see leuk serve --allow-host)"},
                                    [(b"connection", b"close")])
        origin = headers.get(b"origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            if origin.strip().lower() != f"{scope.get('scheme', 'http')}://{host}".strip().lower():
                return await _send_json(send, 403, {"error": "cross-origin request refused"},
                                        [(b"connection", b"close")])

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


_PROTOCOLS: dict = {}


def _protocol_class(limits: Limits):
    """Uvicorn's h11 protocol with a request-head deadline, a connection cap and JSON 400s."""
    key = (limits.header_timeout, limits.max_connections)
    if key in _PROTOCOLS:
        return _PROTOCOLS[key]
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    def raw(status: str, obj: dict) -> bytes:
        body = _json_bytes(obj)
        return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode() + body

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(raw("503 Service Unavailable", {"error": "too many connections"}))
                transport.close()
                return
            self._arm()

        def _arm(self):
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)

        def _disarm(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self):
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(raw("408 Request Timeout", {"error": "request head not received in time"}))
                self.transport.close()

        def data_received(self, data):
            if self.conn.their_state is h11.IDLE:
                self._arm()                   # a request starts: its head has a deadline
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg):    # invalid HTTP (bad Content-Length, huge headers, ...)
            if not self.transport.is_closing():
                self.transport.write(raw("400 Bad Request", {"error": "invalid HTTP request"}))
            self.transport.close()

    _PROTOCOLS[key] = GuardedH11Protocol
    return GuardedH11Protocol


# --------------------------------------------------------------------------- app

def make_app(*, models: Optional[list[str]] = None, default_model: str = "all-binary",
             predict: Optional[Callable[[Any, str], dict]] = None, device: str = "auto",
             limits: Limits = Limits(), bound_host: str = "127.0.0.1"):
    """The FastAPI application (ASGI), wrapped in the Host/Origin guard."""
    require_web()
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from ._version import __version__

    if models is None:
        from .models import list_models
        models = list_models("classification")
    models = list(models)
    if default_model not in models:
        raise ValueError(f"unknown model {default_model!r}; available: {', '.join(models)}")
    predict = predict or default_predictor(device)
    capacity = limits.workers + limits.queue
    state = {"busy": 0, "pool": None}
    busy_lock = threading.Lock()
    page = render_page(models, default_model, limits).encode()
    page_headers = {"content-security-policy": _csp()}

    class Error(BaseModel):
        error: str

    class Prediction(BaseModel):
        model_config = ConfigDict(extra="allow", protected_namespaces=())
        model: str
        label: Optional[str] = None
        probabilities: dict[str, Optional[float]] = {}

    class Health(BaseModel):
        model_config = ConfigDict(extra="allow")
        status: str
        version: str
        models: list[str]
        default_model: str
        device: str
        queue: dict[str, int]

    @asynccontextmanager
    async def lifespan(app):
        state["pool"] = ThreadPoolExecutor(limits.workers, thread_name_prefix="leuk-predict")
        try:
            yield
        finally:
            state["pool"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="leuk demo", version=__version__, lifespan=lifespan,
                  description="Classify a blood-smear field or a single-cell crop (research use only).")
    errors = {c: {"model": Error} for c in (400, 403, 404, 408, 413, 422, 503)}

    def fail(status: int, msg: str, close: bool = False, headers: Optional[dict] = None):
        h = dict(headers or {})
        if close:
            h["connection"] = "close"
        return HTTPException(status, msg, headers=h or None)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc):
        msg = exc.detail
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint {request.url.path}"
        return JSONResponse({"error": str(msg)}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        errs = exc.errors()
        where = ".".join(str(x) for x in errs[0].get("loc", ())) if errs else ""
        msg = errs[0].get("msg", "invalid") if errs else "invalid"
        return JSONResponse({"error": f"invalid request: {where}: {msg}"}, 422)

    @app.exception_handler(Exception)
    async def _internal(request, exc):   # logged with its traceback; the client sees no internals
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal server error"}, 500)

    @app.get("/", response_class=HTMLResponse, summary="upload page (self-contained)")
    async def index():
        return HTMLResponse(page, headers=page_headers)

    @app.get("/health", response_model=Health, summary="server status")
    async def health():
        return {"status": "ok", "version": __version__, "models": models, "default_model": default_model,
                "device": device,
                "queue": {"workers": limits.workers, "capacity": capacity, "busy": state["busy"]}}

    async def read_body(request: Request) -> bytes:
        cl = request.headers.get("content-length")
        if cl is not None:
            cl = cl.strip()
            if not cl.isdigit() or len(cl) > 18:
                raise fail(400, "invalid Content-Length", close=True)
            if int(cl) > limits.max_bytes:
                raise fail(413, f"request body too large: {int(cl)} bytes > {limits.max_bytes}", close=True)
        buf = bytearray()

        async def gather():
            async for chunk in request.stream():
                if len(buf) + len(chunk) > limits.max_bytes:
                    raise fail(413, f"request body too large: more than {limits.max_bytes} bytes", close=True)
                buf.extend(chunk)
        try:
            await asyncio.wait_for(gather(), limits.body_timeout)
        except asyncio.TimeoutError:
            raise fail(408, "request body not received in time", close=True) from None
        except ClientDisconnect:
            raise fail(400, "client disconnected", close=True) from None
        return bytes(buf)

    def job(data: bytes, model: str) -> dict:
        image = decode_image(data, limits)
        del data
        return predict(image, model)

    def release(_=None):
        with busy_lock:
            state["busy"] -= 1

    body_doc = {"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}}

    @app.post("/predict", response_model=Prediction, responses=errors, openapi_extra=body_doc,
              summary="classify one image (raw body or multipart field 'file')")
    async def predict_route(request: Request,
                            model: Optional[str] = Query(None, description=f"one of {models}")):
        model = model or default_model
        if model not in models:
            raise fail(404, f"unknown model {model!r}; available: {models}")
        with busy_lock:
            full = state["busy"] >= capacity
            if not full:
                state["busy"] += 1
        if full:
            raise fail(503, "server busy: the prediction queue is full, retry later", close=True,
                       headers={"retry-after": "5"})
        submitted = False
        try:
            data = await read_body(request)
            ctype = request.headers.get("content-type", "")
            try:
                if ctype.lower().startswith("multipart/form-data"):
                    data = _multipart_file(data, ctype)
                image_size(data, limits)           # header only: refuse before any decoding
                fut = state["pool"].submit(job, data, model)
                fut.add_done_callback(release)
                submitted = True
                result = await asyncio.wrap_future(fut)
            except ImageTooLarge as e:
                raise fail(413, str(e)) from None
            except BadImage as e:
                raise fail(400, str(e)) from None
        finally:
            if not submitted:
                release()
        return JSONResponse({"model": model, **result})

    return _Guard(app, allowed_hosts(bound_host, limits.allow_hosts), limits.max_header_bytes)


# --------------------------------------------------------------------------- server

class DemoServer:
    """A uvicorn server on a socket bound at construction (``port=0``: any free port)."""

    def __init__(self, app, sock: socket.socket, limits: Limits, log_level: str = "warning"):
        import uvicorn

        self.app, self.sock, self.limits = app, sock, limits
        self.host, self.port = sock.getsockname()[:2]
        self.config = uvicorn.Config(
            app, http=_protocol_class(limits), ws="none", lifespan="on", loop="asyncio",
            log_config=None, log_level=log_level, access_log=False, server_header=False,
            proxy_headers=False, timeout_keep_alive=limits.keep_alive,
            limit_concurrency=limits.max_connections + 1,
            h11_max_incomplete_event_size=limits.max_header_bytes, timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(self.config)
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Run in this thread until interrupted (Ctrl-C / SIGTERM)."""
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> "DemoServer":
        """Run in a background thread; returns once the server accepts connections."""
        import time

        self._thread = threading.Thread(target=self.serve_forever, name="leuk-serve", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout:
                raise RuntimeError("the demo server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout)
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass

    def __enter__(self):
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc):
        self.stop()


def make_server(host: str = "127.0.0.1", port: int = 8000, *, models: Optional[list[str]] = None,
                default_model: str = "all-binary", predict: Optional[Callable[[Any, str], dict]] = None,
                device: str = "auto", limits: Optional[Limits] = None, log_level: str = "warning",
                **limit_kw) -> DemoServer:
    """Build (not start) the demo server; ``limit_kw`` override fields of :class:`Limits`."""
    require_web()
    limits = Limits(**{**(limits.__dict__ if limits else {}), **limit_kw})
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if info[0] == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(info[4])
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    app = make_app(models=models, default_model=default_model, predict=predict, device=device,
                   limits=limits, bound_host=host)
    return DemoServer(app, sock, limits, log_level=log_level)


def serve(host: str = "127.0.0.1", port: int = 8000, **kw) -> None:
    """Run the demo server until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    srv = make_server(host, port, log_level="info", **kw)
    print(f"leuk demo server on {srv.url}/  (GET /health, POST /predict, GET /docs)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not srv.limits.allow_hosts:
        print(f"note: bound to {host}; clients must use a Host the server accepts: add the name or "
              "address they use with --allow-host", flush=True)
    srv.serve_forever()
