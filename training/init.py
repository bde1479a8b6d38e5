"""Student initialisation from the teacher (Sanh et al. 2019, section 3):
embeddings copied, and the student's layers taken "one layer out of two" of the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

import model
from model import BertConfig, DistilBertConfig

# The authors' choice for 12 -> 6 (transformers' distillation/scripts/extract_distilbert.py).
PAPER_LAYER_MAP = (0, 2, 4, 7, 9, 11)


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Which teacher layer initialises each student layer: spread evenly, first and last kept."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"student_layers must be in 1..{teacher_layers}, got {student_layers}")
    if (teacher_layers, student_layers) == (12, 6):
        return list(PAPER_LAYER_MAP)
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def student_config(teacher: BertConfig, num_layers: int | None = None, **overrides) -> DistilBertConfig:
    """Same width as the teacher, half its depth unless told, no token types, no pooler."""
    inherited = {
        "vocab_size": teacher.vocab_size,
        "max_position_embeddings": teacher.max_position_embeddings,
        "hidden_size": teacher.hidden_size,
        "num_layers": num_layers or max(1, teacher.num_layers // 2),
        "num_heads": teacher.num_heads,
        "intermediate_size": teacher.intermediate_size,
        "hidden_act": teacher.hidden_act,
        "layer_norm_eps": teacher.layer_norm_eps,
        "hidden_dropout": teacher.hidden_dropout,
        "attention_dropout": teacher.attention_dropout,
        "pad_token_id": teacher.pad_token_id,
        "id2label": dict(teacher.id2label),
    }
    return DistilBertConfig(**(inherited | overrides))


def init_student(
    teacher: nn.Module,
    task: str = "mlm",
    num_layers: int | None = None,
    layers: list[int] | None = None,
    fold_token_type: bool = False,
    **config_overrides,
) -> nn.Module:
    """Build a DistilBERT ``task`` model ("base" | "mlm" | "classification") from a BERT teacher.

    ``fold_token_type`` adds the teacher's token-type-0 embedding into the word embeddings,
    so a student fed no token types starts from exactly the teacher's input embeddings.
    Heads are copied when the teacher has the same head (MLM transform, classifier).
    """
    t_enc = teacher.encoder
    t_cfg = teacher.config
    if t_cfg.family not in ("bert", "distilbert"):
        raise ValueError(f"teacher must be a BERT- or DistilBERT-family model, got {t_cfg.family!r}")
    cfg = student_config(t_cfg, num_layers, **config_overrides)
    layers = list(layers) if layers is not None else layer_map(t_cfg.num_layers, cfg.num_layers)
    if len(layers) != cfg.num_layers or not all(0 <= i < t_cfg.num_layers for i in layers):
        raise ValueError(f"layer map {layers} does not fit {cfg.num_layers} student layers "
                         f"from {t_cfg.num_layers} teacher layers")
    cls = {"base": model.DistilBertModel, "mlm": model.DistilBertForMaskedLM,
           "classification": model.DistilBertForSequenceClassification}[task]
    student = cls(cfg)
    s_enc = student.encoder
    with torch.no_grad():
        s_enc.embeddings.word.weight.copy_(t_enc.embeddings.word.weight)
        if fold_token_type and t_enc.embeddings.token_type is not None:
            s_enc.embeddings.word.weight.add_(t_enc.embeddings.token_type.weight[0])
        s_enc.embeddings.position.weight.copy_(t_enc.embeddings.position.weight)
        s_enc.embeddings.norm.load_state_dict(t_enc.embeddings.norm.state_dict())
        for s_i, t_i in enumerate(layers):
            s_enc.layers[s_i].load_state_dict(t_enc.layers[t_i].state_dict())
        if task == "mlm" and getattr(teacher, "task", "") == "mlm":
            student.head.load_state_dict(teacher.head.state_dict())
    return student
