"""POST /compare: the teacher and the student on the same inputs, side by side (classify, embed, rerank)."""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import Request, Response

from ...backends import Backend, OutputSpec
from ...core import ranking
from ...core.service import Service
from ..deps import service_of
from ..inference import infer, inference_router, json_response, until_disconnect
from ..record import RequestRecord
from ..schemas import CompareRequest, CompareResponse

router = inference_router("compare")


DEFAULT_TOP_N = 10


def _pick(service: Service, name: str | None, role: str, task: str) -> Backend:
    """The role's entry for the task (a classifier and an embedder may be distinct entries per role)."""
    backend = service.backend_for("classify" if task == "rerank" else task, name, role)
    if task == "rerank":
        service.require_classifier(backend)
        ranking.check_cross_encoder(backend.name, backend.labels)
    return backend


async def _both(steps) -> None:
    """Run concurrently; the first failure is raised as itself and cancels the rest."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        # Collect the cancelled sibling's outcome, so no "exception was never retrieved" is logged.
        await asyncio.gather(*tasks, return_exceptions=True)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@router.post("/compare", response_model=CompareResponse,
             summary="Teacher vs student: outputs, latency, agreement and speed-up")
async def compare(body: CompareRequest, request: Request) -> Response:
    service = service_of(request)
    chosen = {"student": _pick(service, body.student, "student", body.task),
              "teacher": _pick(service, body.teacher, "teacher", body.task)}
    out: dict = {"task": body.task}
    results = {}
    deadline = service.deadline()  # one deadline for both, not one each

    async def run(role: str, backend: Backend) -> None:
        t0 = time.perf_counter()
        if body.task == "classify":
            service.require_classifier(backend)
            res = await infer(request, service, backend, body.texts, body.truncate, OutputSpec("classify"),
                              deadline, watch=False)
            results[role] = [backend.scores(v) for v in res.values]
            entry = {"model": backend.name, "predictions": results[role]}
        elif body.task == "rerank":
            spec = OutputSpec("classify", raw_scores=ranking.wants_logits(backend.labels, False))
            pairs = [(body.query, t) for t in body.texts]
            res = await infer(request, service, backend, pairs, body.truncate, spec, deadline, watch=False)
            results[role] = [ranking.score(v, False) for v in res.values]
            entry = {"model": backend.name, "ranking": [{"index": i, "score": results[role][i]}
                                                        for i in ranking.ranking(results[role])]}
        else:
            spec = OutputSpec("embed", pooling=backend.default_pooling)
            res = await infer(request, service, backend, body.texts, body.truncate, spec, deadline, watch=False)
            results[role] = res.values
            entry = {"model": backend.name, "embeddings": res.values}
        elapsed = time.perf_counter() - t0
        t = res.timings
        # latency_ms is the model's own work: the two run at once and share the compute thread,
        # so either's wall time would include the other's forwards.
        entry.update(latency_ms=round((t.tokenization_s + t.inference_s) * 1000, 3),
                     tokenization_ms=round(t.tokenization_s * 1000, 3),
                     queue_ms=round(t.queue_s * 1000, 3), inference_ms=round(t.inference_s * 1000, 3))
        out[role] = entry
        if service.engine:  # each model's part counts towards its live latency in /info (the playground's strip)
            service.engine.record_latency(backend.name, elapsed)

    # Both at once under the one deadline; a client that leaves cancels both.
    await until_disconnect(request, _both(run(role, backend) for role, backend in chosen.items()))
    record = RequestRecord.of(request)
    assert record is not None
    record.model, record.role, record.live_latency = chosen["student"].name, "student", False
    out["speedup"] = out["teacher"]["latency_ms"] / max(out["student"]["latency_ms"], 1e-6)
    if body.task == "classify":
        pairs = zip(results["student"], results["teacher"], strict=True)
        same = [s[0]["label"] == t[0]["label"] for s, t in pairs]
        out["label_agreement"] = sum(same) / len(same)
    elif body.task == "rerank":
        top_n = body.top_n or DEFAULT_TOP_N
        student, teacher = results["student"], results["teacher"]
        out["top_n"] = min(top_n, len(teacher))
        out["top_n_overlap"] = ranking.overlap(ranking.ranking(teacher), ranking.ranking(student), top_n)
        out["spearman"] = ranking.spearman(teacher, student)
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
