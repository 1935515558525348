"""The web demo's defences below the application: the Host / Origin guard (DNS rebinding, cross-site posts,
security headers) and the uvicorn protocol with the request-head limits.  See :mod:`leukcore.serve`.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

from .images import Limits

__all__ = ["Guard", "allowed_hosts", "protocol_class"]

log = logging.getLogger("leukcore.serve")


def _hostname(host: str) -> str:
    """``Host`` header -> lower-case name without port; IPv6 in brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") > 1:  # a bare IPv6 address (as given on the command line)
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
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware: Host allow list (DNS rebinding), same-origin POST, security headers."""

    def __init__(self, app, hosts: Optional[set], max_header_bytes: int = 16 * 1024):
        self.app, self.hosts, self.max_header_bytes = app, hosts, max_header_bytes

    async def __call__(self, scope, receive, send):
        """ASGI: refuse a too large head, a Host or an Origin not allowed; else pass on, adding security headers."""
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
            return await _send_json(
                send,
                403,
                {"error": "Host header not allowed (see leuk serve --allow-host)"},
                [(b"connection", b"close")],
            )
        origin = headers.get(b"origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            if origin.strip().lower() != f"{scope.get('scheme', 'http')}://{host}".strip().lower():
                return await _send_json(
                    send, 403, {"error": "cross-origin request refused"}, [(b"connection", b"close")]
                )

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_with_headers)


_PROTOCOLS: dict = {}


def protocol_class(limits: Limits):
    """Uvicorn's h11 protocol with a request-head deadline, a connection cap and JSON 400s."""
    key = (limits.header_timeout, limits.max_connections)
    if key in _PROTOCOLS:
        return _PROTOCOLS[key]
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    def raw(status: str, obj: dict) -> bytes:
        body = _json_bytes(obj)
        return (
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body

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
                self._arm()  # a request starts: its head has a deadline
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg):  # invalid HTTP (bad Content-Length, huge headers, ...)
            if not self.transport.is_closing():
                self.transport.write(raw("400 Bad Request", {"error": "invalid HTTP request"}))
            self.transport.close()

    _PROTOCOLS[key] = GuardedH11Protocol
    return GuardedH11Protocol
