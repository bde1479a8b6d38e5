"""Load generation against a running service.

Closed loop: N clients, each sends its next request when the last one returns.
Open loop: requests start on a Poisson schedule at a target rate whatever the service does,
and latency is measured from the *scheduled* start, so queueing delay is not hidden
(no coordinated omission).

Two HTTP clients: httpx (any URL: https, proxies) and ``lean``, a minimal HTTP/1.1
keep-alive client on asyncio streams for plain http://. On a small machine the load
generator shares the cores with the service; measured on the README's 2-core CPU, httpx
spends about 2-3 ms of CPU per request and ``lean`` a tenth of that, so ``lean`` leaves the
CPU to the service being measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx

from . import cpu

CLIENTS = ("httpx", "lean")

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


V2_INFER = "/v2/models/{name}/infer"  # the Open Inference Protocol's route: the model is in the path


def _path(endpoint: str, model: str) -> str:
    return endpoint.replace("{name}", model)


def _body(endpoint: str, model: str, texts: list[str]) -> dict:
    if endpoint == "/v1/embeddings":
        return {"input": texts, "model": model}
    if endpoint == V2_INFER:  # a classifier's probabilities, as /classify returns them, in the protocol's JSON
        return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
                "outputs": [{"name": "probabilities"}]}
    return {"inputs": texts, "model": model}


def _inputs(body: dict) -> int:
    """Texts in a request body of any of the endpoints."""
    if "input" in body:
        return len(body["input"])
    inputs = body.get("inputs", [])
    return inputs[0]["shape"][0] if inputs and isinstance(inputs[0], dict) else len(inputs)


class LeanClient:
    """POST JSON over HTTP/1.1 keep-alive connections, reused from an idle pool."""

    def __init__(self, base_url: str, headers: dict | None = None, timeout: float = 60.0) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http":
            raise ValueError(f"the lean client speaks plain http:// only, not {base_url!r}; use --client httpx")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {u.netloc}\r\nContent-Type: application/json\r\n{extra}"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict) -> tuple[int, dict[str, str]]:
        data = json.dumps(body).encode()
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(data)}\r\n\r\n").encode()
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    status, headers = await self._exchange(conn, head + data)
                except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as e:
                    # A kept-alive connection the server closed while idle: the request never got
                    # an answer, so it is safe to send once more on a fresh connection.
                    if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                        raise
                    conn[1].close()
                    conn = await asyncio.open_connection(self.host, self.port)
                    status, headers = await self._exchange(conn, head + data)
        except BaseException:
            conn[1].close()
            raise
        if headers.get("connection", "").lower() == "close":
            conn[1].close()
        else:
            self._idle.append(conn)
        return status, headers

    @staticmethod
    async def _exchange(conn, request: bytes) -> tuple[int, dict[str, str]]:
        reader, writer = conn
        writer.write(request)
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)  # the chunk and its CRLF
                if size == 0:
                    break
        return status, headers

    async def aclose(self) -> None:
        for _, w in self._idle:
            w.close()
        self._idle.clear()


class HttpxClient:
    def __init__(self, base_url: str, headers: dict | None, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._c = httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits, headers=headers)

    async def post(self, path: str, body: dict) -> tuple[int, dict[str, str]]:
        r = await self._c.post(path, json=body)
        return r.status_code, dict(r.headers)

    async def aclose(self) -> None:
        await self._c.aclose()


async def _one(client, endpoint: str, body: dict, n_tokens: int, started: float) -> Sample:
    try:
        status, headers = await client.post(endpoint, body)
        server = {k: float(headers[h]) for k, h in SERVER_HEADERS.items() if h in headers}
    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ValueError) as e:
        status, server = _error_name(e), {}
    return Sample(time.perf_counter() - started, status, _inputs(body), n_tokens, server)


def _error_name(e: Exception) -> str:
    # One name per failure kind whichever client saw it.
    if isinstance(e, ConnectionRefusedError | httpx.ConnectError):
        return "ConnectError"
    if isinstance(e, TimeoutError | httpx.TimeoutException):
        return "Timeout"
    return type(e).__name__


async def run_level(url: str, level: Level, inputs: list[tuple[list[str], int]], seed: int = 0,
                    headers: dict | None = None, client: str = "httpx", server_pid: int | None = None) -> Summary:
    """``inputs``: (texts of one request, their token count), cycled in order. With the
    service's ``server_pid`` (same machine), the summary also splits the CPU time per request."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    conn = LeanClient(url, headers) if client == "lean" else HttpxClient(url, headers, max(level.concurrency, 64))
    try:
        for i in range(level.warmup_requests):  # excluded from the results
            texts, n = inputs[i % len(inputs)]
            await _one(conn, _path(level.endpoint, level.model), _body(level.endpoint, level.model, texts), n,
                       time.perf_counter())
        before = cpu.snapshot(server_pid)
        if level.mode == "closed":
            s = await _closed(conn, level, inputs)
        else:
            s = await _open(conn, level, inputs, seed)
        s.extra["cpu"] = cpu.per_request(before, cpu.snapshot(server_pid), s.sent)
    finally:
        await conn.aclose()
    s.extra["client"] = client
    return s


async def _closed(client, level: Level, inputs) -> Summary:
    samples: list[Sample] = []
    counter = iter(range(level.requests))
    t0 = time.perf_counter()
    deadline = t0 + level.duration_s

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            texts, n = inputs[i % len(inputs)]
            samples.append(await _one(client, _path(level.endpoint, level.model),
                                      _body(level.endpoint, level.model, texts), n, time.perf_counter()))

    await asyncio.gather(*(worker() for _ in range(level.concurrency)))
    return summarize(level, samples, time.perf_counter() - t0)


async def _open(client, level: Level, inputs, seed: int) -> Summary:
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
        tasks.append(asyncio.create_task(_one(client, _path(level.endpoint, level.model),
                                              _body(level.endpoint, level.model, texts), n, next_at)))
    samples = list(await asyncio.gather(*tasks))
    elapsed = time.perf_counter() - t0
    s = summarize(level, samples, elapsed, offered=len(tasks) / max(next_at - t0, 1e-9))
    return s
