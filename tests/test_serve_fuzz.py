"""Fuzz the web demo from its own OpenAPI schema (schemathesis), on loopback, with a fake predictor.

Every generated request (query strings, raw and multipart bodies, ...) must get a non-5xx answer
that conforms to the documented schema, in JSON (the upload page: HTML).  Bounded to keep it short.
"""

import pytest

pytest.importorskip("fastapi", reason='the web demo needs the serve extra: pip install "leukcore[serve]"')
schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (the dev extra)")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from _serve_util import MODELS, fake_predictor, get_json, running  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    calls = []
    with running(fake_predictor(calls), max_bytes=1_000_000) as srv:
        yield srv, calls


def _schema():
    """The schema the server publishes at /openapi.json, built from the same app factory."""
    from leukcore.serve import make_app

    return make_app(models=MODELS, predict=fake_predictor()).app.openapi()


schema = schemathesis.openapi.from_dict(_schema())


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz_the_api_from_its_schema(case, demo):
    srv, _ = demo
    response = case.call(base_url=srv.url, timeout=30)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
    ctype = (response.headers.get("content-type") or [""])[0]  # schemathesis: header -> list
    if case.path == "/" and response.status_code == 200:
        assert ctype.startswith("text/html")
    else:
        assert ctype == "application/json", (response.status_code, ctype)
        assert "Traceback" not in response.text


def test_the_fuzzed_schema_is_the_published_one(demo):
    srv, _ = demo
    assert get_json(srv.url + "/openapi.json") == (200, _schema())


def test_fuzzing_left_the_server_healthy(demo):
    srv, _ = demo
    st, body = get_json(srv.url + "/health")
    assert st == 200 and body["queue"]["busy"] == 0
