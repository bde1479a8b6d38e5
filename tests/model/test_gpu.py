"""Parity on a CUDA device (run by bench/gpu_check.sh; skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import model
from tests.model.hf_reference import hf_class, hf_config, hf_output, padded_batch, perturb
from tests.model.test_parity import CLASSES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("size", ["small", "full"])
@pytest.mark.parametrize("name", CLASSES)
def test_parity_on_cuda(name, size, tmp_path):
    torch.manual_seed(0)
    hf = hf_class(name)(hf_config(name, size)).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = model.load(tmp_path, device="cuda")
    hf = hf.cuda()
    ids, mask = padded_batch(hf.config.vocab_size, lengths=(16, 9, 4, 1))
    ids, mask = ids.cuda(), mask.cuda()
    with torch.no_grad():
        ref, got = hf_output(hf, ids, mask), ours(ids, mask)
    real = mask.bool() if got.dim() == 3 else torch.ones(got.shape[0], dtype=torch.bool, device="cuda")
    assert (got[real] - ref[real]).abs().max().item() <= 1e-4  # float32 GPU kernels differ from CPU ones


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_close(dtype, tmp_path):
    torch.manual_seed(0)
    hf = hf_class("DistilBertModel")(hf_config("DistilBertModel", "full")).eval()
    hf.save_pretrained(tmp_path)
    full = model.load(tmp_path, device="cuda")
    half = model.load(tmp_path, device="cuda", dtype=dtype)
    ids, mask = padded_batch(30522, lengths=(64, 20))
    with torch.no_grad():
        a = full(ids.cuda(), mask.cuda())
        b = half(ids.cuda(), mask.cuda()).float()
    cos = torch.nn.functional.cosine_similarity(a[mask.cuda().bool()], b[mask.cuda().bool()], dim=-1)
    assert cos.min().item() > 0.99
