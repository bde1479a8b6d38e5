"""POST /compare: the teacher and the student on the same inputs, side by side."""

from __future__ import annotations

import math
import time

from fastapi import Request, Response

from ...backends import Backend, OutputSpec
from ...core.service import Service
from ..deps import ServiceDep
from ..inference import infer, inference_router, json_response
from ..record import RequestRecord
from ..schemas import CompareRequest, CompareResponse

router = inference_router("compare")


def _pick(service: Service, name: str | None, role: str, task: str) -> Backend:
    """The role's entry for the task (a classifier and an embedder may be distinct entries per role)."""
    return service.backend_for(task, name, role)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@router.post("/compare", response_model=CompareResponse,
             summary="Teacher vs student: outputs, latency, agreement and speed-up")
async def compare(body: CompareRequest, request: Request, service: ServiceDep) -> Response:
    chosen = {"student": _pick(service, body.student, "student", body.task),
              "teacher": _pick(service, body.teacher, "teacher", body.task)}
    out: dict = {"task": body.task}
    results = {}
    # One after the other, so neither model's latency includes the other's work.
    for role, backend in chosen.items():
        t0 = time.perf_counter()
        if body.task == "classify":
            service.require_classifier(backend)
            res = await infer(request, service, backend, body.texts, body.truncate, OutputSpec("classify"))
            results[role] = [backend.scores(v) for v in res.values]
            entry = {"model": backend.name, "predictions": results[role]}
        else:
            spec = OutputSpec("embed", pooling=backend.default_pooling)
            res = await infer(request, service, backend, body.texts, body.truncate, spec)
            results[role] = res.values
            entry = {"model": backend.name, "embeddings": res.values}
        elapsed = time.perf_counter() - t0
        t = res.timings
        entry.update(latency_ms=round(elapsed * 1000, 3), tokenization_ms=round(t.tokenization_s * 1000, 3),
                     queue_ms=round(t.queue_s * 1000, 3), inference_ms=round(t.inference_s * 1000, 3))
        out[role] = entry
        if service.engine:  # each model's part counts towards its live latency in /info (the playground's strip)
            service.engine.record_latency(backend.name, elapsed)
    record = RequestRecord.of(request)
    assert record is not None
    record.model, record.role, record.live_latency = chosen["student"].name, "student", False
    out["speedup"] = out["teacher"]["latency_ms"] / max(out["student"]["latency_ms"], 1e-6)
    if body.task == "classify":
        pairs = zip(results["student"], results["teacher"], strict=True)
        same = [s[0]["label"] == t[0]["label"] for s, t in pairs]
        out["label_agreement"] = sum(same) / len(same)
    else:
        s_dim, t_dim = len(results["student"][0]), len(results["teacher"][0])
        if s_dim == t_dim:
            cos = [_cosine(s, t) for s, t in zip(results["student"], results["teacher"], strict=True)]
            out["cosine"] = cos
            out["mean_cosine"] = sum(cos) / len(cos)
        else:  # different spaces: a cosine between them would mean nothing
            out["cosine"] = None
            out["mean_cosine"] = None
    return json_response(out)
