"""The Open Inference Protocol's (KServe V2, Triton) REST tensors: an infer request's BYTES inputs, as JSON or
in the binary tensor data extension, and FP32 outputs back the same two ways.

The binary extension (what ``tritonclient.http`` sends unless told ``binary_data=False``): the body is the JSON
header, ``Inference-Header-Content-Length`` bytes long, then each binary input's bytes in the order of the
header's inputs, each sized by its ``parameters.binary_data_size``. A BYTES tensor's elements are each a 4-byte
little-endian length and that many bytes; an FP32 output is its values, little-endian, row-major.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import InvalidInput, TooManyInputs, Unsupported

MAX_DESCRIBED = 3


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict)


class _InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[_Tensor] = Field(min_length=1, max_length=2)
    outputs: list[_Output] | None = Field(default=None, max_length=8)


@dataclass(frozen=True)
class InferRequest:
    """An infer request, parsed and checked: its texts (and pairs' second texts), what it wants back."""

    id: str | None
    parameters: dict[str, Any]
    texts: list[str]
    pairs: list[str] | None  # the optional second BYTES input: each text's text_pair
    outputs: list[tuple[str, bool]] | None  # (name, binary); None: the model's default outputs
    binary_default: bool  # parameters.binary_data_output: outputs binary unless they say otherwise


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False, include_context=False, include_input=False)[:MAX_DESCRIBED]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}"[:200] if loc else err.get("msg", "invalid")[:200])
    return "; ".join(parts)


def _flatten(data: Any, where: str, depth: int = 0) -> list[str]:
    """JSON tensor data, flat or nested row-major, as one list of strings."""
    if depth > 8:
        raise InvalidInput(f"{where}: data is nested deeper than any tensor's shape")
    out: list[str] = []
    for x in data:
        if isinstance(x, list):
            out.extend(_flatten(x, where, depth + 1))
        elif isinstance(x, str):
            out.append(x)
        else:
            raise InvalidInput(f"{where}: a BYTES element must be a string, not {type(x).__name__}")
    return out


def _bytes_elements(raw: bytes, count: int, where: str) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    out, at = [], 0
    while at < len(raw):
        if len(out) == count or at + 4 > len(raw):
            raise InvalidInput(f"{where}: the binary data holds more than the {count} elements its shape says")
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise InvalidInput(f"{where}: an element's length ({n} bytes) runs past the tensor's data")
        out.append(raw[at:at + n])
        at += n
    if len(out) != count:
        raise InvalidInput(f"{where}: the binary data holds {len(out)} elements, its shape says {count}")
    return out


def _decode(b: bytes, where: str) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"{where}: an element is not UTF-8 text") from None


def parse_infer(body: bytes, header_length: str | None, max_inputs: int) -> InferRequest:
    """An infer request's body (JSON, or JSON then binary tensors), parsed and checked: only BYTES inputs of
    texts, at most ``max_inputs`` of them, each element a string."""
    header, binary = body, b""
    if header_length is not None:
        if not header_length.isdigit() or len(header_length) > 12 or not 0 < int(header_length) <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {header_length[:20]!r} is not a length within the "
                               f"{len(body)}-byte body")
        header, binary = body[:int(header_length)], body[int(header_length):]
    try:
        parsed = _InferRequest.model_validate(orjson.loads(header))
    except orjson.JSONDecodeError:
        raise InvalidInput("the inference request header is not valid JSON") from None
    except ValidationError as e:
        raise InvalidInput(f"inference request: {_describe(e)}") from None
    texts: list[list[str]] = []
    at = 0
    for tensor in parsed.inputs:
        where = f"input {tensor.name!r}"
        if tensor.datatype != "BYTES":
            raise Unsupported(f"{where} is {tensor.datatype[:16]}; this server takes texts: datatype BYTES")
        if any(d < 0 for d in tensor.shape):
            raise InvalidInput(f"{where}: shape {tensor.shape} has a negative dimension")
        count = math.prod(tensor.shape)
        if count > max_inputs:
            raise TooManyInputs(f"{where} holds {count} texts; the limit is {max_inputs} per request")
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or at + size > len(binary):
                raise InvalidInput(f"{where}: binary_data_size {size!r} runs past the body's binary data")
            if tensor.data is not None:
                raise InvalidInput(f"{where} has both data and binary_data_size")
            values = [_decode(b, where) for b in _bytes_elements(binary[at:at + size], count, where)]
            at += size
        elif tensor.data is not None:
            values = _flatten(tensor.data, where)
            if len(values) != count:
                raise InvalidInput(f"{where}: data holds {len(values)} elements, its shape {tensor.shape} says {count}")
        else:
            raise Unsupported(f"{where} has neither data nor binary_data_size (shared memory is not supported)")
        texts.append(values)
    if not texts[0]:
        raise InvalidInput(f"input {parsed.inputs[0].name!r} holds no text (shape {parsed.inputs[0].shape}); send at "
                           "least one")
    if at != len(binary):
        raise InvalidInput(f"the body holds {len(binary) - at} bytes of binary data no input claims")
    if len(parsed.inputs) == 2:
        names = [t.name for t in parsed.inputs]
        first, second = (1, 0) if names[0] == "text_pair" else (0, 1)
        if len(texts[0]) != len(texts[1]):
            raise InvalidInput(f"inputs {names[0]!r} and {names[1]!r} hold {len(texts[0])} and {len(texts[1])} "
                               "texts; a pair input needs one text_pair per text")
        main, pairs = texts[first], texts[second]
    else:
        main, pairs = texts[0], None
    binary_default = parsed.parameters.get("binary_data_output") is True
    outputs = None
    if parsed.outputs is not None:
        outputs = [(o.name, o.parameters.get("binary_data", binary_default) is True) for o in parsed.outputs]
    return InferRequest(parsed.id, parsed.parameters, main, pairs, outputs, binary_default)


def encode_infer(model: str, request_id: str | None,
                 outputs: list[tuple[str, list[list[float]], bool]]) -> tuple[bytes, int | None]:
    """The response body for (name, rows, binary) outputs, each FP32 of shape [rows, values per row]; and the
    JSON header's length when any output is binary (the Inference-Header-Content-Length), else None."""
    tensors, blobs = [], []
    for name, rows, binary in outputs:
        shape = [len(rows), len(rows[0]) if rows else 0]
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": shape}
        if binary:
            blob = np.asarray(rows, dtype="<f4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = [x for row in rows for x in row]
        tensors.append(tensor)
    head = {"model_name": model, "model_version": "1", **({"id": request_id} if request_id is not None else {}),
            "outputs": tensors}
    header = orjson.dumps(head)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
