"""The web demo's server: :class:`DemoServer` (uvicorn on a bound socket, in a thread or the foreground),
:func:`make_server` and :func:`serve` (``leuk serve``).  See :mod:`leukcore.serve`.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Optional

from .app import make_app, require_web
from .guards import protocol_class
from .images import Limits

__all__ = ["DemoServer", "make_server", "serve"]

log = logging.getLogger("leukcore.serve")


# --------------------------------------------------------------------------- server


class DemoServer:
    """A uvicorn server on a socket bound at construction (``port=0``: any free port)."""

    def __init__(self, app, sock: socket.socket, limits: Limits, log_level: str = "warning"):
        import uvicorn

        self.app, self.sock, self.limits = app, sock, limits
        self.host, self.port = sock.getsockname()[:2]
        self.config = uvicorn.Config(
            app,
            http=protocol_class(limits),
            ws="none",
            lifespan="on",
            loop="asyncio",
            log_config=None,
            log_level=log_level,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=limits.keep_alive,
            limit_concurrency=limits.max_connections + 1,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The address the demo serves on (IPv6 hosts in brackets)."""
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
        """Stop a server started by :meth:`start` (forced after ``timeout`` seconds) and close its socket."""
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


def make_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    models: Optional[list[str]] = None,
    default_model: str = "all-binary",
    predict: Optional[Callable[[Any, str], dict]] = None,
    device: str = "auto",
    limits: Optional[Limits] = None,
    log_level: str = "warning",
    **limit_kw,
) -> DemoServer:
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
    app = make_app(
        models=models, default_model=default_model, predict=predict, device=device, limits=limits, bound_host=host
    )
    return DemoServer(app, sock, limits, log_level=log_level)


def serve(host: str = "127.0.0.1", port: int = 8000, **kw) -> None:
    """Run the demo server until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    srv = make_server(host, port, log_level="info", **kw)
    print(f"leuk demo server on {srv.url}/  (GET /health, POST /predict, GET /docs)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not srv.limits.allow_hosts:
        print(
            f"note: bound to {host}; clients must use a Host the server accepts: add the name or "
            "address they use with --allow-host",
            flush=True,
        )
    srv.serve_forever()
