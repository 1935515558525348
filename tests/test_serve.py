"""The web demo (FastAPI on uvicorn), run in-process on 127.0.0.1 with real HTTP clients.

A fake predictor stands in for the model wherever the model's cost does not matter; one test runs
the shipped all-4class model on a bundled field.  Resource tests measure this process's peak RSS
(the server runs in it) and the latency of ``/health`` under load.
"""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the web demo needs the serve extra: pip install "leukcore[serve]"')
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")

from _serve_util import (  # noqa: E402
    PeakRSS,
    fake_predictor,
    get_json,
    parse_response,
    png,
    png_of_zeros,
    post,
    raw_request,
    read_response,
    running,
    send_stream,
)
from leukcore.serve import BadImage, ImageTooLarge, Limits, decode_image, image_size  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"


@pytest.fixture
def server():
    calls = []
    with running(fake_predictor(calls), max_bytes=200_000) as srv:
        yield srv, calls


def _multipart(data: bytes, boundary="XyZ", name="file"):
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


# --------------------------------------------------------------------------- packaging


def test_import_leukcore_does_not_import_the_web_stack():
    code = (
        "import sys, leukcore, leukcore.serve\n"
        "from leukcore.cli import build_parser; build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'uvicorn', 'python_multipart', 'h11')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_leuk_serve_without_the_extra_says_how_to_install(monkeypatch, capsys):
    from leukcore.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'pip install "leukcore[serve]"' in err


# --------------------------------------------------------------------------- API


def test_page_loads_and_is_self_contained(server):
    srv, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        st, h, body = parse_response(read_response(s))
    page = body.decode()
    assert st == 200 and h["content-type"].startswith("text/html")
    assert '<form id="f">' in page and 'id="file"' in page and 'id="out"' in page
    assert '<option value="all-binary" selected>all-binary</option>' in page
    assert "all-4class" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert "script-src 'sha256-" in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"


def test_health(server):
    srv, _ = server
    st, body = get_json(srv.url + "/health")
    assert st == 200 and body["status"] == "ok" and "all-binary" in body["models"]
    assert body["queue"] == {"workers": 2, "capacity": 10, "busy": 0}


def test_openapi_schema_documents_the_api(server):
    srv, _ = server
    st, schema = get_json(srv.url + "/openapi.json")
    assert st == 200
    assert {"/", "/health", "/predict"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/octet-stream", "multipart/form-data"} <= set(body)


def test_predict_raw_and_multipart(server):
    srv, calls = server
    st, body, _ = post(srv.url + "/predict?model=all-4class", png())
    assert st == 200 and body["label"] == "normal" and body["model"] == "all-4class"
    assert calls[-1] == ((32, 48, 3), "all-4class")
    data, ctype = _multipart(png(20, 10))
    st, body, _ = post(srv.url + "/predict", data, ctype)
    assert st == 200 and calls[-1] == ((20, 10, 3), "all-binary")


def test_predict_errors_are_json(server):
    srv, calls = server
    cases = [
        (post(srv.url + "/predict", b"not an image"), 400, "cannot decode"),
        (post(srv.url + "/predict?model=nope", png()), 404, "unknown model"),
        (post(srv.url + "/predict", b"\0" * 300_000), 413, "too large"),
        (post(srv.url + "/predict", b""), 400, "empty"),
        (post(srv.url + "/predict", *_multipart(png(), name="other")), 400, "no field named 'file'"),
        (post(srv.url + "/predict", b"--x\r\ngarbage", "multipart/form-data; boundary=x"), 400, ""),
        (post(srv.url + "/predict", png(4, 4)), 400, "too small"),
        (post(srv.url + "/nowhere", png()), 404, "no such endpoint"),
    ]
    for (st, body, headers), want, text in cases:
        assert st == want, (want, body)
        assert headers["content-type"] == "application/json" and text in body["error"]
    assert calls == []
    st, body = get_json(srv.url + "/predict")
    assert st == 405 and "error" in body


def test_unexpected_errors_leak_no_internals():
    def broken(image, model):
        raise RuntimeError("boom in /home/secret/leukcore/field.py")

    with running(broken) as srv:
        st, body, _ = post(srv.url + "/predict", png())
        assert st == 500 and body == {"error": "internal server error"}
        assert get_json(srv.url + "/health")[0] == 200


@pytest.mark.parametrize("value", ["-1", "abc", "1e9", "99999999999999999999999", "12, 13"])
def test_bad_content_length_is_a_json_400(server, value):
    srv, calls = server
    st, h, body = raw_request(srv.port, f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {value}", png())
    assert st in (400, 413) and h["content-type"] == "application/json" and "error" in json.loads(body)
    assert b"Traceback" not in body and calls == []
    assert get_json(srv.url + "/health")[0] == 200  # and the server is fine


def test_host_header_allow_list():
    with running(allow_hosts=("demo.lan",)) as srv:
        p = srv.port
        for host, want in [
            (f"127.0.0.1:{p}", 200),
            ("localhost", 200),
            (f"[::1]:{p}", 200),
            (f"demo.lan:{p}", 200),
            ("evil.example", 403),
            (f"evil.example:{p}", 403),
            ("127.0.0.1.evil.example", 403),
            ("", 403),
        ]:
            st, h, body = raw_request(p, f"GET /health HTTP/1.1\r\nHost: {host}")
            assert st == want, (host, st, body)
            if want == 403:
                assert "Host" in json.loads(body)["error"]
    with running(allow_hosts=("*",)) as srv:
        assert raw_request(srv.port, "GET /health HTTP/1.1\r\nHost: anything.example")[0] == 200


def test_cross_origin_post_is_refused(server):
    srv, calls = server
    p = srv.port
    for origin, want in [
        (None, 200),
        (f"http://127.0.0.1:{p}", 200),
        ("http://evil.example", 403),
        (f"http://localhost:{p}", 403),
        ("null", 403),
        (f"https://127.0.0.1:{p}", 403),
    ]:
        hdr = f"\r\nOrigin: {origin}" if origin else ""
        body = png()
        st, h, resp = raw_request(
            p, f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: {len(body)}{hdr}", body
        )
        assert st == want, (origin, resp)
    assert len(calls) == 2
    # a cross-origin GET of the page is fine (no side effect)
    assert raw_request(p, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nOrigin: http://evil.example")[0] == 200


def test_slow_request_head_and_body_time_out():
    with running(header_timeout=1.0, body_timeout=1.0) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHo")
            t0 = time.monotonic()
            st, _, body = parse_response(read_response(s))
            assert st == 408 and time.monotonic() - t0 < 3
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789")
            st, _, body = parse_response(read_response(s))
            assert st == 408 and "in time" in json.loads(body)["error"]


def test_oversized_request_head_is_a_json_400(server):
    srv, _ = server
    st, h, body = raw_request(srv.port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + "a" * 20_000)
    assert st == 431 and h["content-type"] == "application/json"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:  # the same head in pieces
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            for _ in range(20):
                s.sendall(b"a" * 1000)
                time.sleep(0.01)
        except OSError:
            pass
        st, h, body = parse_response(read_response(s))
    assert st == 400 and h["content-type"] == "application/json"


def test_a_small_request_does_not_wait_behind_a_big_one():
    """The audit's 28 s wait: with two workers a small image is answered while a big one still runs."""

    def predict(image, model):
        time.sleep(4.0 if image.shape[1] > 100 else 0.0)
        return {"label": "normal", "probabilities": {"ALL": 0.1, "normal": 0.9}}

    with running(predict, workers=2) as srv:
        big = threading.Thread(target=post, args=(srv.url + "/predict", png(200, 300)))
        big.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        st, _, _ = post(srv.url + "/predict", png(20, 20))
        dt = time.perf_counter() - t0
        assert st == 200 and big.is_alive() and dt < 2.0, dt
        big.join(30)


def test_connections_are_capped():
    with running(max_connections=5) as srv:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(5)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                st, h, body = parse_response(read_response(s))
            assert st == 503 and "too many connections" in json.loads(body)["error"]
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        assert get_json(srv.url + "/health")[0] == 200


def test_unknown_default_model_is_refused_at_start():
    from leukcore.serve import make_app

    with pytest.raises(ValueError, match="unknown model 'nope'"):
        make_app(models=["all-binary"], default_model="nope", predict=fake_predictor())


def test_full_queue_answers_503_with_retry_after():
    gate = threading.Event()
    with running(fake_predictor(gate=gate), workers=1, queue=1) as srv:
        out = []
        ts = [threading.Thread(target=lambda: out.append(post(srv.url + "/predict", png())[0])) for _ in range(2)]
        for t in ts:
            t.start()
        for _ in range(500):
            if get_json(srv.url + "/health")[1]["queue"]["busy"] == 2:
                break
            time.sleep(0.01)
        st, body, headers = post(srv.url + "/predict", png())
        assert st == 503 and "queue is full" in body["error"] and headers["retry-after"] == "5"
        gate.set()
        for t in ts:
            t.join(30)
        assert out == [200, 200]
        assert get_json(srv.url + "/health")[1]["queue"]["busy"] == 0


# --------------------------------------------------------------------------- images


def test_image_size_reads_the_header_only():
    lim = Limits()
    assert image_size(png(30, 40), lim) == (40, 30)
    for data, exc in [
        (png_of_zeros(9000, 9000), ImageTooLarge),  # 81 Mpx, 80 kB
        (png_of_zeros(30000, 30000, header_only=True), ImageTooLarge),  # Pillow's own bomb error
        (png_of_zeros(1, 60000), ImageTooLarge),  # the 23 GB one
        (png_of_zeros(60000, 1), ImageTooLarge),
        (png_of_zeros(4000, 100), BadImage),  # aspect 40
        (b"GIF89a" + b"\0" * 100, BadImage),
    ]:  # not a format we open
        with pytest.raises(exc):
            image_size(data, lim)
    assert decode_image(png(30, 40)).shape == (30, 40, 3)


@pytest.mark.slow
def test_big_bodies_are_cut_at_the_limit_with_bounded_memory():
    """200 MB bodies: honest length, chunked (no length), lying lengths; refused, RSS growth < 100 MB."""
    calls = []
    total = 200_000_000
    with running(fake_predictor(calls)) as srv:  # default limit: 20 MB
        p = srv.port
        head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Type: application/octet-stream"
        results = {}
        with PeakRSS() as rss:
            results["honest"] = send_stream(p, head + f"\r\nContent-Length: {total}", total)
            results["chunked"] = send_stream(p, head + "\r\nTransfer-Encoding: chunked", total, chunked=True)
            results["negative"] = send_stream(p, head + "\r\nContent-Length: -1", total)
            results["too-short"] = send_stream(p, head + "\r\nContent-Length: 100", total)
        for name, (sent, (st, h, body)) in results.items():
            assert st is not None and 400 <= st < 500, (name, st)
            assert h["content-type"] == "application/json" and b"Traceback" not in body
            assert sent < 60_000_000, (name, sent)  # the server stopped reading early
        assert results["honest"][1][0] == 413 and results["chunked"][1][0] == 413
        assert results["honest"][0] < 5_000_000  # refused on the header alone
        assert rss.growth_mb < 100, rss.growth_mb
        print(
            f"\nRSS growth over four 200 MB uploads: {rss.growth_mb:.1f} MB; "
            f"bytes sent before refusal: { {k: v[0] for k, v in results.items()} }"
        )
        assert calls == [] and get_json(srv.url + "/health")[0] == 200


@pytest.mark.slow
def test_bomb_images_are_refused_before_decoding():
    """An 81 Mpx PNG (80 kB), a 900 Mpx header and the 1 x 60,000 PNG: 413 in well under a second."""
    calls = []
    bombs = {
        "81Mpx": png_of_zeros(9000, 9000),
        "900Mpx": png_of_zeros(30000, 30000, header_only=True),
        "1x60000": png_of_zeros(1, 60000),
        "60000x1": png_of_zeros(60000, 1),
    }
    assert len(bombs["1x60000"]) < 1000
    with running(fake_predictor(calls)) as srv:
        with PeakRSS() as rss:
            for name, data in bombs.items():
                for ctype in ("image/png", "multipart"):
                    body, ct = _multipart(data) if ctype == "multipart" else (data, ctype)
                    t0 = time.perf_counter()
                    st, resp, _ = post(srv.url + "/predict", body, ct)
                    dt = time.perf_counter() - t0
                    assert st == 413 and "too large" in resp["error"], (name, resp)
                    assert dt < 1.0, (name, dt)
        assert calls == []
        assert rss.growth_mb < 100, rss.growth_mb
        print(f"\nRSS growth over the bombs: {rss.growth_mb:.1f} MB")


# --------------------------------------------------------------------------- load


@pytest.mark.slow
def test_health_stays_fast_under_slow_predictions_and_slowloris():
    """50 concurrent predictions held by a slow model and 40 slowloris clients: /health < 1 s."""
    gate = threading.Event()
    with running(fake_predictor(gate=gate), workers=4, queue=64, header_timeout=2.0) as srv:
        p = srv.port
        codes = []
        clients = [
            threading.Thread(target=lambda: codes.append(post(srv.url + "/predict", png(), timeout=60)[0]))
            for _ in range(50)
        ]
        for t in clients:
            t.start()
        for _ in range(1000):
            if get_json(srv.url + "/health")[1]["queue"]["busy"] == 50:
                break
            time.sleep(0.01)
        slow = [socket.create_connection(("127.0.0.1", p), timeout=10) for _ in range(40)]
        head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nUser-Agent: slowloris\r\n\r\n".encode()
        stop = threading.Event()

        def feed():  # one byte per client every 0.1 s
            for i in range(len(head)):
                for s in slow:
                    try:
                        s.send(head[i : i + 1])
                    except OSError:
                        pass
                if stop.wait(0.1):
                    return

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        lat = []
        t_end = time.monotonic() + 1.8  # while the slowloris clients are all alive
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            st, body = get_json(srv.url + "/health", timeout=5)
            lat.append(time.perf_counter() - t0)
            assert st == 200 and body["queue"]["busy"] == 50
            time.sleep(0.05)
        # the slowloris clients are cut at the head deadline (2 s), each with a JSON 408
        cut = [parse_response(read_response(s, timeout=5))[0] for s in slow]
        stop.set()
        for s in slow:
            s.close()
        gate.set()
        for t in clients:
            t.join(60)
        print(
            f"\n/health latency under load: max {max(lat) * 1e3:.0f} ms, "
            f"median {sorted(lat)[len(lat) // 2] * 1e3:.0f} ms over {len(lat)} requests"
        )
        assert max(lat) < 1.0, lat
        assert cut == [408] * 40, cut
        assert codes == [200] * 50


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_predicts_a_bundled_field():
    """End to end with the shipped all-4class model on a bundled Pro-B ALL field (no fake): the demo
    answers exactly what ``leuk classify`` (``leukcore.field.classify_image``) answers for the file."""
    from leukcore.classify import Classifier
    from leukcore.field import classify_image
    from leukcore.models import list_models
    from leukcore.serve import make_server

    field = SAMPLE / "all4class" / "Pro" / "WBC-Malignant-Pro-063.jpg"
    if "all-4class" not in list_models("classification"):
        pytest.skip("needs the shipped all-4class model")
    with make_server("127.0.0.1", 0, device="cpu") as srv:
        st, body, _ = post(
            srv.url + "/predict?model=all-4class", field.read_bytes(), "image/jpeg", timeout=300
        )  # the first request loads the classifier and the detector
    assert st == 200, body
    probs = body["probabilities"]
    assert set(probs) == {"Benign", "Early", "Pre", "Pro"} and body["model"] == "all-4class"
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert body["model_label"] == max(probs, key=probs.get) and body["n_cells"] >= 1
    assert body["label"] == ("review" if body["review"] else body["model_label"])
    cli = classify_image(field, Classifier.load("all-4class", device="cpu"), device="cpu")
    cli.pop("path")
    assert {k: body[k] for k in cli} == cli
