"""A real service (uvicorn subprocess, tiny models) and a real headless Chromium for the page's tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.playground import CHROMEDRIVER, CHROMIUM, chromium, free_port
from tests.fixtures import tiny_pair, write_tiny

API_KEY = "playground-test-key"


@contextmanager
def service(models: Path, **env: str) -> Iterator[str]:
    from lab.server import start_server, stop_server, wait_ready

    port = free_port()
    proc = start_server(models, port, {"DISTIL_DEVICE": "cpu", **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=120)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("playground-models")
    tiny_pair(root)
    return root


@pytest.fixture(scope="module")
def url(models) -> Iterator[str]:
    with service(models) as u:
        yield u


@pytest.fixture(scope="module")
def keyed_url(models) -> Iterator[str]:
    with service(models, DISTIL_API_KEY=API_KEY) as u:
        yield u


@pytest.fixture(scope="module")
def crowded_url(tmp_path_factory) -> Iterator[str]:
    """A service that answers 429 easily: one queued input per model, and models slow enough (a forward
    of a long input takes tens of milliseconds) that a queue stays full under a little load."""
    root = tmp_path_factory.mktemp("slow-models")
    for role, family, seed in (("student", "distilbert", 4), ("teacher", "bert", 5)):
        write_tiny(root / role, family, "classification", seed=seed, layers=4, hidden=256, max_pos=512)
    with service(root, DISTIL_MAX_QUEUE_SIZE="1", DISTIL_MAX_CLIENT_BATCH_SIZE="1", DISTIL_WARMUP="false") as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing: `make system-deps` installs Debian's chromium "
                    "and chromium-driver")
    driver = chromium(1280, 800)
    yield driver
    driver.quit()
