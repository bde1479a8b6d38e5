"""The Open Inference Protocol V2 over REST (KServe, Triton): health, metadata and infer, so KServe's and
Triton's clients (``tritonclient.http``) work unchanged.

A model's inputs are BYTES texts: ``text``, and for a classifier an optional ``text_pair`` (sentence pairs, as
/classify takes them). Its outputs are FP32: ``logits`` and ``probabilities`` (a classifier, [N, labels]),
``embedding`` (an embedder, or a classifier entry that also serves embed, [N, hidden]). Request parameters:
``truncate`` (default true), and for embeddings ``pooling`` and ``normalize`` as /embed takes them. Inputs and
outputs travel as JSON or in the binary tensor data extension (app/api/tensors.py). Errors are the service's
one error body, whose ``error`` is what the protocol asks for. Infer is an inference route like /classify: the
same API key, body limits, draining refusal, batching and metrics.
"""

from __future__ import annotations

import re

import numpy as np
from fastapi import APIRouter, Request, Response

from ... import __version__
from ...backends import Backend, OutputSpec
from ...core.errors import InvalidInput, LoadFailed, Unavailable, UnknownModel, Unsupported
from ...core.service import Service
from ...settings import MAX_MODEL_NAME, MODEL_NAME_PATTERN
from ..deps import Authorized, AuthorizedUnlessOpen, ServiceDep, service_of
from ..inference import infer, inference_router, json_response
from ..tensors import encode_infer, parse_infer

router = inference_router("open inference protocol")  # infer
meta_router = APIRouter(tags=["open inference protocol"])  # health and metadata

_NAME = re.compile(MODEL_NAME_PATTERN)
CLASSIFY_OUTPUTS = ("logits", "probabilities")
PLATFORMS = {"torch": "pytorch_libtorch", "onnx": "onnxruntime_onnx"}


def _model(service: Service, name: str) -> Backend:
    """The entry the path names (checked like a body's model name: an odd one is not echoed whole)."""
    if len(name) > MAX_MODEL_NAME or not _NAME.match(name):
        raise UnknownModel(f"unknown model {name[:MAX_MODEL_NAME]!r}; available: {sorted(service.backends)}")
    return service.backend(name)


def _outputs(backend: Backend) -> dict[str, int]:
    """The outputs the entry answers: name -> values per input."""
    out = {}
    if backend.can_classify and "classify" in backend.serves:
        out.update(dict.fromkeys(CLASSIFY_OUTPUTS, len(backend.labels)))
    if "embed" in backend.serves:
        out["embedding"] = backend.hidden_size
    return out


@meta_router.get("/v2", summary="Server metadata (Open Inference Protocol)", dependencies=[Authorized])
async def server_metadata() -> Response:
    return json_response({"name": "distilbert-serve", "version": __version__, "extensions": ["binary_tensor_data"]})


@meta_router.get("/v2/health/live", summary="Liveness (Open Inference Protocol)", dependencies=[AuthorizedUnlessOpen])
async def live(service: ServiceDep) -> Response:
    if (problem := service.unhealthy()) is not None:
        raise LoadFailed(f"unhealthy: {problem}")
    return json_response({"live": True})


@meta_router.get("/v2/health/ready", summary="Readiness (Open Inference Protocol)",
                 dependencies=[AuthorizedUnlessOpen])
async def ready(service: ServiceDep) -> Response:
    if not service.ready:
        raise Unavailable(f"not ready: {service.status}")
    return json_response({"ready": True})


@meta_router.get("/v2/models/{name}", summary="Model metadata (Open Inference Protocol)", dependencies=[Authorized])
async def model_metadata(name: str, service: ServiceDep) -> Response:
    backend = _model(service, name)
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if backend.can_classify and "classify" in backend.serves and backend.pairs_supported:
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [-1]})
    return json_response({
        "name": backend.name, "versions": ["1"], "platform": PLATFORMS.get(backend.backend, backend.backend),
        "inputs": inputs,
        "outputs": [{"name": k, "datatype": "FP32", "shape": [-1, n]} for k, n in _outputs(backend).items()],
    })


@meta_router.get("/v2/models/{name}/ready", summary="Model readiness (Open Inference Protocol)",
                 dependencies=[Authorized])
async def model_ready(name: str, service: ServiceDep) -> Response:
    backend = _model(service, name)  # not ready: 503
    return json_response({"name": backend.name, "ready": True})


def _flag(parameters: dict, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key} must be a boolean, not {type(value).__name__}")
    return value


_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "enum": ["BYTES"]}, "parameters": {"type": "object"},
    "data": {"type": "array", "items": {"type": "string"}}}}
INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1, "maxItems": 2},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "enum": ["logits", "probabilities", "embedding"]},
            "parameters": {"type": "object"}}}}}}}}}}


@router.post("/v2/models/{name}/infer", summary="Inference (Open Inference Protocol): texts in, FP32 tensors out",
             openapi_extra=INFER_BODY)
async def model_infer(name: str, request: Request) -> Response:
    service = service_of(request)
    backend = _model(service, name)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise Unsupported("compressed request bodies are not supported; send the body uncompressed")
    req = parse_infer(await request.body(), request.headers.get("inference-header-content-length"),
                      service.settings.max_client_batch_size)
    available = _outputs(backend)
    wanted = req.outputs or [(k, req.binary_default) for k in available if k != "embedding" or len(available) == 1]
    for out_name, _ in wanted:
        if out_name not in available:
            raise Unsupported(f"model {backend.name!r} has no output {out_name[:64]!r}; its outputs: "
                              f"{', '.join(available)}")
    names = {n for n, _ in wanted}
    if req.pairs is not None and "embedding" in names:
        raise Unsupported("a text_pair input is for classification outputs (logits, probabilities), not embedding")
    truncate = _flag(req.parameters, "truncate", True)
    texts = list(req.texts) if req.pairs is None else list(zip(req.texts, req.pairs, strict=True))
    for i, t in enumerate(texts):
        if not all(part.strip() for part in ((t,) if isinstance(t, str) else t)):
            raise InvalidInput(f"text {i} is empty or whitespace only")
    deadline = service.deadline()
    rows: dict[str, list[list[float]]] = {}
    if names & set(CLASSIFY_OUTPUTS):
        service.require_classifier(backend)
        raw = "logits" in names
        result = await infer(request, service, backend, texts, truncate, OutputSpec("classify", raw_scores=raw),
                             deadline)
        if raw:
            rows["logits"] = result.values
            if "probabilities" in names:  # from the same forward: softmax of the logits
                logits = np.asarray(result.values, dtype=np.float64)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                rows["probabilities"] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32).tolist()
        else:
            rows["probabilities"] = result.values
    if "embedding" in names:
        pooling = req.parameters.get("pooling", backend.default_pooling)
        if pooling not in ("mean", "cls"):
            raise InvalidInput(f"parameter pooling must be 'mean' or 'cls', not {str(pooling)[:20]!r}")
        spec = OutputSpec("embed", pooling=pooling, normalize=_flag(req.parameters, "normalize", True))
        rows["embedding"] = (await infer(request, service, backend, texts, truncate, spec, deadline)).values
    body, header_length = encode_infer(backend.name, req.id, [(n, rows[n], binary) for n, binary in wanted])
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"inference-header-content-length": str(header_length)})
