"""Issue 14: bounded cost per request and contained faults, one test per finding.

Black-box over HTTP (uvicorn in a thread, or the TestClient with the lifespan running); where a
fault cannot be provoked from outside (a hung or failing forward, a dead thread), a seam wraps the
real backend's ``forward`` (tests/app/hardening_support.py).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import ModelSpec, Settings
from tests.app.conftest import make_settings, wait_ready
from tests.app.hardening_support import Gate, live, metric_values, port_of, raw_request, wait_until
from tests.fixtures import VOCAB, tiny_tokenizer, write_tiny

ERROR_KEYS = {"error", "error_type"}


def check_error(r: httpx.Response, statuses: tuple[int, ...], error_type: str | None = None) -> dict:
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == ERROR_KEYS, body
    if error_type:
        assert body["error_type"] == error_type, body
    return body


@pytest.fixture(scope="module")
def srv(ckpts):
    with live(make_settings(ckpts)) as s:
        yield s


# -- 1. bounded cost before any work ------------------------------------------------------------

def _int_list_body(n: int = 990_000) -> bytes:
    return b'{"inputs": [' + b"1," * (n - 1) + b"1]}"  # 1.98 MB: under the 2 MB limit


def _health_answers_while(work: callable, base: str) -> list:
    """Run ``work`` in a thread; meanwhile /health must keep answering (a 3 s client timeout:
    a liveness bound on a blocked event loop, not a latency measurement)."""
    results: list = []
    t = threading.Thread(target=lambda: results.append(work()))
    t.start()
    polls = 0
    while t.is_alive():
        r = httpx.get(f"{base}/health", timeout=3)
        assert r.status_code == 200
        polls += 1
    t.join()
    assert polls > 0
    return results


def test_huge_integer_list_is_a_small_422_and_health_answers(srv):
    body = _int_list_body()
    assert 1_900_000 < len(body) < 2_000_000

    def send():
        out = []
        for path in ("/classify", "/embed", "/compare"):
            out.append(httpx.post(f"{srv.base}{path}", content=body,
                                  headers={"content-type": "application/json"}, timeout=60))
        return out

    (responses,) = _health_answers_while(send, srv.base)
    for r in responses:
        check_error(r, (422,), "validation")
        assert len(r.content) <= 4096
        assert "inputs" in r.json()["error"]


def test_huge_integer_list_to_openai_route_is_bounded(srv):
    body = b'{"model": "student", "input": [' + b"1," * 989_999 + b"1]}"

    def send():
        return httpx.post(f"{srv.base}/v1/embeddings", content=body,
                          headers={"content-type": "application/json"}, timeout=60)

    (r,) = _health_answers_while(send, srv.base)
    check_error(r, (400, 413, 422))
    assert len(r.content) <= 4096


def test_many_unknown_fields_give_one_short_error(srv):
    fields = b",".join(b'"k%d": %d' % (i, i) for i in range(4_000))
    body = b'{"inputs": "x", ' + fields + b"}"
    assert len(body) < 65_536  # under the byte scan: the parsed body's own check answers
    r = httpx.post(f"{srv.base}/classify", content=body, headers={"content-type": "application/json"}, timeout=60)
    err = check_error(r, (422,), "validation")
    assert len(r.content) <= 4096
    assert "k0" in err["error"]


@pytest.mark.parametrize("body", [
    b'{"inputs": "x", "junk": [' + b"null," * 300_000 + b"null]}",  # bulk values in a field nobody reads
    b'{"inputs": ' + b"[" * 500_000 + b"]" * 500_000 + b"}",  # nesting far past any parser's depth
    b'{"inputs": "x", ' + b",".join(b'"k%d": {}' % i for i in range(100_000)) + b"}",  # 100,000 fields
])
def test_bulk_values_are_refused_from_the_bytes_before_parsing(srv, body):
    assert 65_536 < len(body) < 2_000_000
    r = httpx.post(f"{srv.base}/classify", content=body, headers={"content-type": "application/json"}, timeout=60)
    err = check_error(r, (422,), "validation")
    assert len(r.content) <= 4096 and "JSON values outside strings" in err["error"] and "inputs" in err["error"]


def test_punctuation_inside_long_strings_is_not_counted(srv):
    """The scan counts values outside string literals only: 64 long texts full of commas, brackets
    and escaped quotes (a 200 KB body) are a valid request."""
    text = 'a, [b], {c}, "d" \\ e, ' * 120
    body = orjson.dumps({"inputs": [text] * 64, "model": "student"})
    assert len(body) > 65_536 and body.count(b",") > 20_000
    r = httpx.post(f"{srv.base}/classify", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["predictions"]) == 64


def test_nesting_past_the_parsers_depth_is_a_422_like_other_malformed_json(srv):
    body = b'{"inputs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"  # small: under the byte scan
    assert len(body) < 65_536
    for path in ("/classify", "/v1/embeddings"):
        check_error(httpx.post(f"{srv.base}{path}", content=body, headers={"content-type": "application/json"},
                               timeout=30), (422,), "validation")


def test_many_wrong_typed_inputs_give_a_capped_error(srv):
    r = httpx.post(f"{srv.base}/embed", json={"inputs": [{"x": i} for i in range(60)]}, timeout=30)
    err = check_error(r, (422,), "validation")
    assert len(r.content) <= 4096 and "inputs" in err["error"]


def test_huge_string_is_cut_before_tokenization(srv):
    """A 2 MB string with truncate=true: no input ever holds more than max_length ids."""
    backend = srv.service.backends["student"]
    gate = Gate(backend)
    try:
        r = httpx.post(f"{srv.base}/embed", json={"inputs": "a " * 999_000}, timeout=60)
        assert r.status_code == 200, r.text[:300]
    finally:
        gate.restore()
    rows = [row for batch in gate.batches for row in batch]
    assert rows and max(len(row) for row in rows) <= backend.max_length


def test_huge_string_without_truncation_is_a_422(srv):
    r = httpx.post(f"{srv.base}/embed", json={"inputs": ["ok", "a " * 999_000], "truncate": False}, timeout=60)
    err = check_error(r, (422,), "validation")
    assert "inputs[1]" in err["error"] and "max length" in err["error"]


@pytest.mark.parametrize("path,field", [("/classify", "inputs"), ("/embed", "inputs"),
                                        ("/compare", "inputs"), ("/v1/embeddings", "input")])
def test_lone_surrogate_is_a_4xx(srv, path, field):
    extra = {"/compare": ', "task": "embed"', "/v1/embeddings": ', "model": "student"'}.get(path, "")
    for text in ('"ab\\ud800cd"', '["ok", "\\udfff"]', '"\\ud800\\ud800"'):
        body = f'{{"{field}": {text}{extra}}}'.encode()
        r = httpx.post(f"{srv.base}{path}", content=body, headers={"content-type": "application/json"}, timeout=30)
        check_error(r, (400, 422))
    ok = httpx.post(f"{srv.base}/embed", content=b'{"inputs": "\\ud83d\\ude00 fine"}',
                    headers={"content-type": "application/json"}, timeout=30)
    assert ok.status_code == 200, ok.text  # a valid surrogate pair is an emoji, not an error


def test_tokenization_has_its_own_executor_per_model_and_a_deadline(ckpts):
    """A model whose tokenization hangs neither starves another model nor holds its clients
    for ever: theirs get 504 at the request deadline."""
    with live(make_settings(ckpts, warmup=False, request_timeout_s=10.0)) as s:
        backend = s.service.backends["student"]
        inner, hold = backend.tokenize, threading.Event()

        def stuck(*args, **kw):
            hold.wait(60)
            return inner(*args, **kw)

        backend.tokenize = stuck
        try:
            long_text = "the movie was great " * 150  # 3000 characters: tokenized off the event loop
            with ThreadPoolExecutor(40) as pool:
                flood = [pool.submit(httpx.post, f"{s.base}/classify", json={"inputs": f"{long_text} {i}"},
                                     timeout=30) for i in range(40)]
                time.sleep(0.5)  # let the flood reach the tokenizer
                other = httpx.post(f"{s.base}/classify", json={"inputs": long_text, "model": "teacher"}, timeout=20)
                assert other.status_code == 200, other.text
                statuses = [f.result().status_code for f in flood]
        finally:
            hold.set()
            backend.tokenize = inner
        assert set(statuses) <= {429, 504}, statuses
        assert 504 in statuses


def test_queue_limit_counts_tokens(ckpts):
    with live(make_settings(ckpts, warmup=False, max_queue_tokens=600, request_timeout_s=10.0)) as s:
        gate = Gate(s.service.backends["teacher"], hold=True)
        try:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(httpx.post, f"{s.base}/classify",
                                    json={"inputs": "movie", "model": "teacher"}, timeout=30)
                assert gate.entered.wait(20)
                second = pool.submit(httpx.post, f"{s.base}/classify",  # waits in the queue
                                     json={"inputs": "film", "model": "teacher"}, timeout=30)
                wait_until(lambda: _depth(s.base, "teacher") == 1, what="one input queued")
                long_text = " ".join(["the movie was great but the plot"] * 14)  # ~100 tokens
                r = httpx.post(f"{s.base}/classify", json={"inputs": [long_text] * 8, "model": "teacher"},
                               timeout=30)
                err = check_error(r, (429,), "overloaded")
                assert "token" in err["error"]
                assert r.headers.get("retry-after")
                gate.release()
                assert first.result().status_code == 200 and second.result().status_code == 200
        finally:
            gate.restore()


def _depth(base: str, model: str) -> float:
    m = metric_values(httpx.get(f"{base}/metrics").text, "distil_queue_depth")
    return m.get(f'{{model="{model}",role="{model}"}}', 0)


def test_empty_api_key_is_refused(ckpts, monkeypatch):
    with pytest.raises(ValidationError, match="api_key"):
        make_settings(ckpts, api_key="")
    with pytest.raises(ValidationError, match="api_key"):
        make_settings(ckpts, api_key="  \n")
    from app.settings import load_settings

    monkeypatch.setenv("DISTIL_MODELS", '[{"name": "m", "path": "/nonexistent", "role": "student"}]')
    monkeypatch.setenv("DISTIL_API_KEY", "")
    with pytest.raises(ValidationError, match="api_key"):
        load_settings()


def test_api_key_is_stripped(ckpts):
    with TestClient(create_app(make_settings(ckpts, api_key="s3cret\n", warmup=False))) as c:
        wait_ready(c)
        ok = c.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text


def test_auth_comes_before_the_body(ckpts):
    with TestClient(create_app(make_settings(ckpts, api_key="k", warmup=False))) as c:
        wait_ready(c)
        malformed = b'{"inputs": ["a",'
        r = c.post("/embed", content=malformed, headers={"content-type": "application/json"})
        check_error(r, (401,), "unauthorized")
        r = c.post("/embed", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
        check_error(r, (401,), "unauthorized")
        r = c.post("/embed", content=malformed, headers={"content-type": "application/json",
                                                         "authorization": "Bearer k"})
        check_error(r, (422,), "validation")


def test_health_and_ready_carry_no_details(tmp_path):
    missing = tmp_path / "secret-dir" / "model"
    s = Settings(models=[ModelSpec(name="m", path=missing, role="student")], device="cpu")
    with TestClient(create_app(s)) as c:
        wait_until(lambda: c.get("/health").status_code == 503, what="failed load")
        for path in ("/health", "/ready"):
            r = c.get(path)
            body = check_error(r, (503,))
            assert "secret-dir" not in r.text and str(tmp_path) not in r.text and "directory" not in r.text, r.text
            assert len(body["error"]) < 80
        info = c.get("/info")  # no key configured: /info is open and says why
        assert "not a directory" in info.text or "secret-dir" in info.text


def test_docs_close_when_a_key_is_set(ckpts):
    with TestClient(create_app(make_settings(ckpts, api_key="k", warmup=False))) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code in (401, 404), path
            assert c.get(path, headers={"authorization": "Bearer k"}).status_code in (401, 404), path
    with TestClient(create_app(make_settings(ckpts, api_key="k", expose_docs=True, warmup=False))) as c:
        assert c.get("/openapi.json").status_code == 200
    with TestClient(create_app(make_settings(ckpts, warmup=False))) as c:
        assert c.get("/openapi.json").status_code == 200


def test_aborted_upload_is_not_a_500(ckpts, caplog):
    caplog.set_level("INFO", logger="app.access")
    with live(make_settings(ckpts, warmup=False)) as s:
        head = ("POST /embed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n")
        sock = raw_request(port_of(s.base), head, b'{"inputs": "')
        time.sleep(0.2)
        sock.close()

        def logged() -> bool:
            return any(getattr(r, "fields", {}).get("path") == "/embed" for r in caplog.records)

        wait_until(logged, timeout=10, what="access record of the aborted upload")
        metrics = httpx.get(f"{s.base}/metrics").text
    record = next(r.fields for r in caplog.records if getattr(r, "fields", {}).get("path") == "/embed")
    assert record["status"] == 499, record
    errors = metric_values(metrics, "distil_errors_total")
    assert not any('error_type="validation"' in k or 'error_type="internal"' in k for k in errors), errors
    assert not any('status="500"' in k for k in metric_values(metrics, "distil_requests_total"))


# -- 2. fault containment -------------------------------------------------------------------------

def test_vocabulary_larger_than_the_embedding_table_is_refused_at_load(tmp_path, caplog):
    path = write_tiny(tmp_path / "m", "distilbert", "classification", seed=4)
    from model import Tokenizer

    Tokenizer.from_vocab([*VOCAB, *[f"extra{i}" for i in range(40)]]).save(path)
    s = Settings(models=[ModelSpec(name="m", path=path, role="student")], device="cpu", warmup=False)
    with TestClient(create_app(s)) as c:
        def settled() -> bool:
            return c.get("/health").status_code == 503 or c.get("/ready").status_code == 200

        wait_until(settled, what="load finished")
        assert c.get("/ready").status_code == 503
        check_error(c.get("/health"), (503,))
    messages = " ".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert "vocab" in messages.lower() and str(len(VOCAB)) in messages


def test_one_bad_input_fails_only_its_own_request(ckpts):
    with live(make_settings(ckpts, warmup=False, max_wait_ms=50.0)) as s:
        poison = tiny_tokenizer().tokenize_ids(["cat"])[0][1]
        gate = Gate(s.service.backends["student"], hold=True, poison=poison)
        try:
            with ThreadPoolExecutor(4) as pool:
                first = pool.submit(httpx.post, f"{s.base}/classify", json={"inputs": "movie"}, timeout=30)
                assert gate.entered.wait(20)
                texts = {"good-1": "film", "bad": "cat", "good-2": "story"}
                futs = {rid: pool.submit(httpx.post, f"{s.base}/classify", json={"inputs": t},
                                         headers={"x-request-id": rid}, timeout=30)
                        for rid, t in texts.items()}

                wait_until(lambda: _depth(s.base, "student") == 3, what="three inputs queued behind the held forward")
                gate.release()
                assert first.result().status_code == 200
                res = {rid: f.result() for rid, f in futs.items()}
        finally:
            gate.restore()
        assert any(len(b) == 3 for b in gate.batches), "the three inputs were not batched together"
        assert res["good-1"].status_code == 200 and res["good-2"].status_code == 200, \
            {k: (v.status_code, v.text) for k, v in res.items()}
        bad = check_error(res["bad"], (422, 500))
        if res["bad"].status_code == 500:
            assert "bad" in bad["error"]  # the request id, to find the log line


def _health(base: str) -> int:
    return httpx.get(f"{base}/health", timeout=5).status_code


def test_watchdog_dead_compute_thread(ckpts):
    with live(make_settings(ckpts, warmup=False)) as s:
        assert _health(s.base) == 200
        s.service.compute.stop()
        wait_until(lambda: _health(s.base) == 503, timeout=15, what="/health 503 after the compute thread died")
        check_error(httpx.get(f"{s.base}/health"), (503,))


def test_watchdog_dead_batcher(ckpts):
    """A bug that kills a batcher's thread: its model would never answer again."""
    with live(make_settings(ckpts, warmup=False)) as s:
        batcher = s.service.engine.batchers["teacher"]

        def crash():
            raise RuntimeError("a bug in the batching loop")

        batcher._take_window = crash  # taken on the worker's next round, after this request
        assert httpx.post(f"{s.base}/classify", json={"inputs": "movie", "model": "teacher"}).status_code == 200
        wait_until(lambda: _health(s.base) == 503, timeout=15, what="/health 503 after a batcher died")


def test_watchdog_hung_forward(ckpts):
    with live(make_settings(ckpts, warmup=False, watchdog_forward_s=0.5)) as s:
        gate = Gate(s.service.backends["student"], hold=True)
        try:
            with ThreadPoolExecutor(1) as pool:
                fut = pool.submit(httpx.post, f"{s.base}/classify", json={"inputs": "movie"}, timeout=60)
                assert gate.entered.wait(20)
                wait_until(lambda: _health(s.base) == 503, timeout=15, what="/health 503 while a forward hangs")
                gate.release()
                assert fut.result().status_code == 200
        finally:
            gate.restore()
        wait_until(lambda: _health(s.base) == 200, timeout=15, what="/health 200 once the forward returned")


def test_nan_outputs_are_an_internal_error(tmp_path):
    path = write_tiny(tmp_path / "nan", "distilbert", "classification", seed=5, sharpen=float("nan"))
    s = Settings(models=[ModelSpec(name="m", path=path, role="student")], device="cpu", warmup=False)
    with TestClient(create_app(s)) as c:
        wait_ready(c)
        for route, body in (("/classify", {"inputs": "movie"}), ("/embed", {"inputs": "movie"}),
                            ("/v1/embeddings", {"input": "movie", "model": "m"})):
            r = c.post(route, json=body, headers={"x-request-id": "nan-1"})
            err = check_error(r, (500,), "internal")
            assert "nan-1" in err["error"] and "null" not in r.text


def test_submit_after_stop_is_503(ckpts):
    with TestClient(create_app(make_settings(ckpts, warmup=False))) as c:
        wait_ready(c)
        c.app.state.service.engine.stop()
        r = c.post("/embed", json={"inputs": "x" * 3000})  # tokenized off the event loop, then queued
        check_error(r, (503,))
        assert r.headers.get("retry-after")


def test_draining_never_goes_back_to_ready(ckpts):
    gate = threading.Event()
    app = create_app(make_settings(ckpts, warmup=False), before_load=gate.wait)
    service = app.state.service
    with TestClient(app) as c:
        service.drain()  # what SIGTERM does
        gate.set()
        assert service.loaded.wait(30)
        assert c.get("/ready").status_code == 503
        assert service.status == "draining"


def test_compare_runs_under_one_deadline(ckpts):
    """Each model alone fits the deadline, both one after the other do not: one deadline covers both."""
    with live(make_settings(ckpts, warmup=False, request_timeout_s=2.0)) as s:
        gates = [Gate(s.service.backends[n], delay_s=1.2) for n in ("student", "teacher")]
        try:
            r = httpx.post(f"{s.base}/compare", json={"inputs": "movie", "task": "classify"}, timeout=30)
        finally:
            for g in gates:
                g.restore()
        check_error(r, (504,), "timeout")


def test_models_take_turns_on_the_compute_thread(ckpts):
    """A flood on the teacher delays the student by at most one teacher batch."""
    with live(make_settings(ckpts, warmup=False, max_wait_ms=0.0)) as s:
        order: list[str] = []
        gates = {n: Gate(s.service.backends[n], hold=(n == "teacher")) for n in ("teacher", "student")}
        for n, g in gates.items():
            inner = g.inner

            def record(ids, specs, _n=n, _inner=inner):
                order.append(_n)
                return _inner(ids, specs)

            g.inner = record
        try:
            with ThreadPoolExecutor(8) as pool:
                flood = [pool.submit(httpx.post, f"{s.base}/classify",
                                     json={"inputs": ["movie"] * 32, "model": "teacher"}, timeout=60)
                         for _ in range(6)]
                assert gates["teacher"].entered.wait(20)

                def flooded() -> bool:
                    m = metric_values(httpx.get(f"{s.base}/metrics").text, "distil_queue_depth")
                    return m.get('{model="teacher",role="teacher"}', 0) >= 4 * 32

                wait_until(flooded, what="teacher queue filled")
                student = pool.submit(httpx.post, f"{s.base}/classify", json={"inputs": "film"}, timeout=60)
                wait_until(lambda: s.service.compute.waiting >= 1, what="the student's forward queued")
                gates["teacher"].release()
                assert student.result().status_code == 200
                assert all(f.result().status_code == 200 for f in flood)
        finally:
            for g in gates.values():
                g.restore()
        assert order.index("student") <= 2, order

