"""The ONNX Runtime backend: our own modules exported once (model/export.py), run by an ONNX
Runtime session. The graph ends at the encoder's last hidden states and the classifier's logits;
pooling, normalisation and softmax are ``postprocess``, the same code the torch backend runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import model
from model.checkpoint import file_sha256
from model.export import ExportError, export, session

from ..settings import ModelSpec
from .base import Backend, OutputSpec, check_vocabulary, postprocess
from .torch import TorchBackend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def check_digest(spec: ModelSpec, path: Path) -> None:
    """The export is the one the configuration names (its sha256), else ExportError: the model fails to load."""
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise ExportError(
            f"model {spec.name}: {path} has SHA-256 {actual}, not the {spec.sha256} its configuration records "
            "(sha256); refusing to serve it. If the export was rebuilt on purpose, record its digest again "
            "(experiments.variants writes it into serve.json)")


class OnnxBackend(Backend):
    backend = "onnx"
    token_types = False  # the export's inputs are input_ids and attention_mask: BERT pairs are refused (400)

    def __init__(self, spec: ModelSpec, device: torch.device, precision: str, threads: int | None = None,
                 shrink_interval_s: float = 0.0) -> None:
        self.spec = spec
        self.name, self.role = spec.name, spec.role
        self.path = Path(spec.path)
        self.device, self.precision = device, precision
        self.dtype = torch.float32  # activations; int8 is the weights' precision
        module = model.load(self.path)  # the checkpoint's config and head; the graph below is built from it
        cfg = module.config
        self.config, self.family, self.task = cfg, cfg.family, module.task
        self.parameters = sum(p.numel() for p in module.parameters())
        del module
        # Built once and cached beside the checkpoint; a corrupt cache raises ExportError here, so the
        # model fails to load (the service reports it) instead of serving wrong numbers.
        self.export = export(self.path, precision)
        if spec.sha256 is not None:
            check_digest(spec, self.export.path)
        provider = PROVIDERS[device.type]
        options = {"device_id": device.index or 0} if device.type == "cuda" else None
        self.session = session(self.export, threads, provider, options)
        # The CPU arena keeps what the largest batch needed for good (the int8 teacher under mixed shapes:
        # 1.28 GB); without an arena every run allocates afresh (29% slower on mixed shapes). So the arena
        # stays, and one run per interval releases its unused chunks at its end (3% slower).
        self._shrink = None
        if shrink_interval_s > 0 and device.type == "cpu":
            import onnxruntime as ort

            self._shrink = ort.RunOptions()
            self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._shrink_interval_s, self._last_shrink = shrink_interval_s, time.monotonic()
        self.shrinks = 0
        self.tokenizer = model.Tokenizer.from_dir(self.path)
        check_vocabulary(spec.name, self.tokenizer.vocab_size, cfg.vocab_size)
        self.default_pooling = model.read_pooling(self.path)
        self.hidden_size = cfg.hidden_size
        self.max_length = min(spec.max_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.labels = [cfg.id2label[i] for i in range(cfg.num_labels)] if self.can_classify else []

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.tokenize_ids(texts)

    def forward(self, ids: list[list[int]], specs: list[OutputSpec],
                segments: list[int] | None = None) -> list[list[float]]:
        # segments: only DistilBERT pairs reach here (no token types); BERT pairs are refused before the queue.
        batch = self.tokenizer.pad(ids, self.max_length)
        feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
        options = None
        if self._shrink is not None and time.monotonic() - self._last_shrink >= self._shrink_interval_s:
            options, self._last_shrink = self._shrink, time.monotonic()
            self.shrinks += 1
        outputs = dict(zip(self.export.outputs, self.session.run(list(self.export.outputs), feeds, options),
                           strict=True))
        last = torch.from_numpy(outputs["last_hidden_state"])  # (B, T, C)
        all_logits = torch.from_numpy(outputs["logits"]) if "logits" in outputs else None  # (B, labels)
        logits = (lambda rows: all_logits[rows]) if self.can_classify and all_logits is not None else None
        return postprocess(specs, last, batch.attention_mask, logits)

    warmup = TorchBackend.warmup  # the same shapes, through this forward

    def info(self) -> dict:
        return {**TorchBackend.info(self), "export": str(self.export.path)}
