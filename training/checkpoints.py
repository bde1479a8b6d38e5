"""Models in and out of the training commands: a frozen teacher, a classifier from any checkpoint, the
embedding reference, frozen word embeddings, the export in Hugging Face format, and the training-side
wrapper that returns what the losses need."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

import model

from .config import to_dict

log = logging.getLogger("training")


class Frozen:
    """A frozen model owned by one training command: eval mode, no gradients, and it follows its
    inputs to their device (moved once, on first use). Not an nn.Module attribute of the trained
    model, so it stays out of its checkpoints and of DDP."""

    def __init__(self, m: nn.Module) -> None:
        self.module = m.eval()
        for p in m.parameters():
            p.requires_grad_(False)

    def on(self, device: torch.device) -> nn.Module:
        if next(self.module.parameters()).device != device:
            self.module.to(device)
        return self.module


def classifier_from(path: str | Path, id2label: dict[int, str]) -> nn.Module:
    """A classifier from any checkpoint: its own head if the labels match, else a new head."""
    base = model.load(path)
    if base.task == "classification" and base.config.id2label == id2label:
        return base
    cfg = base.config.replace(id2label=id2label)
    cls = model.BertForSequenceClassification if cfg.family == "bert" else model.DistilBertForSequenceClassification
    clf = cls(cfg)
    missing, unexpected = clf.encoder.load_state_dict(base.encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"{path}: encoder does not fit a classifier (missing {missing}, unexpected {unexpected})")
    return clf


def maybe_freeze_embeddings(m: nn.Module, freeze: bool) -> None:
    if freeze:
        m.encoder.embeddings.word.weight.requires_grad_(False)


def embedding_reference(path: str | None, alpha: float) -> nn.Module | None:
    if alpha > 0 and not path:
        raise ValueError("alpha_embed > 0 needs embed_reference (a model whose sentence embeddings to keep)")
    return model.load(path) if path and alpha > 0 else None


def export(student: nn.Module, out: Path, tokenizer: model.Tokenizer, cfg: object,
           pooling_from: str | Path | None = None) -> Path:
    model.save(student, out, tokenizer=tokenizer)
    (out / "training_config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str) + "\n")
    if pooling_from and (Path(pooling_from) / "1_Pooling").is_dir():
        (out / "1_Pooling").mkdir(exist_ok=True)
        src = Path(pooling_from) / "1_Pooling" / "config.json"
        (out / "1_Pooling" / "config.json").write_text(src.read_text())
    log.info("exported %s to %s", type(student).__name__, out)
    return out


class ClassifierOutputs(nn.Module):
    """Training-side wrapper: one forward returning the logits and the last hidden states, and with
    ``layers`` (0-based) those layers' outputs too, stacked (B, T, len(layers), C)."""

    def __init__(self, clf: nn.Module, layers: list[int] | None = None) -> None:
        super().__init__()
        self.clf, self.layers = clf, layers

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if not self.layers:
            last = self.clf.encoder(input_ids, attention_mask, token_type_ids)
            return self.clf.logits(last), last, None
        hidden = self.clf.encoder.hidden_states(input_ids, attention_mask, token_type_ids)
        last = hidden[-1]
        return self.clf.logits(last), last, torch.stack([hidden[k + 1] for k in self.layers], dim=2)
