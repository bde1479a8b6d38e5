"""POST /classify, /embed, /rerank and /tokenize."""

from __future__ import annotations

from fastapi import Request, Response

from ...backends import OutputSpec
from ...core import ranking
from ..deps import service_of
from ..inference import infer, inference_router, json_response, until_disconnect
from ..record import RequestRecord
from ..schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    RankedText,
    RerankRequest,
    TokenizeRequest,
    TokenizeResponse,
)

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


@router.post("/rerank", response_model=list[RankedText],
             summary="Texts ranked by relevance to a query, best first (a cross-encoder classifier)")
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Each (query, text) pair through the classifier; the score is app/core/ranking.py's: one label, its
    sigmoid (or logit); two labels, the probability (or logit) of the second. The shape TEI's and
    Cohere-style rerank clients read: ``[{index, score, text?}]``, sorted by score."""
    service = service_of(request)
    backend = service.backend_for("classify", body.model)
    service.require_classifier(backend)
    ranking.check_cross_encoder(backend.name, backend.labels)
    spec = OutputSpec("classify", raw_scores=ranking.wants_logits(backend.labels, body.raw_scores))
    result = await infer(request, service, backend, [(body.query, t) for t in body.texts], body.truncate, spec)
    scores = [ranking.score(v, body.raw_scores) for v in result.values]
    order = ranking.ranking(scores)[: body.top_n]
    return json_response([{"index": i, "score": scores[i], **({"text": body.texts[i]} if body.return_texts else {})}
                          for i in order])


@router.post("/tokenize", response_model=TokenizeResponse,
             summary="Ids, tokens and offsets per input, as the model would run them (no forward)")
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    service = service_of(request)
    backend = service.backend(body.model)
    record = RequestRecord.of(request)
    assert record is not None
    record.model, record.role, record.inputs, record.live_latency = backend.name, backend.role, len(body.texts), False
    out = await until_disconnect(request, service.tokenize_only(backend, body.texts, body.truncate,
                                                                service.deadline()))
    record.tokens = sum(len(t.ids) for t in out)
    return json_response({"model": backend.name, "max_length": backend.max_length, "inputs": [
        {"ids": t.ids, "tokens": t.tokens, "offsets": t.offsets, "type_ids": t.type_ids, "truncated": t.truncated}
        for t in out]})
