"""Headless Chromium driven over the DevTools protocol (websocket-client): the tests' one browser helper.

``launch_chromium(profile_dir)`` starts ``chromium --headless=new`` on a free DevTools port (a context manager
yielding the port), ``page_target(port)`` gives the first page's websocket URL and :class:`DevTools` is the
smallest protocol client (numbered commands, events kept in ``.events``).  Used by
``tests/test_serve_browser.py`` (the web demo) and ``tests/test_report_browser.py`` (the sign-off report).
Needs the Debian ``chromium`` package (``tools/test.sh`` installs it) and ``websocket-client``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time

__all__ = ["chromium_path", "launch_chromium", "page_target", "DevTools"]


def chromium_path():
    """The Chromium / Chrome binary (``$LEUK_CHROMIUM`` first), or None."""
    for name in (os.environ.get("LEUK_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@contextlib.contextmanager
def launch_chromium(profile_dir, exe=None, timeout: float = 60.0):
    """Start headless Chromium with remote debugging on a free port; yields the port, stops it after."""
    exe = exe or chromium_path()
    if exe is None:
        raise FileNotFoundError("no chromium binary (Debian: apt-get install chromium)")
    proc = subprocess.Popen(
        [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--hide-scrollbars",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = None
    t0 = time.monotonic()
    lines = []
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        line = proc.stderr.readline()
        lines.append(line)
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        proc.wait(10)
        raise RuntimeError("chromium did not start: " + "".join(lines)[-2000:])
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def page_target(port: int) -> str:
    """The websocket URL of the browser's first page."""
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise TimeoutError("no page target in chromium")


class DevTools:
    """The smallest DevTools-protocol client: numbered commands, events kept in a list."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.n = 0
        self.events = []

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_for(self, expr: str, timeout: float = 60.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(expr)

    def screenshot(self, path, width: int = 1100, height: int | None = None) -> None:
        """PNG of the page into ``path``: its top ``height`` px, or the whole document (``height`` None)."""
        self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height or 800, deviceScaleFactor=1, mobile=False
        )
        h = int(self.eval("Math.ceil(document.documentElement.getBoundingClientRect().height)") or 800)
        h = min(h, height) if height else h
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=h, deviceScaleFactor=1, mobile=False)
        data = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=False,
            clip={"x": 0, "y": 0, "width": width, "height": h, "scale": 1},
        )["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        self.ws.close()
