"""Schemathesis against the running app's own OpenAPI schema (issue 14, item 4).

Valid and invalid requests generated from the schema, a bounded number per operation with a
fixed seed (Hypothesis' derandomize): no 5xx, and every error in the one error-body shape.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.generation.modes import GenerationMode

from tests.app.conftest import make_settings
from tests.app.hardening_support import live

EXAMPLES_PER_OPERATION = 30
ERROR_TYPES = {"validation", "payload_too_large", "not_found", "unsupported", "overloaded",
               "unauthorized", "timeout", "internal"}


@pytest.fixture(scope="module")
def fuzz_server(ckpts):
    with live(make_settings(ckpts, max_wait_ms=0.0)) as s:
        yield s


# Every operation of the schema (test_operations_are_all_fuzzed keeps the list honest). Parametrized
# here rather than through schemathesis' pytest plugin, whose lazy loader does not run on pytest 9.
OPERATIONS = [("POST", "/classify"), ("POST", "/embed"), ("POST", "/v1/embeddings"), ("POST", "/compare"),
              ("GET", "/health"), ("GET", "/ready"), ("GET", "/info"), ("GET", "/metrics")]


def _schema(server):
    return schemathesis.openapi.from_url(f"{server.base}/openapi.json")


def _fuzz(operation, mode: GenerationMode) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(timeout=30)
        assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error", "error_type"}, (case.as_curl_command(), body)
            assert body["error_type"] in ERROR_TYPES and body["error"], body

    check()


# Valid requests to every operation, and invalid ones to those that take a body (a GET without
# parameters has no invalid form).
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + \
    [(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]


@pytest.mark.parametrize("method,path,mode", CASES, ids=lambda x: str(x))
def test_no_server_error_and_one_error_shape(fuzz_server, method, path, mode):
    _fuzz(_schema(fuzz_server)[path][method], mode)


def test_operations_added_later_are_fuzzed_too(fuzz_server):
    for result in _schema(fuzz_server).get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in OPERATIONS:
            _fuzz(op, GenerationMode.POSITIVE)
