"""Task distillation: alpha * KL_T * T^2 + (1 - alpha) * CE from a fine-tuned classifier teacher,
optionally on extra unlabeled text that only the teacher's soft targets supervise."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

import model
from model.device import resolve_device

from .checkpoints import classifier_from
from .config import TaskDistillConfig
from .data import read_texts
from .finetune import dev_accuracy, distill_loss, labeled_ids, train_classifier
from .init import init_student, layer_map
from .scoring import logits_and_pooled_of, logits_of, score, teacher_targets
from .trainer import seed_all, use_threads

log = logging.getLogger("training")


def run_distill_task(cfg: TaskDistillConfig) -> dict[str, float]:
    use_threads(cfg.train.threads)  # before the teacher scores the data, not only once the Trainer starts
    seed_all(cfg.train.seed)
    teacher = load_teacher(cfg)
    tok = model.Tokenizer.from_dir(cfg.teacher)
    id2label = teacher.config.id2label
    if cfg.student:
        student = classifier_from(cfg.student, id2label)
    else:
        student = init_student(teacher, task="classification", num_layers=cfg.student_layers)
    seqs, labels = teacher_inputs(cfg, tok, id2label)
    # The teacher is frozen and has no dropout in eval mode: its logits are a function of the text,
    # so they are computed once here instead of once per batch per epoch. When the representation
    # loss is toward the teacher itself, its pooled embeddings come from the same forward; so do, for
    # the hidden-state loss, its per-token outputs at the layers the student's were copied from.
    reference_pooled = teacher_states = teacher_logits = None
    if cfg.alpha_hidden > 0:
        pairs = layer_map(teacher.config.num_layers, student.config.num_layers)
        log.info("hidden-state loss: student layers %s toward teacher layers %s (0-based)",
                 list(range(student.config.num_layers)), pairs)
        both, teacher_states = teacher_targets(teacher, seqs, tok.pad_id, cfg.max_length, pairs)
        teacher_logits = both[:, :len(id2label)]
        if cfg.alpha_embed > 0 and _toward_teacher(cfg):
            reference_pooled = both[:, len(id2label):]
    elif (fn := teacher_pass(cfg)) is not None:
        both = score(teacher, seqs, tok.pad_id, cfg.max_length, fn)  # (N, labels [+ C])
        teacher_logits = both[:, :len(id2label)]
        if fn is logits_and_pooled_of:
            reference_pooled = both[:, len(id2label):]
    # else: labels alone (the label-only baseline): the soft targets would be weighted 0, so the teacher
    # scores nothing (on make models' train split that pass cost a core about a minute).
    dev_eval = dev_accuracy(cfg, tok, id2label, lambda ids: score(teacher, ids, tok.pad_id, cfg.max_length))
    return train_classifier(cfg, student, tok, seqs, labels, teacher_logits, cfg.embed_reference or cfg.teacher,
                            dev_eval, reference_pooled, teacher_states, loss=distill_loss(cfg))


def load_teacher(cfg: TaskDistillConfig) -> nn.Module:
    teacher = model.load(cfg.teacher)
    if teacher.task != "classification":
        raise ValueError(f"{cfg.teacher}: task distillation needs a fine-tuned classifier teacher, got {teacher.task}")
    return teacher.to(resolve_device(cfg.train.device))


def teacher_inputs(cfg: TaskDistillConfig, tok: model.Tokenizer, id2label: dict[int, str]
                   ) -> tuple[list[list[int]], list[int]]:
    """The texts the student trains on, as token ids, and their labels (-100: unlabeled text)."""
    train, train_ids = labeled_ids(tok, cfg.train_file, cfg, id2label)
    seqs, labels = list(train_ids), list(train.labels)
    if cfg.unlabeled_file:
        extra = read_texts(cfg.unlabeled_file, cfg.unlabeled_column)[: cfg.max_unlabeled]
        extra_ids = tok.tokenize_ids(extra)
        seqs += extra_ids
        labels += [-100] * len(extra_ids)  # no label: the teacher's soft targets alone
        log.info("task distillation: %d labeled + %d unlabeled texts", len(train_ids), len(extra_ids))
    return seqs, labels


def _toward_teacher(cfg: TaskDistillConfig) -> bool:
    return bool(cfg.embed_reference) and Path(cfg.embed_reference).resolve() == Path(cfg.teacher).resolve()


def teacher_pass(cfg: TaskDistillConfig) -> Callable | None:
    """What one teacher forward per text yields: its logits, with its pooled embeddings beside them when
    the representation loss is toward the teacher. None when that is not a row per text: nothing needs it
    (labels alone, no unlabeled text), or the hidden-state loss needs per-token states (``teacher_targets``)."""
    if cfg.alpha_hidden > 0:
        return None
    if cfg.alpha_embed > 0 and _toward_teacher(cfg):
        return logits_and_pooled_of
    if cfg.alpha == 0 and not cfg.unlabeled_file:
        return None
    return logits_of
