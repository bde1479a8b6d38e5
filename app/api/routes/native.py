"""POST /classify and POST /embed."""

from __future__ import annotations

from fastapi import Request, Response

from ...backends import OutputSpec
from ..deps import service_of
from ..inference import infer, inference_router, json_response
from ..schemas import ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse

router = inference_router("inference")


@router.post("/classify", response_model=ClassifyResponse,
             summary="Labels with scores for each input, sorted by score")
async def classify(body: ClassifyRequest, request: Request) -> Response:
    service = service_of(request)
    backend = service.backend_for("classify", body.model)
    service.require_classifier(backend)
    result = await infer(request, service, backend, body.texts, body.truncate,
                         OutputSpec("classify", raw_scores=body.raw_scores))
    return json_response({"model": backend.name, "predictions": [backend.scores(v) for v in result.values]})


@router.post("/embed", response_model=EmbedResponse, summary="Sentence embeddings for each input")
async def embed(body: EmbedRequest, request: Request) -> Response:
    service = service_of(request)
    backend = service.backend_for("embed", body.model)
    spec = OutputSpec("embed", pooling=body.pooling or backend.default_pooling, normalize=body.normalize)
    result = await infer(request, service, backend, body.texts, body.truncate, spec)
    return json_response({"model": backend.name, "dim": backend.hidden_size, "embeddings": result.values})
