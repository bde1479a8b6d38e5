"""The service's overhead at concurrency 1, measured in alternating blocks.

On a shared or throttled machine the speed of the CPU drifts by 10-20% over minutes, which is
more than the few milliseconds of overhead being measured when HTTP and in-process runs are
minutes apart. Here blocks of requests through the service and blocks of the same inputs
in-process (tokenize + forward, on this process's main thread) alternate, so both see the
same machine, and the overhead is the difference of their medians.
"""

from __future__ import annotations

import statistics
import time

from app.settings import ModelSpec
from lab.loadgen import HttpxClient, LeanClient

from .inprocess import load_backend


async def overhead(url: str, spec: ModelSpec, device: str, inputs: list[tuple[list[str], int]],
                   rounds: int = 10, block: int = 20, client: str = "lean") -> dict:
    backend = load_backend(spec, device)
    backend.warmup(1)
    wanted = backend.default_output
    endpoint = "/classify" if backend.can_classify else "/embed"
    conn = LeanClient(url) if client == "lean" else HttpxClient(url, None, 1)
    http, raw, errors = [], [], 0
    try:
        for r in range(rounds):
            block_inputs = [inputs[(r * block + i) % len(inputs)][0] for i in range(block)]
            for texts in block_inputs:
                t0 = time.perf_counter()
                status, _ = await conn.post(endpoint, {"inputs": texts, "model": spec.name})
                if status == 200:
                    http.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1
            for texts in block_inputs:
                t0 = time.perf_counter()
                backend.forward(backend.tokenize(texts), [wanted] * len(texts))
                raw.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.aclose()
    h, p = statistics.median(http) if http else float("nan"), statistics.median(raw)
    return {"model": spec.name, "endpoint": endpoint, "rounds": rounds, "block": block, "errors": errors,
            "http_p50_ms": h, "inprocess_p50_ms": p, "overhead_ms": h - p}
