"""POST /compare: the teacher and the student on the same inputs, side by side."""

from __future__ import annotations

import math
import time

from fastapi import APIRouter, Request, Response

from ..deps import Authorized, ServiceDep
from ..errors import ApiError
from ..schemas import CompareRequest, CompareResponse, ErrorBody
from ..service import Service
from .inference import classify_texts, embed_texts, json_response

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 503, 504)}
router = APIRouter(dependencies=[Authorized], responses=ERRORS, tags=["compare"])


def _pick(service: Service, name: str | None, role: str) -> str:
    service.backend(None)  # raises 503 while not ready
    if name:
        service.backend(name)
        return name
    for b in service.backends.values():
        if b.role == role:
            return b.name
    raise ApiError(400, "unsupported", f"no model with role {role!r} is configured; name one with '{role}'")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@router.post("/compare", response_model=CompareResponse,
             summary="Teacher vs student: outputs, latency, agreement and speed-up")
async def compare(body: CompareRequest, request: Request, service: ServiceDep) -> Response:
    names = {"student": _pick(service, body.student, "student"),
             "teacher": _pick(service, body.teacher, "teacher")}
    out: dict = {"task": body.task}
    results = {}
    # One after the other, so neither model's latency includes the other's work.
    for role, name in names.items():
        t0 = time.perf_counter()
        if body.task == "classify":
            _, preds = await classify_texts(service, request, name, body.texts, body.truncate, False)
            results[role] = preds
            entry = {"model": name, "predictions": preds}
        else:
            _, vecs, _ = await embed_texts(service, request, name, body.texts, body.truncate, None, True)
            results[role] = vecs
            entry = {"model": name, "embeddings": vecs}
        entry["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        out[role] = entry
    request.state.model, request.state.role = names["student"], "student"
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
