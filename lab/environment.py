"""What machine and software a benchmark ran on."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capture(info: dict | None = None) -> dict:
    import torch

    try:
        import transformers

        tv = transformers.__version__
    except ImportError:
        tv = None
    env = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": tv,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if info:
        env["service"] = {"version": info.get("version"), "batching": info.get("batching"),
                          "limits": info.get("limits"),
                          "models": [{k: m.get(k) for k in ("name", "role", "family", "layers", "hidden_size",
                                                             "parameters", "device", "dtype")}
                                     for m in info.get("models", [])]}
    return env
