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
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"device {name!r} requested, but this machine has no CUDA device (torch "
                             f"{torch.__version__}, {build}); what is here: cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {name!r} requested, but this machine has {count} CUDA device(s): "
                             + ", ".join(f"cuda:{i}" for i in range(count)))
    elif dev.type != "cpu":
        raise ValueError(f"device {name!r}: only cpu and cuda devices are supported")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
