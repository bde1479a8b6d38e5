"""Dynamic batching: results independent of batching, real batches form, floods get 429."""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.app.conftest import make_settings
from tests.fixtures import WORDS


async def _ready(c: httpx.AsyncClient) -> None:
    for _ in range(1000):
        if (await c.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never ready")


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 5, 11, 30, 60]))) for _ in range(n)]


def _histogram_counts(metrics: str, name: str, model: str) -> dict[float, float]:
    out = {}
    for m in re.finditer(rf'{name}_bucket{{le="([^"]+)",model="{model}",role="[^"]+"}} (\S+)', metrics):
        out[float(m.group(1))] = float(m.group(2))
    return out


def _assert_batched(metrics: str, model: str) -> None:
    """The 64 inputs sent together really were batched: else "same result" would prove nothing."""
    counts = _histogram_counts(metrics, "distil_batch_size", model)
    assert counts[float("inf")] < 128  # 64 alone + fewer than 64 forwards for the concurrent 64
    assert counts[1.0] < counts[float("inf")]  # some forwards held more than one input


async def _concurrent(settings, path: str, bodies: list[dict]):
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            await _ready(c)
            alone = [await c.post(path, json=b) for b in bodies]
            together = await asyncio.gather(*(c.post(path, json=b) for b in bodies))
            metrics = (await c.get("/metrics")).text
    return alone, together, metrics


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_embeddings_do_not_depend_on_batching(ckpts, model):
    texts = _texts(64, seed=1)
    bodies = [{"inputs": t, "model": model} for t in texts]
    settings = make_settings(ckpts, max_wait_ms=20.0, max_batch_size=16, max_padding_ratio=1.2)
    alone, together, metrics = asyncio.run(_concurrent(settings, "/embed", bodies))
    for a, b in zip(alone, together, strict=True):
        assert a.status_code == b.status_code == 200
        diff = np.abs(np.array(a.json()["embeddings"]) - np.array(b.json()["embeddings"])).max()
        assert diff <= 1e-5
    _assert_batched(metrics, model)
    ratios = _histogram_counts(metrics, "distil_padding_ratio", model)
    assert ratios[1.2] == ratios[float("inf")]  # every forward kept padding under the cap


def test_classification_does_not_depend_on_batching(ckpts):
    texts = _texts(64, seed=2)
    bodies = [{"inputs": t, "raw_scores": True, "model": "student"} for t in texts]
    settings = make_settings(ckpts, max_wait_ms=20.0, max_batch_size=16)
    alone, together, metrics = asyncio.run(_concurrent(settings, "/classify", bodies))
    for a, b in zip(alone, together, strict=True):
        assert a.status_code == b.status_code == 200
        sa = {x["label"]: x["score"] for x in a.json()["predictions"][0]}
        sb = {x["label"]: x["score"] for x in b.json()["predictions"][0]}
        assert sa.keys() == sb.keys() and all(abs(sa[k] - sb[k]) <= 1e-5 for k in sa)
    _assert_batched(metrics, "student")


def test_multi_input_request_matches_single_inputs(client):
    texts = _texts(12, seed=3)
    batch = client.post("/embed", json={"inputs": texts, "model": "teacher"}).json()["embeddings"]
    for t, v in zip(texts, batch, strict=True):
        one = client.post("/embed", json={"inputs": t, "model": "teacher"}).json()["embeddings"][0]
        assert np.abs(np.array(one) - np.array(v)).max() <= 1e-5


def test_flood_gets_429_with_retry_after_and_no_5xx(ckpts):
    settings = make_settings(ckpts, max_queue_size=8, max_client_batch_size=8, max_batch_size=4, max_wait_ms=0.0)
    bodies = [{"inputs": _texts(4, seed=i), "model": "teacher"} for i in range(150)]

    async def flood():
        app = create_app(settings)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
                await _ready(c)
                rs = await asyncio.gather(*(c.post("/embed", json=b) for b in bodies))
                after = await c.post("/embed", json=bodies[0])
                return rs, after, (await c.get("/metrics")).text

    rs, after, metrics = asyncio.run(flood())
    codes = [r.status_code for r in rs]
    assert not [c for c in codes if c >= 500]
    assert codes.count(429) > 0 and codes.count(200) > 0
    for r in rs:
        if r.status_code == 429:
            assert r.json()["error_type"] == "overloaded" and int(r.headers["retry-after"]) >= 1
        else:
            assert len(r.json()["embeddings"]) == 4  # an accepted request is answered whole
    assert after.status_code == 200  # the service recovers once the flood is over
    assert re.search(r'distil_errors_total{endpoint="/embed",error_type="overloaded",model="teacher"', metrics)


def test_all_torch_work_runs_on_the_one_compute_thread(ckpts, monkeypatch):
    """Loading, warm-up, forwards and pooling all on one thread (see app/core/compute.py: a second
    OpenMP team on the same cores slows every forward)."""
    import threading

    from app.backends import torch as backend_mod

    seen: list[str] = []
    real_init, real_forward = backend_mod.TorchBackend.__init__, backend_mod.TorchBackend.forward

    def init(self, *a, **kw):
        seen.append(threading.current_thread().name)
        real_init(self, *a, **kw)

    def forward(self, *a, **kw):
        seen.append(threading.current_thread().name)
        return real_forward(self, *a, **kw)

    monkeypatch.setattr(backend_mod.TorchBackend, "__init__", init)
    monkeypatch.setattr(backend_mod.TorchBackend, "forward", forward)

    async def go():
        app = create_app(make_settings(ckpts))
        async with LifespanManager(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                await _ready(c)
                reqs = [c.post("/classify", json={"inputs": t, "model": "student"}) for t in _texts(8)]
                reqs += [c.post("/embed", json={"inputs": t, "model": m}) for t in _texts(4)
                         for m in ("teacher", "embedder")]
                assert all(r.status_code == 200 for r in await asyncio.gather(*reqs))

    asyncio.run(go())
    assert len(seen) > 3 + 5 * 3  # 3 loads, 5 warm-up shapes each, then the requests
    assert set(seen) == {"torch-compute"}
