"""Issue 26: the edge. Routing decides what is inference (no path spelling reaches a model without
the key), bounded echoes of client-chosen strings, generic 503s, /info over a snapshot, the
playground's CSP. One test per finding; the path spellings go over raw sockets to a real
``python -m app`` under both HTTP parsers, since clients' libraries normalise what an attacker sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.routing import RouteTable, Target
from app.main import create_app
from app.settings import ModelSpec, Settings
from tests.app.conftest import make_settings, wait_ready
from tests.app.hardening_support import metric_values, port_of, serve_process, wait_until

KEY = "edge-key"
BODIES = {
    "/classify": {"inputs": ["a b c"]},
    "/embed": {"inputs": ["a b c"]},
    "/v1/embeddings": {"input": ["a b c"], "model": "embedder"},
    "/compare": {"inputs": ["a b c"], "task": "classify"},
    "/rerank": {"query": "a", "texts": ["a b c"]},
    "/tokenize": {"inputs": [["a b", "c"]]},
    "/v2/models/student/infer": {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b c"]}]},
}
TEMPLATES = {"/v2/models/student/infer": "/v2/models/{name}/infer"}  # the metrics' label: the route's template


def spellings(path: str) -> dict[str, str]:
    """Every other way of writing ``path`` we could think of, with what it must get: 400 (a control
    character), 401 (the same route: the key is asked), 404 (no route matches exactly); "a/b": either.
    Keep it growing."""
    head, tail = path[:2], path[2:]  # "/c" + "lassify"
    letter = "%" + f"{ord(path[1]):02X}"
    return {
        # control characters, percent-encoded: `$` in the route regex matched before a trailing "\n"
        path + "%0A": "400", path + "%0D": "400", path + "%0D%0A": "400", path + "%00": "400",
        path + "%09": "400", path + "%0a": "400", path + "%7F": "400", path + "%1B": "400",
        "/%0A" + path[1:]: "400", head + "%0A" + tail: "400", path + "%0A%0A": "400",
        path + "/%0A": "400", path + "%0A/": "400",
        # the same path, percent-encoded letters or a query: the same route, so the key is asked
        "/" + letter + path[2:]: "401", "/" + "".join(f"%{ord(c):02x}" for c in path[1:]): "401",
        path + "?x=1": "401", path + "?": "401",
        # other paths: no route matches exactly
        path + "/": "404", "/" + path: "404", path.replace("/", "//"): "404", "/." + path: "404",
        "/./" + path[1:]: "404", "/x/.." + path: "404", path + "/.": "404", path + "/..": "404",
        path.upper(): "404", path[:2].upper() + path[2:]: "404", path + "%20": "404",
        path + " ": "401/400",  # a second space: httptools reads the same target, h11 refuses the line
        path + "#x": "401/404",  # httptools drops a fragment, h11 keeps it in the path
        path + "%2F": "404", "%2F" + path[1:]: "401/400",  # no leading slash: httptools decodes it to the path
        path + "%": "404", path + "%ZZ": "404",
        path + ";x": "404", path + "#": "401/404", path + "\\": "404", path + "%5C": "404", path + "%C0%AF": "404",
        path + "%E2%80%8B": "404", path + "~": "404", path[:-1]: "404", path + path[-1]: "404",
    }


def raw(port: int, target: str, body: bytes, headers: str = "") -> bytes:
    """One request as typed, target byte for byte; the status line and head of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{headers}"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1") + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.fixture(scope="module", params=["httptools", "h11"])
def keyed(request, ckpts, tmp_path_factory):
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"},
              {"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"},
              {"name": "embedder", "path": str(ckpts["embedder"]), "role": "other", "max_length": 64}]
    env = {"DISTIL_API_KEY": KEY, "DISTIL_HTTP": request.param}
    with serve_process(tmp_path_factory.mktemp("edge"), models, env) as p:
        yield p


@pytest.mark.parametrize("path", sorted(BODIES))
def test_no_spelling_of_an_inference_path_runs_a_model_without_the_key(keyed, path):
    port, body = port_of(keyed.base), json.dumps(BODIES[path]).encode()
    ok = raw(port, path, body, f"Authorization: Bearer {KEY}\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:300]  # the route itself works with the key
    got = {}
    for target, expected in spellings(path).items():
        answer = raw(port, target, body)
        status = answer[9:12].decode()
        # h11 refuses some targets itself (400) before the app sees them: refused all the same.
        if status not in expected.split("/") and not (status == "400" and expected == "404"):
            got[target] = answer[:200]
        assert not answer.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")), (target, answer[:300])
        assert b'"predictions"' not in answer and b'"embedding' not in answer, (target, answer[:300])
    assert not got, got
    # The one keyed request is the route's one success; the refusals of its spellings that reached it
    # are counted as its auth errors (they skipped the metrics before).
    metrics = httpx.get(f"{keyed.base}/metrics").text
    label = TEMPLATES.get(path, path)
    ok = metric_values(metrics, "distil_requests_total")
    assert sum(v for k, v in ok.items() if f'endpoint="{label}"' in k and 'status="200"' in k) == 1, ok
    errors = metric_values(metrics, "distil_errors_total")
    unauthorized = sum(v for k, v in errors.items() if f'endpoint="{label}"' in k and "unauthorized" in k)
    assert unauthorized >= sum(e == "401" for e in spellings(path).values()), errors


def test_a_path_no_route_matches_is_refused_before_its_body_is_read(keyed):
    # A 3 MB declared body to a path that is nothing: answered from the head alone, not after reading it.
    with socket.create_connection(("127.0.0.1", port_of(keyed.base)), timeout=10) as s:
        s.sendall(b"POST /classify%0A HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 3000000\r\n\r\n{\"inputs\": [")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            answer += s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"control character" in answer


def test_request_ids_are_kept_only_when_short_and_plain(client):
    assert client.get("/health", headers={"x-request-id": "req-42.a:b_C"}).headers["x-request-id"] == "req-42.a:b_C"
    for bad in ("x" * 129, "a b", "a\tb", "<script>", "a\"b", "a,b", ""):
        got = client.get("/health", headers={"x-request-id": bad}).headers["x-request-id"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got), (bad, got)
    # Raw latin-1 bytes, which the old code decoded and echoed re-encoded as UTF-8.
    r = client.get("/health", headers=[(b"x-request-id", b"ab\xe9cd")])
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers["x-request-id"]


@pytest.mark.parametrize(("path", "field"), [("/classify", "model"), ("/embed", "model"),
                                             ("/v1/embeddings", "model"), ("/compare", "teacher"),
                                             ("/compare", "student"), ("/rerank", "model"),
                                             ("/tokenize", "model")])
def test_a_huge_model_name_is_a_short_422(client, path, field):
    first = {"/v1/embeddings": {"input": ["a"], "model": "embedder"}, "/rerank": {"query": "a", "texts": ["a"]}}
    body = {**first.get(path, {"inputs": ["a"]}),
            **({"task": "classify"} if path == "/compare" else {}), field: "m" * 1_500_000}
    r = client.post(path, json=body)
    assert r.status_code == 422 and r.json()["error_type"] == "validation", r.text[:300]
    assert len(r.content) < 500 and "mmmmmmmm" not in r.text, r.text[:300]
    odd = client.post(path, json={**body, field: "student\n"})
    assert odd.status_code == 422 and "student\n" not in odd.text, odd.text[:300]


def test_an_unknown_model_name_is_a_404_that_echoes_at_most_the_limit(client):
    r = client.post("/classify", json={"inputs": ["a"], "model": "n" * 64})
    assert r.status_code == 404 and r.json()["error_type"] == "not_found"
    assert len(r.content) < 400, r.text


def test_a_load_failure_gives_clients_a_generic_503_and_the_detail_behind_the_key(tmp_path):
    missing = tmp_path / "secret-dir" / "model"
    s = Settings(models=[ModelSpec(name="m", path=missing, role="student")], device="cpu", api_key="k")
    auth = {"authorization": "Bearer k"}
    with TestClient(create_app(s)) as c:
        wait_until(lambda: c.get("/health").status_code == 503, what="failed load")
        for path in ("/classify", "/embed", "/compare"):
            r = c.post(path, json={"inputs": ["a"], "task": "classify"} if path == "/compare" else {"inputs": ["a"]},
                       headers=auth)
            assert r.status_code == 503, r.text
            assert "secret-dir" not in r.text and str(tmp_path) not in r.text, r.text
        assert c.get("/info").status_code == 401
        assert "secret-dir" in c.get("/info", headers=auth).text


def test_info_reads_a_snapshot_of_the_models(ckpts):
    """The loader adds to service.backends while /info may run: iterating the live dict raised
    'dictionary changed size during iteration'. A backend's info() here adds a model mid-iteration,
    as the loader thread can."""
    with TestClient(create_app(make_settings(ckpts, warmup=False))) as c:
        wait_ready(c)
        service = c.app.state.service
        first = next(iter(service.backends.values()))
        inner = first.info

        def info_while_loading():
            service.backends.setdefault("late", first)
            return inner()

        first.info = info_while_loading
        try:
            r = c.get("/info")
        finally:
            first.info = inner
            service.backends.pop("late", None)
        assert r.status_code == 200, r.text
        assert [m["name"] for m in r.json()["models"]] == ["student", "teacher", "embedder"]


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: str | None = None
        self.blocks: dict[str, list[str]] = {"script": [], "style": []}

    def handle_starttag(self, tag, attrs):
        self.open = tag if tag in self.blocks else None

    def handle_endtag(self, tag):
        self.open = None

    def handle_data(self, data):
        if self.open:
            self.blocks[self.open].append(data)


def test_playground_sends_a_csp_that_admits_only_its_own_inline_code(client):
    r = client.get("/")
    csp = dict(p.strip().split(" ", 1) for p in r.headers["content-security-policy"].split(";"))
    assert csp["frame-ancestors"] == "'none'" and csp["default-src"] == "'none'", csp
    assert r.headers["x-content-type-options"] == "nosniff"
    parser = _Inline()
    parser.feed(r.text)
    for kind in ("script", "style"):
        digests = {"'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
                   for b in parser.blocks[kind]}
        assert digests and set(csp[f"{kind}-src"].split()) == digests, (kind, csp[f"{kind}-src"])
    assert "unsafe-inline" not in r.headers["content-security-policy"]


@pytest.mark.parametrize("direct", [False, True])
def test_inference_routes_check_the_key_themselves(ckpts, monkeypatch, direct):
    """The second layer: were the middleware to take an inference request for something else, the
    route (FastAPI's handler, or the middleware's direct call) still asks for the key."""
    real = RouteTable.resolve

    def misjudged(self, method, path):
        target = real(self, method, path)
        return Target(target.path, False, target.direct if direct else None, target.methods)

    monkeypatch.setattr(RouteTable, "resolve", misjudged)
    with TestClient(create_app(make_settings(ckpts, api_key="k", warmup=False))) as c:
        wait_until(lambda: c.get("/ready").status_code == 200, what="ready")
        for path, body in BODIES.items():
            r = c.post(path, json=body)
            assert r.status_code == 401 and r.json()["error_type"] == "unauthorized", (path, r.text)
            assert c.post(path, json=body, headers={"authorization": "Bearer k"}).status_code == 200, path


def test_the_route_table_matches_the_routers_order():
    """A static path that an earlier route with parameters also matches runs that earlier route, in the router
    and in the table alike (the table works this out once, not per request)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{x}")
    async def item(x: str) -> dict:
        return {"route": "/items/{x}"}

    @app.get("/items/special")
    async def special() -> dict:
        return {"route": "/items/special"}

    @app.get("/other")
    async def other() -> dict:
        return {"route": "/other"}

    table = RouteTable(app.routes)
    with TestClient(app) as c:
        for path in ("/items/special", "/items/1", "/other"):
            assert table.resolve("GET", path).path == c.get(path).json()["route"], path
    assert table.resolve("POST", "/other").methods == {"GET"}  # the router's 405
