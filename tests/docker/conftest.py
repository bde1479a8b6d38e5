from __future__ import annotations

import os

import pytest

from .support import Scraped, scraped_under_load


def pytest_collection_modifyitems(config, items):
    """The image tests build and run containers (minutes): only `make test-image` runs them."""
    if os.environ.get("DISTIL_IMAGE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="builds and runs the container image: make test-image")
    for item in items:
        if "image" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def scraped(tmp_path_factory) -> Scraped:
    """One service + Prometheus run under load, shared by the dashboard and autoscaling tests."""
    with scraped_under_load(tmp_path_factory.mktemp("scraped")) as s:
        yield s
