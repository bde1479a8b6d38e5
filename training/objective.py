"""The distillation objectives as pure functions: student and teacher outputs in, the weighted
total and its named parts out. No models, no devices, no state; the training commands
(distill.py, distill_task.py) and bench/train_speed.py call these same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.pooling import mean_pool

from . import losses
from .paper import ALPHA_CE, ALPHA_COS, ALPHA_MLM, TEMPERATURE


@dataclass(frozen=True)
class Outputs:
    """What one model produced for a batch: hidden states (embeddings output first, then each
    layer) and, for a model with a head, its logits (token logits (B, T, V) or sequence (B, L))."""

    hidden: tuple[torch.Tensor, ...] | list[torch.Tensor] | None = None
    logits: torch.Tensor | None = None


@dataclass(frozen=True)
class GeneralWeights:
    """Weights of the general-distillation terms (Sanh et al. 2019: L_ce, L_mlm, L_cos) and the soft
    targets' temperature: ``DistillConfig.loss``, set from the command line as ``loss.ce=0 loss.cos=1``."""

    ce: float = ALPHA_CE
    mlm: float = ALPHA_MLM
    cos: float = ALPHA_COS
    pooled_mse: float = 0.0  # MSE on mean-pooled sentence embeddings
    pooled_cos: float = 0.0  # 1 - cos on mean-pooled sentence embeddings
    temperature: float = TEMPERATURE


LAST_LAYERS = ((-1, -1),)  # L_cos on the last hidden states of both models


def general_distillation(student: Outputs, teacher: Outputs, attention_mask: torch.Tensor, w: GeneralWeights,
                         mlm_labels: torch.Tensor | None = None,
                         layer_pairs: Sequence[Sequence[int]] = LAST_LAYERS) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the general-distillation terms whose weight is above 0; L_cos averaged over the
    (student, teacher) hidden-state indices in ``layer_pairs`` (``DistillConfig.cos_layers``)."""
    real = attention_mask.bool()
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    if w.ce > 0:
        terms["loss_ce"] = w.ce, losses.soft_target_kl(student.logits, teacher.logits, w.temperature, real)
    if w.mlm > 0:
        terms["loss_mlm"] = w.mlm, losses.masked_lm(student.logits, mlm_labels)
    if w.cos > 0:
        terms["loss_cos"] = w.cos, sum(losses.hidden_cosine(student.hidden[s], teacher.hidden[t], real)
                                       for s, t in layer_pairs) / len(layer_pairs)
    if w.pooled_mse > 0 or w.pooled_cos > 0:
        sp, tp = mean_pool(student.hidden[-1], attention_mask), mean_pool(teacher.hidden[-1], attention_mask)
        if w.pooled_mse > 0:
            terms["loss_pooled_mse"] = w.pooled_mse, losses.pooled_mse(sp, tp)
        if w.pooled_cos > 0:
            terms["loss_pooled_cos"] = w.pooled_cos, losses.pooled_cosine(sp, tp)
    return _weighted(terms, attention_mask)


@dataclass(frozen=True)
class TaskLoss:
    """The weights of a task stage's loss (``task_distillation``): the teacher's soft targets against the
    labels (``alpha``, at ``temperature``), the pooled-embedding term, the hidden-state term, and the labels'
    per-class weights. Fine-tuning is alpha 0: the labels alone."""

    alpha: float = 0.0
    temperature: float = TEMPERATURE
    alpha_embed: float = 0.0
    alpha_hidden: float = 0.0
    class_weights: tuple[float, ...] | None = None


def task_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                      labels: torch.Tensor | None, alpha: float, temperature: float,
                      student_pooled: torch.Tensor | None = None, reference_pooled: torch.Tensor | None = None,
                      alpha_embed: float = 0.0, student_states: torch.Tensor | None = None,
                      teacher_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                      alpha_hidden: float = 0.0, class_weights: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * KL_T * T^2 + (1 - alpha) * CE on the labels (KL only on unlabeled rows, label -100);
    without teacher logits, CE alone (fine-tuning), each label's rows weighted by ``class_weights`` when
    given (a rare label's errors made to count more). Plus, with a reference, embedding preservation:
    alpha_embed * (1 - cos(student's pooled embedding, the reference's)). Plus, with the teacher's
    per-token states (B, T, L, C) beside the student's at the layers they pair, alpha_hidden * the mean
    over the L pairs of 1 - cos over the real tokens."""
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    if teacher_logits is None:
        terms["loss_ce"] = 1.0, torch.nn.functional.cross_entropy(student_logits.float(), labels, weight=class_weights)
    else:
        terms["loss_task"] = 1.0, losses.task_distillation(student_logits, teacher_logits, labels, alpha,
                                                           temperature)
    if reference_pooled is not None and alpha_embed > 0:
        terms["loss_embed"] = alpha_embed, losses.pooled_cosine(student_pooled, reference_pooled)
    if teacher_states is not None and alpha_hidden > 0:
        pairs = teacher_states.shape[2]
        terms["loss_hidden"] = alpha_hidden, sum(
            losses.hidden_cosine(student_states[:, :, i], teacher_states[:, :, i], attention_mask)
            for i in range(pairs)) / pairs
    return _weighted(terms, student_logits)


def _weighted(terms: dict[str, tuple[float, torch.Tensor]], like: torch.Tensor) -> tuple[torch.Tensor, dict]:
    total = like.new_zeros((), dtype=torch.float32)
    for weight, value in terms.values():
        total = total + weight * value
    return total, {name: float(value.detach()) for name, (_, value) in terms.items()}
