"""Load generation against a running service, with httpx.

Closed loop: N clients, each sends its next request when the last one returns.
Open loop: requests start on a Poisson schedule at a target rate whatever the service does,
and latency is measured from the *scheduled* start, so queueing delay is not hidden
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import httpx

SERVER_HEADERS = {"queue_ms": "x-queue-time", "tokenization_ms": "x-tokenization-time",
                  "inference_ms": "x-inference-time", "server_total_ms": "x-total-time"}


@dataclass
class Sample:
    latency_s: float
    status: int | str  # HTTP status, or the transport error's class name
    inputs: int
    tokens: int
    server: dict[str, float]


@dataclass
class Level:
    """What one load level asked for."""

    model: str
    endpoint: str
    profile: str
    mode: str  # "closed" | "open"
    concurrency: int = 1
    rate: float | None = None  # requests/s, open loop
    requests: int = 200
    duration_s: float = 10.0
    warmup_requests: int = 5


@dataclass
class Summary:
    level: dict
    sent: int
    ok: int
    errors: dict[str, int]
    elapsed_s: float
    requests_per_s: float
    inputs_per_s: float
    tokens_per_s: float
    latency_ms: dict[str, float]
    server_ms: dict[str, float]
    offered_rate: float | None = None
    extra: dict = field(default_factory=dict)


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(level: Level, samples: list[Sample], elapsed: float, offered: float | None = None) -> Summary:
    ok = [s for s in samples if s.status == 200]
    lat = [s.latency_s * 1000 for s in ok]
    errors = Counter(str(s.status) for s in samples if s.status != 200)
    server = {}
    for key in SERVER_HEADERS:
        vals = [s.server[key] for s in ok if key in s.server]
        server[key] = statistics.median(vals) if vals else float("nan")
    return Summary(
        level=asdict(level), sent=len(samples), ok=len(ok), errors=dict(errors), elapsed_s=elapsed,
        requests_per_s=len(ok) / elapsed if elapsed else 0.0,
        inputs_per_s=sum(s.inputs for s in ok) / elapsed if elapsed else 0.0,
        tokens_per_s=sum(s.tokens for s in ok) / elapsed if elapsed else 0.0,
        latency_ms={"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p95": percentile(lat, 95),
                    "p99": percentile(lat, 99), "max": max(lat) if lat else float("nan"),
                    "mean": statistics.fmean(lat) if lat else float("nan")},
        server_ms=server, offered_rate=offered,
    )


def _body(endpoint: str, model: str, texts: list[str]) -> dict:
    if endpoint == "/v1/embeddings":
        return {"input": texts, "model": model}
    return {"inputs": texts, "model": model}


async def _one(client: httpx.AsyncClient, endpoint: str, body: dict, n_tokens: int, started: float) -> Sample:
    try:
        r = await client.post(endpoint, json=body)
        status: int | str = r.status_code
        server = {k: float(r.headers[h]) for k, h in SERVER_HEADERS.items() if h in r.headers}
    except httpx.HTTPError as e:
        status, server = type(e).__name__, {}
    return Sample(time.perf_counter() - started, status, len(body.get("inputs", body.get("input", []))),
                  n_tokens, server)


async def run_level(url: str, level: Level, inputs: list[tuple[list[str], int]], seed: int = 0,
                    headers: dict | None = None) -> Summary:
    """``inputs``: (texts of one request, their token count), cycled in order."""
    n = max(level.concurrency, 64)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:
        for i in range(level.warmup_requests):  # excluded from the results
            texts, n = inputs[i % len(inputs)]
            await _one(client, level.endpoint, _body(level.endpoint, level.model, texts), n, time.perf_counter())
        if level.mode == "closed":
            return await _closed(client, level, inputs)
        return await _open(client, level, inputs, seed)


async def _closed(client: httpx.AsyncClient, level: Level, inputs) -> Summary:
    samples: list[Sample] = []
    counter = iter(range(level.requests))
    t0 = time.perf_counter()
    deadline = t0 + level.duration_s

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            texts, n = inputs[i % len(inputs)]
            samples.append(await _one(client, level.endpoint, _body(level.endpoint, level.model, texts), n,
                                      time.perf_counter()))

    await asyncio.gather(*(worker() for _ in range(level.concurrency)))
    return summarize(level, samples, time.perf_counter() - t0)


async def _open(client: httpx.AsyncClient, level: Level, inputs, seed: int) -> Summary:
    if not level.rate or level.rate <= 0:
        raise ValueError("open-loop mode needs a positive rate")
    rng = random.Random(seed)
    tasks = []
    t0 = time.perf_counter()
    next_at = t0
    for i in range(level.requests):
        next_at += rng.expovariate(level.rate)  # Poisson arrivals
        if next_at - t0 > level.duration_s:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        texts, n = inputs[i % len(inputs)]
        # Latency counts from the scheduled time, not from when the client got round to it.
        tasks.append(asyncio.create_task(_one(client, level.endpoint, _body(level.endpoint, level.model, texts), n,
                                              next_at)))
    samples = list(await asyncio.gather(*tasks))
    elapsed = time.perf_counter() - t0
    s = summarize(level, samples, elapsed, offered=len(tasks) / max(next_at - t0, 1e-9))
    return s
