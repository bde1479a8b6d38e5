"""Model backend: the narrow interface the engine calls. Pre (tokenize) -> forward ->
post (pool / softmax). Knows torch and our ``model`` package, nothing about HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

import model
from model.pooling import pool

from .settings import ModelSpec


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


@dataclass
class ForwardResult:
    last_hidden: torch.Tensor  # (B, T, C), on CPU, float32
    logits: torch.Tensor | None  # (B, labels) for classifiers


class ModelBackend:
    """One loaded checkpoint: tokenizer, module, and what the API reports about it."""

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec = spec
        self.name, self.role = spec.name, spec.role
        self.path = Path(spec.path)
        self.device, self.dtype = device, dtype
        self.module = model.load(self.path, device=device, dtype=dtype)
        self.tokenizer = model.Tokenizer.from_dir(self.path)
        self.default_pooling = model.read_pooling(self.path)
        cfg = self.module.config
        self.config = cfg
        self.family = cfg.family
        self.task = self.module.task
        self.max_length = min(spec.max_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.parameters = sum(p.numel() for p in self.module.parameters())
        self.labels = [cfg.id2label[i] for i in range(cfg.num_labels)] if self.can_classify else []

    @property
    def can_classify(self) -> bool:
        return self.task == "classification"

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.tokenize_ids(texts)

    @torch.inference_mode()
    def forward(self, ids: list[list[int]], want_logits: bool) -> ForwardResult:
        batch = self.tokenizer.pad(ids, self.max_length)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        mask = batch.attention_mask.to(self.device, non_blocking=True)
        enc = self.module.encoder
        last = enc(input_ids, mask)
        logits = self.module.logits(last) if (want_logits and self.can_classify) else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the inference timer measures the work
        return ForwardResult(
            last_hidden=last.float().cpu(),
            logits=logits.float().cpu() if logits is not None else None,
        )

    @staticmethod
    def embed(last_hidden: torch.Tensor, length: int, pooling: str, normalize: bool) -> list[float]:
        """One row of a forward's output -> a sentence embedding."""
        h = last_hidden[None, :length]  # (T, C) -> (1, t, C): only the row's real tokens
        mask = torch.ones(1, length, dtype=torch.long)
        vec = pool(h, mask, pooling, normalize)[0]  # type: ignore[arg-type]
        return vec.tolist()

    def scores(self, logits: torch.Tensor, raw: bool) -> list[dict]:
        values = logits if raw else torch.softmax(logits, dim=-1)
        pairs = [{"label": self.labels[i], "score": float(v)} for i, v in enumerate(values.tolist())]
        return sorted(pairs, key=lambda p: p["score"], reverse=True)

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
            "labels": self.labels,
            "max_length": self.max_length,
            "default_pooling": self.default_pooling,
        }

    def warmup_shapes(self, max_batch: int) -> list[tuple[int, int]]:
        return [(1, 8), (min(max_batch, 8), 32), (1, min(self.max_length, 128)),
                (max_batch, 16), (1, self.max_length)]

    def warmup(self, max_batch: int) -> None:
        for b, t in self.warmup_shapes(max_batch):
            ids = [[self.tokenizer.cls_id] + [self.tokenizer.unk_id] * max(t - 2, 0) + [self.tokenizer.sep_id]]
            self.forward(ids * b, want_logits=True)


def retry_after_seconds(queued: int, per_second: float) -> int:
    return max(1, math.ceil(queued / per_second)) if per_second > 0 else 1
