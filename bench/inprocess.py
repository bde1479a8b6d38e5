"""The same models and inputs without HTTP or the batching engine: the raw model cost,
so a report shows the service overhead next to it."""

from __future__ import annotations

import statistics
import time

from app.backends.torch import TorchBackend
from app.settings import ModelSpec
from model.device import resolve_device, resolve_dtype


def load_backend(spec: ModelSpec, device: str) -> TorchBackend:
    """The model as the service would load it on ``device`` (auto: CUDA in float16, else CPU float32)."""
    dev = resolve_device(device)
    return TorchBackend(spec, dev, resolve_dtype("auto", dev))


def spec_of(info_model: dict) -> ModelSpec:
    """A served model (an entry of /info's ``models``) as a spec to load it here."""
    return ModelSpec(name=info_model["name"], path=info_model["path"], role=info_model["role"])


def measure(spec: ModelSpec, device: str, inputs: list[tuple[list[str], int]], concurrency: int,
            max_requests: int = 200, max_seconds: float = 8.0) -> dict:
    """Concurrency 1: tokenize + forward per request. Concurrency N: the next N requests as one
    batch (no sorting), i.e. what perfect batching of N simultaneous clients could do."""
    backend = load_backend(spec, device)
    wanted = backend.default_output
    backend.warmup(min(concurrency, 32))
    lat, n_inputs, tokens = [], 0, 0
    t0 = time.perf_counter()
    i = 0
    while i < max_requests and time.perf_counter() - t0 < max_seconds:
        group = inputs[i % len(inputs): i % len(inputs) + concurrency] or inputs[:concurrency]
        texts = [t for texts, _ in group for t in texts]
        s = time.perf_counter()
        ids = backend.tokenize(texts)
        backend.forward(ids, [wanted] * len(ids))
        lat.append((time.perf_counter() - s) * 1000)
        n_inputs += len(texts)
        tokens += sum(min(len(x), backend.max_length) for x in ids)
        i += len(group)
    elapsed = time.perf_counter() - t0
    return {"model": spec.name, "concurrency": concurrency, "batches": len(lat),
            "batch_p50_ms": statistics.median(lat), "inputs_per_s": n_inputs / elapsed,
            "tokens_per_s": tokens / elapsed}
