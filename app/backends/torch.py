"""The PyTorch backend: our own ``model`` package, run as it is trained."""

from __future__ import annotations

from pathlib import Path

import torch

import model
from model.quantize import quantize_int8

from ..settings import ModelSpec
from .base import Backend, OutputSpec, check_vocabulary, postprocess, token_type_ids

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}


class TorchBackend(Backend):
    """One loaded checkpoint: tokenizer, module, and what the API reports about it."""

    backend = "torch"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, int8: bool = False) -> None:
        self.spec = spec
        self.name, self.role = spec.name, spec.role
        self.path = Path(spec.path)
        self.device, self.dtype = device, dtype
        self.module = model.load(self.path, device=device, dtype=dtype)
        self.parameters = sum(p.numel() for p in self.module.parameters())  # before int8 packs them away
        if int8:
            if device.type != "cpu":
                raise ValueError(f"int8 runs on CPU only, not {device}")
            self.module = quantize_int8(self.module)
        self.precision = "int8" if int8 else {v: k for k, v in PRECISION_DTYPES.items() if k != "int8"}[dtype]
        self.tokenizer = model.Tokenizer.from_dir(self.path)
        self.default_pooling = model.read_pooling(self.path)
        cfg = self.module.config
        check_vocabulary(spec.name, self.tokenizer.vocab_size, cfg.vocab_size)
        self.config = cfg
        self.family = cfg.family
        self.task = self.module.task
        self.hidden_size = cfg.hidden_size
        self.max_length = min(spec.max_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.labels = [cfg.id2label[i] for i in range(cfg.num_labels)] if self.can_classify else []

    @classmethod
    def at_precision(cls, spec: ModelSpec, device: torch.device, precision: str) -> TorchBackend:
        return cls(spec, device, PRECISION_DTYPES[precision], int8=precision == "int8")

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.tokenize_ids(texts)

    @torch.inference_mode()
    def forward(self, ids: list[list[int]], specs: list[OutputSpec],
                segments: list[int] | None = None) -> list[list[float]]:
        batch = self.tokenizer.pad(ids, self.max_length)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        mask = batch.attention_mask.to(self.device, non_blocking=True)
        types = None  # DistilBERT has no token types; BERT's default is all 0 (one segment)
        if segments and self.family == "bert":
            types = token_type_ids(tuple(batch.input_ids.shape), batch.lengths, segments).to(self.device)
        last = self.module.encoder(input_ids, mask, types)  # (B, T, C)
        logits = (lambda rows: self.module.logits(last[rows])) if self.can_classify else None
        return postprocess(specs, last, mask, logits)

    def warmup(self, max_batch: int) -> None:
        tok = self.tokenizer
        for b, t in self.warmup_shapes(max_batch):
            ids = [[tok.cls_id] + [tok.unk_id] * max(t - 2, 0) + [tok.sep_id]]
            self.forward(ids * b, [self.default_output] * b)

    def info(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "family": self.family,
            "task": self.task,
            "path": str(self.path),
            "layers": self.config.num_layers,
            "hidden_size": self.hidden_size,
            "heads": self.config.num_heads,
            "parameters": self.parameters,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "backend": self.backend,
            "precision": self.precision,
            "labels": self.labels,
            "max_length": self.max_length,
            "default_pooling": self.default_pooling,
        }
