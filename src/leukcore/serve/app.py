"""The web demo's application and server: :func:`make_app` (FastAPI), :func:`make_server` / :func:`serve`
(uvicorn: :mod:`.server`), the Host / Origin guard, and :func:`default_predictor`.  See :mod:`leukcore.serve`.
"""

import contextlib
import functools
import logging
import threading
from typing import Any, Callable, Optional

from .guards import Guard, allowed_hosts
from .images import INSTALL_HINT, BadImage, ImageTooLarge, Limits, MissingExtra, decode_image, image_size
from .page import csp, render_page

__all__ = ["make_app", "default_predictor", "require_web"]

log = logging.getLogger("leukcore.serve")


def require_web():
    """Import the web stack or raise :class:`MissingExtra` with the install hint."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"{INSTALL_HINT} ({e.name or e} is missing)") from None


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
        parser = MultipartParser(
            boundary,
            dict(
                on_part_begin=on_part_begin,
                on_header_field=on_header_field,
                on_header_value=on_header_value,
                on_header_end=on_header_end,
                on_part_data=on_part_data,
                on_part_end=on_part_end,
            ),
        )
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
    predictions run concurrently on the server's worker threads.  The models are those of the process's
    one cache (:mod:`leukcore.loader`).
    """
    loaded: set[str] = set()
    lock = threading.Lock()

    def predict(image, model: str) -> dict:
        from ..field import classify_image
        from ..loader import load_classifier

        if model not in loaded:
            with lock:
                if model not in loaded:
                    rec = classify_image(image, load_classifier(model, device=device), device=device)
                    loaded.add(model)
                    return rec
        return classify_image(image, load_classifier(model, device=device), device=device)

    return predict


# --------------------------------------------------------------------------- app


def make_app(
    *,
    models: Optional[list[str]] = None,
    default_model: str = "all-binary",
    predict: Optional[Callable[[Any, str], dict]] = None,
    device: str = "auto",
    limits: Limits = Limits(),
    bound_host: str = "127.0.0.1",
):
    """The FastAPI application (ASGI), wrapped in the Host/Origin guard."""
    require_web()
    from fastapi import FastAPI

    from .._version import __version__

    if models is None:
        from ..models import list_models

        models = list_models("classification")
    models = list(models)
    if default_model not in models:
        raise ValueError(f"unknown model {default_model!r}; available: {', '.join(models)}")
    queue = _Queue(limits)
    app = FastAPI(
        title="leuk demo",
        version=__version__,
        lifespan=queue.lifespan,
        description="Classify a blood-smear field or a single-cell crop (research use only).",
    )
    _add_error_handlers(app)
    _add_pages(app, models, default_model, device, limits, queue)
    _add_predict(app, models, default_model, predict or default_predictor(device), limits, queue)
    return Guard(app, allowed_hosts(bound_host, limits.allow_hosts), limits.max_header_bytes)


@functools.lru_cache(maxsize=1)
def _schemas():
    """The response models of the API (pydantic, imported when an app is first made)."""
    from pydantic import BaseModel, ConfigDict

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

    return Error, Prediction, Health


def _fail(status: int, msg: str, close: bool = False, headers: Optional[dict] = None):
    """An HTTP error answered as JSON (``connection: close`` when ``close``)."""
    from starlette.exceptions import HTTPException

    h = dict(headers or {})
    if close:
        h["connection"] = "close"
    return HTTPException(status, msg, headers=h or None)


class _Queue:
    """The prediction pool (``workers`` threads) and how many requests it holds (at most ``workers + queue``)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.capacity = limits.workers + limits.queue
        self.busy = 0
        self.pool = None
        self.lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="leuk-predict")
        try:
            yield
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def take(self) -> bool:
        """Count one more request in; False when full."""
        with self.lock:
            if self.busy >= self.capacity:
                return False
            self.busy += 1
            return True

    def release(self, _=None) -> None:
        with self.lock:
            self.busy -= 1


def _add_error_handlers(app) -> None:
    """Every error as JSON ``{"error": ...}`` without internals (unexpected ones logged with the traceback)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

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
    async def _internal(request, exc):  # logged with its traceback; the client sees no internals
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal server error"}, 500)


def _add_pages(app, models: list, default_model: str, device: str, limits: Limits, queue: _Queue) -> None:
    """``GET /`` (the upload page) and ``GET /health``."""
    from fastapi.responses import HTMLResponse

    from .._version import __version__

    _, _, Health = _schemas()
    page = render_page(models, default_model, limits).encode()
    page_headers = {"content-security-policy": csp()}

    @app.get("/", response_class=HTMLResponse, summary="upload page (self-contained)")
    async def index():
        return HTMLResponse(page, headers=page_headers)

    @app.get("/health", response_model=Health, summary="server status")
    async def health():
        return {
            "status": "ok",
            "version": __version__,
            "models": models,
            "default_model": default_model,
            "device": device,
            "queue": {"workers": limits.workers, "capacity": queue.capacity, "busy": queue.busy},
        }


async def _read_body(request, limits: Limits) -> bytes:
    """The request body, streamed and cut at ``max_bytes`` (whatever Content-Length says), in ``body_timeout``."""
    import asyncio

    from starlette.requests import ClientDisconnect

    cl = request.headers.get("content-length")
    if cl is not None:
        cl = cl.strip()
        if not cl.isdigit() or len(cl) > 18:
            raise _fail(400, "invalid Content-Length", close=True)
        if int(cl) > limits.max_bytes:
            raise _fail(413, f"request body too large: {int(cl)} bytes > {limits.max_bytes}", close=True)
    buf = bytearray()

    async def gather():
        async for chunk in request.stream():
            if len(buf) + len(chunk) > limits.max_bytes:
                raise _fail(413, f"request body too large: more than {limits.max_bytes} bytes", close=True)
            buf.extend(chunk)

    try:
        await asyncio.wait_for(gather(), limits.body_timeout)
    except asyncio.TimeoutError:
        raise _fail(408, "request body not received in time", close=True) from None
    except ClientDisconnect:
        raise _fail(400, "client disconnected", close=True) from None
    return bytes(buf)


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _add_predict(app, models: list, default_model: str, predict, limits: Limits, queue: _Queue) -> None:
    """``POST /predict``: the body read and checked here, decoded and classified on the pool."""
    import asyncio

    from fastapi import Query, Request
    from fastapi.responses import JSONResponse

    Error, Prediction, _ = _schemas()
    errors = {c: {"model": Error} for c in (400, 403, 404, 408, 413, 422, 503)}

    def job(data: bytes, model: str) -> dict:
        image = decode_image(data, limits)
        del data
        return predict(image, model)

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=errors,
        openapi_extra=_BODY_DOC,
        summary="classify one image (raw body or multipart field 'file')",
    )
    async def predict_route(request: Request, model: Optional[str] = Query(None, description=f"one of {models}")):
        model = model or default_model
        if model not in models:
            raise _fail(404, f"unknown model {model!r}; available: {models}")
        if not queue.take():
            raise _fail(
                503, "server busy: the prediction queue is full, retry later", close=True, headers={"retry-after": "5"}
            )
        submitted = False
        try:
            data = await _read_body(request, limits)
            ctype = request.headers.get("content-type", "")
            try:
                if ctype.lower().startswith("multipart/form-data"):
                    data = _multipart_file(data, ctype)
                image_size(data, limits)  # header only: refuse before any decoding
                fut = queue.pool.submit(job, data, model)
                fut.add_done_callback(queue.release)
                submitted = True
                result = await asyncio.wrap_future(fut)
            except ImageTooLarge as e:
                raise _fail(413, str(e)) from None
            except BadImage as e:
                raise _fail(400, str(e)) from None
        finally:
            if not submitted:
                queue.release()
        return JSONResponse({"model": model, **result})
