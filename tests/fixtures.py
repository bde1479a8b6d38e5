"""Tiny random checkpoints written in Hugging Face format, as a user would have them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import model

WORDS = ("the a movie film was is great good bad terrible awful fine plot actor actors story "
         "cat kitten dog stocks market fell rose today and but not very really i loved hated it "
         "this that of to in on with for . , ! ?").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
         *list("abcdefghijklmnopqrstuvwxyz0123456789")]


def tiny_tokenizer() -> model.Tokenizer:
    return model.Tokenizer.from_vocab(VOCAB)


def write_tiny(path: Path, family: str, task: str, seed: int, layers: int = 2, hidden: int = 32,
               max_pos: int = 128, pooling: str | None = None, sharpen: float = 0.0,
               labels: dict[int, str] | None = None) -> Path:
    """``sharpen`` adds N(0, sharpen) noise to every weight: a random model with confident
    outputs, so a student has something to learn from it."""
    torch.manual_seed(seed)
    common = {"vocab_size": len(VOCAB), "hidden_size": hidden, "num_layers": layers, "num_heads": 4,
              "intermediate_size": hidden * 2, "max_position_embeddings": max_pos,
              "id2label": labels or {0: "negative", 1: "positive"}}
    cfg = model.BertConfig(**common) if family == "bert" else model.DistilBertConfig(**common)
    cls = {c.family + c.task: c for c in model.CLASSES.values()}[family + task]
    m = cls(cfg).eval()
    if sharpen:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(sharpen * torch.randn_like(p))
    model.save(m, path, tokenizer=tiny_tokenizer())
    if pooling:
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps({"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}))
    return path


def tiny_pair(root: Path) -> dict[str, Path]:
    """A classifying teacher (BERT, 4 layers) and student (DistilBERT, 2 layers), same width."""
    return {
        "teacher": write_tiny(root / "teacher", "bert", "classification", seed=1, layers=4),
        "student": write_tiny(root / "student", "distilbert", "classification", seed=2, layers=2),
        "embedder": write_tiny(root / "embedder", "bert", "base", seed=3, layers=2, pooling="cls"),
    }
