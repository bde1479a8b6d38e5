"""Backends on a CUDA device: torch in fp16/bf16 and ONNX Runtime's CUDA execution provider against
the torch fp32 reference on CPU (run by bench/gpu_check.sh; skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.backends import OutputSpec
from app.backends.torch import TorchBackend
from app.settings import ModelSpec, Settings
from tests.app.test_batching import _texts

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
SPECS = [OutputSpec("classify", raw_scores=True), OutputSpec("embed")]


def _outputs(backend, texts: list[str]) -> dict[str, np.ndarray]:
    ids = backend.tokenize(texts)
    return {s.kind: np.array(backend.forward(ids, [s] * len(ids))) for s in SPECS}


@pytest.fixture(scope="module")
def reference(ckpts):
    spec = ModelSpec(name="teacher", path=ckpts["teacher"], role="teacher")
    texts = _texts(16, seed=6)
    return spec, texts, _outputs(TorchBackend(spec, torch.device("cpu"), torch.float32), texts)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_half_precision_on_cuda(reference, precision):
    spec, texts, want = reference
    got = _outputs(TorchBackend.at_precision(spec, torch.device("cuda"), precision), texts)
    assert (got["classify"].argmax(1) == want["classify"].argmax(1)).all()
    cos = (got["embed"] * want["embed"]).sum(1)  # both normalised
    assert cos.min() > 0.999


def test_onnx_on_cuda_matches_torch(reference):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (onnxruntime-gpu is not installed)")
    from app.backends.onnx import OnnxBackend

    spec, texts, want = reference
    got = _outputs(OnnxBackend(spec.model_copy(update={"backend": "onnx"}), torch.device("cuda"), "fp32"), texts)
    for kind in want:
        np.testing.assert_allclose(got[kind], want[kind], atol=1e-4, rtol=0)


def test_settings_accept_half_precision_on_cuda():
    s = Settings(models=[{"name": "m", "path": "x", "precision": "bf16"}], device="cuda")
    assert s.precision_of(s.models[0]) == "bf16"
