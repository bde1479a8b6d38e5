from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ModelSpec, Settings
from tests.fixtures import tiny_pair


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("ckpts"))


def make_settings(ckpts, **kw) -> Settings:
    models = [
        ModelSpec(name="student", path=ckpts["student"], role="student"),
        ModelSpec(name="teacher", path=ckpts["teacher"], role="teacher"),
        ModelSpec(name="embedder", path=ckpts["embedder"], role="other", max_length=64),
    ]
    base = {"models": models, "device": "cpu", "max_wait_ms": 2.0}
    base.update(kw)
    return Settings(**base)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/ready').json()}")


@pytest.fixture(scope="module")
def client(ckpts):
    app = create_app(make_settings(ckpts))
    with TestClient(app) as c:
        wait_ready(c)
        yield c
