"""ONNX exports of our own modules, optimised by ONNX Runtime, optionally int8.

    python -m model.export CHECKPOINT --precision int8     # build ahead of time

Precisions: ``fp32``; ``int8`` (every MatMul and Attention dynamically quantized); ``int8_mixed`` (only the
attention output and FFN up-projections quantized; the fused Attention, whose Q/K errors a softmax sharpens,
and the FFN down-projections, whose inputs are GELU outputs with a long tail that per-tensor activation scales
clip, stay fp32). On all-MiniLM-L6-v2 and the peer race's 425 sentences, min cosine of the mean-pooled
embedding to fp32 / batch-32 throughput against fp32's 363 inputs/s: int8 0.984 / 694; down-projections
alone fp32 0.988 / 521; + Attention (this) 0.993 / 450; + up-projections 0.996 / 428.

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes) and
returns ``last_hidden_state`` (B, T, C), plus ``logits`` (B, labels) for a classifier. Pooling,
normalisation and softmax are not in it: they stay ours (model/pooling.py), shared by every backend.

Exporter: torch 2.13's ``torch.onnx.export`` defaults to the dynamo exporter, but its graph (12-16 s
to build even for a tiny model) keeps attention as loose MatMul/Softmax nodes that ONNX Runtime's
BERT optimizer does not fuse. The TorchScript exporter (``dynamo=False``), traced with attention
spelled out (``SelfAttention.explicit``) and the mask in the ``(1 - mask) * min`` form, gives a graph
in which the optimizer fuses Attention, SkipLayerNormalization and BiasGelu; that is the path here.

Cache: ``CHECKPOINT/onnx/{fp32,int8,int8_mixed}.onnx``, each with a manifest naming its key — SHA-256 of the
checkpoint's config and weights plus the versions of torch, onnx, onnxruntime and this exporter.
A key that differs (checkpoint retrained, libraries upgraded) rebuilds the export; a file whose
SHA-256 differs from its manifest is refused with ``ExportError``, never served.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .checkpoint import file_sha256 as _sha256
from .checkpoint import load
from .layers import SelfAttention

Precision = Literal["fp32", "int8", "int8_mixed"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "int8_mixed")
GELU_OPS = frozenset(("Gelu", "BiasGelu", "FastGelu"))
FORMAT = 2  # bump when the graph or its post-processing changes: every cached export is rebuilt
OPSET = 17
CACHE_DIR = "onnx"
WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
log = logging.getLogger("model.export")


class ExportError(RuntimeError):
    """A cached export that cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Export:
    path: Path  # the .onnx file
    precision: str
    key: str
    outputs: tuple[str, ...]  # ("last_hidden_state",) or ("last_hidden_state", "logits")


class _Graph(nn.Module):
    """What the ONNX graph computes: the encoder, and the classifier's logits when there is one."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.classify = getattr(module, "task", "") == "classification"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.module.encoder(input_ids, attention_mask)  # (B, T, C)
        return (hidden, self.module.logits(hidden)) if self.classify else (hidden,)


def output_names(module: nn.Module) -> tuple[str, ...]:
    classify = getattr(module, "task", "") == "classification"
    return ("last_hidden_state", "logits") if classify else ("last_hidden_state",)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "format": str(FORMAT), "opset": str(OPSET)}


def cache_key(checkpoint: Path, precision: str) -> str:
    """SHA-256 of the checkpoint's files and the exporter versions: what the export depends on."""
    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        f = checkpoint / name
        if f.is_file():
            h.update(f"{name}:{_sha256(f)}\n".encode())
    h.update(json.dumps({**versions(), "precision": precision}, sort_keys=True).encode())
    return h.hexdigest()


def _manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def _check_cached(onnx_path: Path, key: str) -> bool:
    """True: a valid export for ``key`` is cached. False: none, or a stale one. Raises if corrupt."""
    manifest = _manifest_path(onnx_path)
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
        recorded_key, recorded_sha = meta["key"], meta["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(f"{manifest}: unreadable export manifest ({e}); delete {onnx_path.parent} "
                          "or rebuild with `python -m model.export CHECKPOINT --force`") from e
    if recorded_key != key:
        return False  # stale: another checkpoint or other library versions
    actual = _sha256(onnx_path) if onnx_path.is_file() else "missing"
    if actual != recorded_sha:
        raise ExportError(
            f"{onnx_path}: cached ONNX export is corrupt (SHA-256 {actual[:12]} instead of {recorded_sha[:12]}); "
            f"refusing to serve it. Delete {onnx_path.parent} or rebuild with "
            f"`python -m model.export {onnx_path.parent.parent} --precision {meta.get('precision', 'fp32')} --force`"
        )
    return True


def _write_manifest(onnx_path: Path, key: str, precision: str, outputs: tuple[str, ...], stats: dict) -> None:
    meta = {"key": key, "sha256": _sha256(onnx_path), "precision": precision, "outputs": list(outputs),
            "versions": versions(), "fused": stats, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = _manifest_path(onnx_path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(_manifest_path(onnx_path))


def _trace(module: nn.Module, out: Path) -> tuple[str, ...]:
    """Our module -> raw ONNX graph through the TorchScript exporter (see the module docstring)."""
    names = output_names(module)
    attentions = [m for m in module.modules() if isinstance(m, SelfAttention)]
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]])  # (B=2, T=5), one padded row
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    try:
        for a in attentions:
            a.explicit = True
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(_Graph(module).eval(), (ids, mask), str(out), dynamo=False, opset_version=OPSET,
                              input_names=["input_ids", "attention_mask"], output_names=list(names),
                              dynamic_axes={k: v for k, v in axes.items() if k in (*names, "input_ids",
                                                                                 "attention_mask")})
    finally:
        for a in attentions:
            a.explicit = False
    return names


def _optimise(raw: Path, out: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions; returns how many of each fused operator the graph has."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    opt.save_model_to_file(str(out))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def ffn_down_projections(graph) -> list[str]:
    """The MatMul nodes that read a GELU's output: each layer's FFN down-projection."""
    producer = {out: node for node in graph.node for out in node.output}
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and (p := producer.get(n.input[0])) is not None and p.op_type in GELU_OPS]


def _quantize(fp32: Path, out: Path, mixed: bool = False) -> None:
    """Dynamic int8: weights int8 per channel, activations quantised per batch at run time;
    ``mixed``: the fused Attention and the FFN down-projections stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = ffn_down_projections(onnx.load(str(fp32), load_external_data=False).graph) if mixed else []
    if mixed and not exclude:
        raise ExportError(f"{fp32}: no MatMul reads a GELU output, so int8_mixed would be plain int8")
    # The fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference, so the
    # quantizer is told that an untyped tensor is float.
    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude,
                     op_types_to_quantize=["MatMul", "Gemm"] if mixed else ["MatMul", "Attention", "Gemm"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _atomic(build, out: Path) -> None:
    tmp = out.with_name(out.stem + ".tmp.onnx")
    build(tmp)
    tmp.replace(out)


def export(checkpoint: str | Path, precision: str = "fp32", force: bool = False) -> Export:
    """The cached export of ``checkpoint`` at ``precision``, built first if missing or stale."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} for an ONNX export, got {precision!r}")
    checkpoint = Path(checkpoint)
    cache = checkpoint / CACHE_DIR
    onnx_path = cache / f"{precision}.onnx"
    key = cache_key(checkpoint, precision)
    if not force and _check_cached(onnx_path, key):
        outputs = json.loads(_manifest_path(onnx_path).read_text())["outputs"]
        return Export(onnx_path, precision, key, tuple(outputs))

    module = load(checkpoint)  # also checks the checkpoint itself, with its own clear errors
    names = output_names(module)
    try:
        cache.mkdir(exist_ok=True)
        (cache / ".writable").touch()
        (cache / ".writable").unlink()
    except OSError as e:  # a read-only model mount (the container): the export must be built beforehand
        raise ExportError(f"{cache}: cannot write the {precision} export there ({e}); build it ahead of time "
                          f"where the checkpoint is writable: `python -m model.export {checkpoint} "
                          f"--precision {precision}`") from e
    t0 = time.perf_counter()
    if precision == "fp32":
        cfg = module.config
        raw = cache / "raw.onnx"
        _trace(module, raw)
        stats: dict[str, int] = {}
        _atomic(lambda tmp: stats.update(_optimise(raw, tmp, cfg.num_heads, cfg.hidden_size)), onnx_path)
        raw.unlink()
    else:
        fp32 = export(checkpoint, "fp32", force=force)
        stats = json.loads(_manifest_path(fp32.path).read_text())["fused"]
        _atomic(lambda tmp: _quantize(fp32.path, tmp, mixed=precision == "int8_mixed"), onnx_path)
    _write_manifest(onnx_path, key, precision, names, stats)
    log.info("exported %s as %s in %.1f s (%s)", checkpoint, onnx_path, time.perf_counter() - t0, stats)
    return Export(onnx_path, precision, key, names)


def session(exp: Export, threads: int | None = None, provider: str = "CPUExecutionProvider",
            provider_options: dict | None = None):
    """An ONNX Runtime session on ``exp`` with every graph optimisation on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # Worker threads sleep as soon as a run ends instead of spinning: on a small CPU shared with the event
    # loop, the tokenizers and torch's post-processing, spinning workers take the cores those need (a batch
    # of 32 plus post-processing: 412 ms without spinning against 522 ms with it, measured alternately on
    # the 2-core machine under load).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    if provider not in available:
        raise ExportError(f"ONNX Runtime here has no {provider} (available: {', '.join(available)})")
    try:
        return ort.InferenceSession(str(exp.path), opts, providers=[provider],
                                    provider_options=[provider_options or {}])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types with no common public base
        raise ExportError(f"{exp.path}: ONNX Runtime cannot load it ({e}); rebuild with "
                          "`python -m model.export CHECKPOINT --force`") from e


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid export is cached")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # ours; the quantizer logs every untyped tensor at INFO
    exp = export(args.checkpoint, args.precision, force=args.force)
    print(f"{exp.path} ({exp.path.stat().st_size / 1e6:.1f} MB, outputs {', '.join(exp.outputs)}, key {exp.key[:12]})")


if __name__ == "__main__":
    main()
