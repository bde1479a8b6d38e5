"""POST /v1/embeddings: OpenAI's request and response shapes, so its clients work as-is."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request, Response

from ..deps import Authorized, ServiceDep
from ..errors import ApiError
from ..schemas import ErrorBody, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse
from .inference import embed_texts, json_response

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 503, 504)}
router = APIRouter(dependencies=[Authorized], responses=ERRORS, tags=["openai"])


@router.post("/v1/embeddings", response_model=OpenAIEmbeddingResponse,
             summary="OpenAI-compatible embeddings")
async def embeddings(body: OpenAIEmbeddingRequest, request: Request, service: ServiceDep) -> Response:
    inp = body.input
    if isinstance(inp, str):
        texts = [inp]
    elif inp and all(isinstance(x, str) for x in inp):
        texts = list(inp)  # type: ignore[arg-type]
    elif not inp:
        raise ApiError(422, "validation", "input must not be empty")
    else:
        raise ApiError(400, "unsupported",
                       "token-id input is not supported (ids of OpenAI's tokenizer do not map onto "
                       "WordPiece); send strings")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(422, "validation", f"input[{i}] is empty or whitespace only")
    backend, vectors, tokens = await embed_texts(service, request, body.model, texts, True, None, True)
    if body.dimensions is not None and body.dimensions != backend.hidden_size:
        raise ApiError(400, "unsupported",
                       f"dimensions={body.dimensions} is not supported: model {backend.name!r} "
                       f"returns {backend.hidden_size}")
    data = []
    for i, v in enumerate(vectors):
        emb: list[float] | str = v
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI encodes it
            emb = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return json_response({
        "object": "list",
        "data": data,
        "model": backend.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
