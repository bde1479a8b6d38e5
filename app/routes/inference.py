"""POST /classify and POST /embed."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from ..backend import ModelBackend, OutputSpec
from ..deps import Authorized, ServiceDep
from ..errors import ApiError
from ..schemas import ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, ErrorBody
from ..service import Service

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 503, 504)}
router = APIRouter(dependencies=[Authorized], responses=ERRORS, tags=["inference"])


def json_response(body: dict) -> Response:
    # orjson straight to bytes: pydantic re-validation of thousands of floats costs milliseconds.
    return Response(orjson.dumps(body), media_type="application/json")


def require_classifier(backend: ModelBackend) -> None:
    if not backend.can_classify:
        raise ApiError(400, "unsupported",
                       f"model {backend.name!r} has no classification head ({backend.task}); "
                       "use /embed, or a model with a classifier")


async def classify_texts(service: Service, request: Request, name: str | None, texts: list[str],
                         truncate: bool, raw_scores: bool) -> tuple[str, list[list[dict]]]:
    backend = service.backend(name)
    require_classifier(backend)
    prep = await service.prepare(request, backend, texts, truncate)
    outs = await service.run(request, prep, OutputSpec("classify", raw_scores=raw_scores))
    return backend.name, [backend.scores(o.values) for o in outs]


async def embed_texts(service: Service, request: Request, name: str | None, texts: list[str],
                      truncate: bool, pooling: str | None, normalize: bool):
    backend = service.backend(name)
    prep = await service.prepare(request, backend, texts, truncate)
    spec = OutputSpec("embed", pooling=pooling or backend.default_pooling, normalize=normalize)
    outs = await service.run(request, prep, spec)
    return backend, [o.values for o in outs], prep.tokens


@router.post("/classify", response_model=ClassifyResponse,
             summary="Labels with scores for each input, sorted by score")
async def classify(body: ClassifyRequest, request: Request, service: ServiceDep) -> Response:
    name, preds = await classify_texts(service, request, body.model, body.texts, body.truncate,
                                       body.raw_scores)
    return json_response({"model": name, "predictions": preds})


@router.post("/embed", response_model=EmbedResponse, summary="Sentence embeddings for each input")
async def embed(body: EmbedRequest, request: Request, service: ServiceDep) -> Response:
    backend, vectors, _ = await embed_texts(service, request, body.model, body.texts, body.truncate,
                                            body.pooling, body.normalize)
    return json_response({"model": backend.name, "dim": backend.hidden_size, "embeddings": vectors})
