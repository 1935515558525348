"""A real browser against the web demo: headless Chromium, driven over the DevTools protocol.

Loads the upload page, puts a bundled blood-smear field in the file input (``DOM.setFileInputFiles``),
clicks *Predict* and reads the answer the page shows.  The server is the real one (uvicorn, the
page's inline script under its Content-Security-Policy, Host and Origin checks) with a fake
predictor that reports the decoded image's size, so the test proves the bytes the browser uploaded
are the field's.  Needs the Debian ``chromium`` package (``tools/test.sh`` installs it).
"""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the web demo needs the serve extra: pip install "leukcore[serve]"')
websocket = pytest.importorskip("websocket", reason="needs websocket-client (the dev extra)")

from _serve_util import fake_predictor, running  # noqa: E402

FIELD = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample" / "bccd" / "BloodImage_00005.jpg"


def _chromium():
    for name in (os.environ.get("LEUK_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """The smallest DevTools-protocol client: numbered commands, events kept in a list."""

    def __init__(self, ws_url: str):
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

    def close(self):
        self.ws.close()


@pytest.fixture
def chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium; tools/test.sh installs it)")
    proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    t0 = time.monotonic()
    lines = []
    while time.monotonic() - t0 < 60 and proc.poll() is None:
        line = proc.stderr.readline()
        lines.append(line)
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        pytest.fail("chromium did not start: " + "".join(lines)[-2000:])
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _page_target(port: int) -> str:
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise TimeoutError("no page target in chromium")


@pytest.mark.slow
def test_browser_uploads_a_field_and_shows_the_result(chromium):
    from PIL import Image

    w, h = Image.open(FIELD).size
    calls = []
    with running(fake_predictor(calls)) as srv:
        dt = DevTools(_page_target(chromium))
        try:
            dt.call("Network.enable")
            dt.call("Page.enable")
            dt.call("Runtime.enable")
            dt.call("Log.enable")
            dt.call("Page.navigate", url=srv.url + "/")
            dt.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
            assert dt.eval("document.title") == "leuk demo"
            assert dt.eval("document.getElementById('model').value") == "all-binary"
            dt.eval("document.getElementById('model').value = 'all-4class'")
            root = dt.call("DOM.getDocument")["root"]["nodeId"]
            node = dt.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
            dt.call("DOM.setFileInputFiles", files=[str(FIELD)], nodeId=node)
            assert dt.eval("document.getElementById('file').files.length") == 1
            dt.eval("document.getElementById('go').click()")
            state = dt.wait_for("(s => s === 'done' || s === 'error' ? s : '')"
                                "(document.getElementById('out').dataset.state)")
            out = dt.eval("document.getElementById('out').textContent")
            status = dt.eval("document.getElementById('out').dataset.status")
            label = dt.eval("document.getElementById('label').textContent")
        finally:
            dt.close()
    assert state == "done" and status == "200", out
    result = json.loads(out)
    assert result["model"] == "all-4class" and result["label"] == "normal"
    assert (result["width"], result["height"]) == (w, h)        # the field's bytes arrived whole
    assert label == "label: normal"
    assert calls == [((h, w, 3), "all-4class")]
    urls = [e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(srv.url + "/") for u in urls), urls    # nothing off the server: works offline
    problems = [e for e in dt.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not problems, problems                                            # no script error, no CSP violation
