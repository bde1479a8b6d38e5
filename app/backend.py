"""Model backend: the narrow interface the engine calls. Pre (tokenize) -> forward ->
post (pool / softmax). Knows torch and our ``model`` package, nothing about HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True)
class OutputSpec:
    """What a request wants back for each of its inputs."""

    kind: Literal["classify", "embed"]
    raw_scores: bool = False  # classify: logits instead of probabilities
    pooling: str = "mean"  # embed
    normalize: bool = True  # embed


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
    def default_output(self) -> OutputSpec:
        """Class scores for a classifier, else a sentence embedding."""
        return OutputSpec("classify" if self.can_classify else "embed")

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.tokenize_ids(texts)

    @torch.inference_mode()
    def forward(self, ids: list[list[int]], specs: list[OutputSpec]) -> list[list[float]]:
        """One padded forward for a batch; each row post-processed as its spec asks.

        Returns per row the class scores (in label order) or the sentence embedding, as
        plain floats, so no torch op is left for another thread (see app/compute.py).
        """
        batch = self.tokenizer.pad(ids, self.max_length)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        mask = batch.attention_mask.to(self.device, non_blocking=True)
        last = self.module.encoder(input_ids, mask)  # (B, T, C)
        out: list[list[float]] = [[] for _ in ids]
        rows = [i for i, s in enumerate(specs) if s.kind == "classify"]
        if rows and self.can_classify:
            logits = self.module.logits(last[rows]).float()  # (b, labels)
            probs = torch.softmax(logits, dim=-1)
            for r, i in enumerate(rows):
                out[i] = (logits if specs[i].raw_scores else probs)[r].tolist()
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, s in enumerate(specs):
            if s.kind == "embed":
                groups.setdefault((s.pooling, s.normalize), []).append(i)
        for (method, normalize), members in groups.items():
            vecs = pool(last[members].float(), mask[members], method, normalize)  # type: ignore[arg-type]
            for r, i in enumerate(members):
                out[i] = vecs[r].tolist()
        return out

    def scores(self, values: list[float]) -> list[dict]:
        """Class scores in label order -> label/score pairs sorted by score."""
        pairs = [{"label": label, "score": v} for label, v in zip(self.labels, values, strict=True)]
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
            self.forward(ids * b, [self.default_output] * b)


def retry_after_seconds(queued: int, per_second: float) -> int:
    return max(1, math.ceil(queued / per_second)) if per_second > 0 else 1
