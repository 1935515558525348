"""Helpers for the web-demo tests: an in-process server, a raw-socket client, crafted PNGs, peak RSS."""

import contextlib
import io
import json
import select
import socket
import struct
import threading
import time
import zlib

import numpy as np
from PIL import Image

MODELS = ["all-binary", "all-4class"]


def fake_predictor(calls=None, gate=None, sleep=0.0):
    """A cheap predictor: records ``(shape, model)``; waits on ``gate`` (an Event) or sleeps."""

    def predict(image, model):
        if calls is not None:
            calls.append((image.shape, model))
        if gate is not None:
            gate.wait(60)
        if sleep:
            time.sleep(sleep)
        return {
            "label": "normal",
            "probabilities": {"ALL": 0.1, "normal": 0.9},
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
        }

    return predict


@contextlib.contextmanager
def running(predict=None, **kw):
    """A started demo server on 127.0.0.1, any free port; yields the DemoServer."""
    from leukcore.serve import make_server

    kw.setdefault("models", MODELS)
    srv = make_server("127.0.0.1", 0, predict=predict or fake_predictor(), **kw).start()
    try:
        yield srv
    finally:
        srv.stop()


def png(h=32, w=48, value=200) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_of_zeros(w: int, h: int, header_only: bool = False) -> bytes:
    """A valid 8-bit grey PNG of ``w`` x ``h`` zeros, compressed row by row (tiny file, huge image).

    ``header_only``: IHDR and a truncated IDAT only (for sizes too large to even compress).
    """
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    if header_only:
        return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    comp = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    parts = [comp.compress(row) for _ in range(h)]
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def parse_response(raw: bytes):
    """``(status, headers, body)`` of a raw HTTP/1.1 response (``(None, {}, b'')`` if none)."""
    if b"\r\n\r\n" not in raw:
        return None, {}, b""
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def read_response(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the response is complete (Content-Length) or the peer closes."""
    s.settimeout(timeout)
    data = b""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            piece = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not piece:
            break
        data += piece
        st, h, body = parse_response(data)
        if st is not None and "content-length" in h and len(body) >= int(h["content-length"]):
            break
    return data


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 10.0):
    """Send ``head`` (request line + headers, without the final blank line) and ``body``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        return parse_response(read_response(s, timeout))


def send_stream(port: int, head: str, total: int, chunked: bool = False, piece: int = 1 << 20, timeout: float = 30.0):
    """Stream ``total`` bytes after ``head`` until the server answers or closes.

    Returns ``(bytes_sent, (status, headers, body))``.
    """
    chunk = b"\x89" * piece
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n\r\n")
        try:
            while sent < total:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:  # an early answer (or a close): stop sending
                    break
                s.sendall((b"%x\r\n" % piece + chunk + b"\r\n") if chunked else chunk)
                sent += piece
            else:
                if chunked:
                    s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        return sent, parse_response(read_response(s, timeout))


class PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs (sampled every 5 ms)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def get_json(url: str, timeout: float = 10.0, headers=None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url: str, data: bytes, ctype: str = "application/octet-stream", timeout: float = 30.0, headers=None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)
