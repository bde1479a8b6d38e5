"""Device and dtype names ("auto", "cpu", "cuda:1", "float16") to torch objects: the one
resolver the service, the trainer and the benchmarks share."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto``: the GPU when CUDA is available (``cuda:local_rank`` for one process of several),
    else the CPU. An explicit CUDA device without CUDA is an error, not a silent fallback."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if local_rank is None else f"cuda:{local_rank}")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
