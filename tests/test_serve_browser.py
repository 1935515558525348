"""A real browser against the web demo: headless Chromium, driven over the DevTools protocol.

Loads the upload page, puts a bundled blood-smear field in the file input (``DOM.setFileInputFiles``),
clicks *Predict* and reads the answer the page shows.  The server is the real one (uvicorn, the
page's inline script under its Content-Security-Policy, Host and Origin checks) with a fake
predictor that reports the decoded image's size, so the test proves the bytes the browser uploaded
are the field's.  Needs the Debian ``chromium`` package (``tools/test.sh`` installs it).
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the web demo needs the serve extra: pip install "leukcore[serve]"')
websocket = pytest.importorskip("websocket", reason="needs websocket-client (the dev extra)")

from _browser import DevTools, chromium_path, launch_chromium, page_target  # noqa: E402
from _serve_util import fake_predictor, running  # noqa: E402

FIELD = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample" / "bccd" / "BloodImage_00005.jpg"


@pytest.fixture
def chromium(tmp_path):
    if chromium_path() is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium; tools/test.sh installs it)")
    try:
        with launch_chromium(tmp_path / "profile") as port:
            yield port
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.mark.slow
def test_browser_uploads_a_field_and_shows_the_result(chromium):
    from PIL import Image

    w, h = Image.open(FIELD).size
    calls = []
    with running(fake_predictor(calls)) as srv:
        dt = DevTools(page_target(chromium))
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
            state = dt.wait_for(
                "(s => s === 'done' || s === 'error' ? s : '')(document.getElementById('out').dataset.state)"
            )
            out = dt.eval("document.getElementById('out').textContent")
            status = dt.eval("document.getElementById('out').dataset.status")
            label = dt.eval("document.getElementById('label').textContent")
        finally:
            dt.close()
    assert state == "done" and status == "200", out
    result = json.loads(out)
    assert result["model"] == "all-4class" and result["label"] == "normal"
    assert (result["width"], result["height"]) == (w, h)  # the field's bytes arrived whole
    assert label == "label: normal"
    assert calls == [((h, w, 3), "all-4class")]
    urls = [e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(srv.url + "/") for u in urls), urls  # nothing off the server: works offline
    problems = [
        e
        for e in dt.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert not problems, problems  # no script error, no CSP violation
