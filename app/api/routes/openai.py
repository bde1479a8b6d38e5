"""POST /v1/embeddings: OpenAI's request and response shapes, so its clients work as-is."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request, Response

from ...backends import OutputSpec
from ...core.errors import InvalidInput, Unsupported
from ..deps import service_of
from ..inference import infer, inference_router, json_response
from ..schemas import TOKEN_IDS_UNSUPPORTED, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse

router = inference_router("openai")


def _texts(inp: str | list) -> list[str]:
    texts = [inp] if isinstance(inp, str) else inp
    if not texts:
        raise InvalidInput("input must not be empty")
    if not all(isinstance(x, str) for x in texts):
        raise Unsupported(TOKEN_IDS_UNSUPPORTED)
    for i, t in enumerate(texts):
        if not t.strip():
            raise InvalidInput(f"input[{i}] is empty or whitespace only")
    return list(texts)


@router.post("/v1/embeddings", response_model=OpenAIEmbeddingResponse,
             summary="OpenAI-compatible embeddings")
async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
    service = service_of(request)
    texts = _texts(body.input)
    backend = service.backend_for("embed", body.model)
    if body.dimensions is not None and body.dimensions != backend.hidden_size:  # refused before any work
        raise Unsupported(f"dimensions={body.dimensions} is not supported: model {backend.name!r} "
                          f"returns {backend.hidden_size}")
    result = await infer(request, service, backend, texts, True, OutputSpec("embed", backend.default_pooling))
    data = []
    for i, v in enumerate(result.values):
        emb: list[float] | str = v
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI encodes it
            emb = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return json_response({
        "object": "list",
        "data": data,
        "model": backend.name,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    })
