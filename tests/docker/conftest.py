from __future__ import annotations

import pytest

from .support import Scraped, scraped_under_load


@pytest.fixture(scope="session")
def scraped(tmp_path_factory) -> Scraped:
    """One service + Prometheus run under load, shared by the dashboard and autoscaling tests."""
    with scraped_under_load(tmp_path_factory.mktemp("scraped")) as s:
        yield s
