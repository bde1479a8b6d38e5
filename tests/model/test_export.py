"""ONNX export of our modules: the same numbers through ONNX Runtime, a cache that is rebuilt when
stale and refused when corrupt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model
from model.export import ExportError, export, ffn_down_projections, main, session
from tests.fixtures import write_tiny


def _inputs(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, max(1, length // 3):] = 0  # one padded row
    ids[mask == 0] = 0
    return ids, mask


def _run(exp, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    outs = session(exp).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return [torch.from_numpy(o) for o in outs]


def _reference(m: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        hidden = m.encoder(ids, mask)
        return [hidden, m.logits(hidden)] if m.task == "classification" else [hidden]


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("task", ["base", "mlm", "classification"])
def test_round_trip_within_1e4(tmp_path, family, task):
    path = write_tiny(tmp_path / "ckpt", family, task, seed=7, layers=2)
    m = model.load(path)
    exp = export(path, "fp32")
    assert exp.outputs == (("last_hidden_state", "logits") if task == "classification" else ("last_hidden_state",))
    fused = json.loads(exp.path.with_suffix(".json").read_text())["fused"]
    assert fused.get("Attention") == 2 and fused.get("SkipLayerNormalization") == 4  # the BERT fusions took
    for batch, length in [(1, 1), (3, 17), (5, 40)]:  # other shapes than the traced (2, 5)
        ids, mask = _inputs(batch, length, seed=length)
        got, want = _run(exp, ids, mask), _reference(m, ids, mask)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, atol=1e-4, rtol=0)
        pooled = model.pool(got[0], mask, "mean", normalize=True)
        torch.testing.assert_close(pooled, model.pool(want[0], mask, "mean", normalize=True), atol=1e-4, rtol=0)


def test_int8_close_to_fp32(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "distilbert", "classification", seed=3, layers=2)
    fp32, int8 = export(path, "fp32"), export(path, "int8")
    assert int8.path != fp32.path and int8.path.stat().st_size < fp32.path.stat().st_size
    assert json.loads(int8.path.with_suffix(".json").read_text())["precision"] == "int8"
    ids, mask = _inputs(4, 12, seed=1)
    (h8, l8), (h32, l32) = _run(int8, ids, mask), _run(fp32, ids, mask)
    assert not torch.equal(h8, h32)  # it really is another graph
    cos = torch.nn.functional.cosine_similarity(model.mean_pool(h8, mask), model.mean_pool(h32, mask))
    assert cos.min() > 0.99
    torch.testing.assert_close(l8, l32, atol=0.05, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_int8_mixed_keeps_attention_and_the_ffn_down_projections_in_fp32(tmp_path, family):
    import onnx

    path = write_tiny(tmp_path / "ckpt", family, "classification", seed=3, layers=2)
    fp32, int8, mixed = export(path, "fp32"), export(path, "int8"), export(path, "int8_mixed")
    assert mixed.path.name == "int8_mixed.onnx" and mixed.key != int8.key

    def matmuls(exp) -> dict[str, int]:
        graph = onnx.load(str(exp.path)).graph
        ops = [n.op_type for n in graph.node]
        return {"fp32": ops.count("MatMul"), "int8": ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul"),
                "attention": ops.count("Attention"), "qattention": ops.count("QAttention")}

    downs = ffn_down_projections(onnx.load(str(fp32.path)).graph)
    assert len(downs) == 2  # one per layer, each reading a GELU
    assert matmuls(int8)["fp32"] == 0 < matmuls(int8)["int8"]
    assert matmuls(mixed)["fp32"] == len(downs)  # exactly those stayed fp32; the other MatMuls are quantized
    assert 0 < matmuls(mixed)["int8"] < matmuls(int8)["int8"]
    assert (matmuls(int8)["attention"], matmuls(int8)["qattention"]) == (0, 2)  # int8: every Attention quantized
    assert (matmuls(mixed)["attention"], matmuls(mixed)["qattention"]) == (2, 0)  # mixed: both stay fp32
    ids, mask = _inputs(4, 12, seed=1)
    (hm, lm), (h32, l32) = _run(mixed, ids, mask), _run(fp32, ids, mask)
    assert not torch.equal(hm, h32)
    cos = torch.nn.functional.cosine_similarity(model.mean_pool(hm, mask), model.mean_pool(h32, mask))
    assert cos.min() > 0.99
    torch.testing.assert_close(lm, l32, atol=0.05, rtol=0)


def test_cached_export_is_reused(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "bert", "base", seed=1, layers=1)
    first = export(path, "fp32")
    stamp = first.path.stat().st_mtime_ns
    again = export(path, "fp32")
    assert again.key == first.key and again.path.stat().st_mtime_ns == stamp


def test_stale_export_rebuilt_when_checkpoint_changes(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "distilbert", "base", seed=1, layers=1)
    old = export(path, "fp32")
    write_tiny(path, "distilbert", "base", seed=2, layers=1)  # retrained in place: other weights
    new = export(path, "fp32")
    assert new.key != old.key
    ids, mask = _inputs(2, 9, seed=0)
    torch.testing.assert_close(_run(new, ids, mask)[0], _reference(model.load(path), ids, mask)[0],
                               atol=1e-4, rtol=0)


def test_corrupt_export_refused(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "bert", "classification", seed=1, layers=1)
    exp = export(path, "int8")
    data = bytearray(exp.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still parses, silently wrong numbers
    exp.path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"int8\.onnx: cached ONNX export is corrupt .*refusing to serve it"):
        export(path, "int8")
    fixed = export(path, "int8", force=True)
    assert fixed.key == exp.key and fixed.path.read_bytes() != bytes(data)


def test_unreadable_manifest_refused(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "bert", "base", seed=1, layers=1)
    exp = export(path, "fp32")
    exp.path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ExportError, match="unreadable export manifest"):
        export(path, "fp32")


def test_unknown_precision(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "bert", "base", seed=1, layers=1)
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'int8', 'int8_mixed'\).*'fp16'"):
        export(path, "fp16")


def test_command_line(tmp_path, capsys):
    path = write_tiny(tmp_path / "ckpt", "distilbert", "classification", seed=1, layers=1)
    main([str(path), "--precision", "int8"])
    out = capsys.readouterr().out
    assert "int8.onnx" in out and "outputs last_hidden_state, logits" in out
    assert (path / "onnx" / "fp32.onnx").is_file() and (path / "onnx" / "int8.onnx").is_file()
    assert np.isfinite(_run(export(path, "int8"), *_inputs(2, 6, seed=2))[1].numpy()).all()


def test_read_only_checkpoint_without_export(tmp_path):
    path = write_tiny(tmp_path / "ckpt", "bert", "base", seed=1, layers=1)
    (path / "onnx").write_text("a file where the cache folder would go")  # as unwritable as a read-only mount
    with pytest.raises(ExportError, match=r"cannot write the fp32 export there .*python -m model.export"):
        export(path, "fp32")
