"""Model backends behind one narrow interface (``base.Backend``), chosen per model entry."""

from __future__ import annotations

from ..settings import ModelSpec, Settings
from .base import Backend, OutputSpec, postprocess

__all__ = ["Backend", "OutputSpec", "load", "postprocess"]


def load(spec: ModelSpec, settings: Settings) -> Backend:
    """The backend a model entry asks for, on the configured device (call on the compute thread)."""
    from .torch import TorchBackend, resolve_device, resolve_dtype

    device = resolve_device(settings.device)
    return TorchBackend(spec, device, resolve_dtype(settings.dtype, device))
