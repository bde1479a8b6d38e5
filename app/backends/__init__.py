"""Model backends behind one narrow interface (``base.Backend``), chosen per model entry."""

from __future__ import annotations

from ..settings import ModelSpec, Settings
from .base import Backend, OutputSpec, postprocess

__all__ = ["Backend", "OutputSpec", "load", "postprocess"]


def load(spec: ModelSpec, settings: Settings) -> Backend:
    """The backend a model entry asks for, on the configured device, at the precision settings
    chose for it (call on the compute thread)."""
    from model.device import resolve_device

    from .torch import TorchBackend

    device = resolve_device(settings.device)
    precision = settings.precision_of(spec, device.type)
    if spec.backend == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(spec, device, precision, settings.threads, settings.heap_trim_interval_s)
    return TorchBackend.at_precision(spec, device, precision)
