"""The same models and inputs without HTTP or the batching engine: the raw model cost,
so a report shows the service overhead next to it."""

from __future__ import annotations

import statistics
import time

from app.backends import Backend, load
from app.settings import ModelSpec, Settings


def load_backend(spec: ModelSpec, device: str) -> Backend:
    """The model as the service loads it on ``device``: its backend (torch or an ONNX export) at its precision
    (the settings' default: fp32 on CPU, fp16 on CUDA)."""
    return load(spec, Settings(models=[spec], device=device))


def spec_of(info_model: dict) -> ModelSpec:
    """A served model (an entry of /info's ``models``) as a spec to load it here: the same backend and precision."""
    return ModelSpec(name=info_model["name"], path=info_model["path"], role=info_model["role"],
                     backend=info_model.get("backend", "torch"), precision=info_model.get("precision"),
                     max_length=info_model.get("max_length"))


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
