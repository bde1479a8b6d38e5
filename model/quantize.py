"""int8 for our torch modules, the one function the service (app/backends/torch.py) and the training
library (training/variants.py, ``compress``'s variants stage) both run: torch.ao dynamic quantization.
The ONNX Runtime int8 export is model/export.py's."""

from __future__ import annotations

import warnings

import torch


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """torch.ao dynamic quantization: every Linear's weights int8 per output channel, activations
    quantised per batch at run time (CPU only). For users without onnxruntime. Returns a quantized copy."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized-tensor deprecation notes of torch 2.13
        return quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
