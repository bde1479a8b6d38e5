"""The distillation losses, as pure functions (Sanh et al. 2019, section 3).

Each takes tensors and returns a scalar tensor; which positions count is an explicit
boolean mask (B, T). Hand-computed checks live in tests/training/test_losses.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .paper import TEMPERATURE


def _positions(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) + (B, T) bool -> (N, ...) selected rows."""
    return x[mask.bool()]


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_ce: KL(teacher_T || student_T) * T^2, averaged over the selected positions.

    Works for token logits (B, T, V) with a (B, T) mask and for sequence logits (B, L).
    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    if mask is not None:
        student_logits, teacher_logits = _positions(student_logits, mask), _positions(teacher_logits, mask)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1).reshape(-1, student_logits.shape[-1])
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1).reshape(-1, teacher_logits.shape[-1])
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def masked_lm(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """L_mlm: cross-entropy on the masked positions (labels == ignore_index elsewhere)."""
    if (labels != ignore_index).sum() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=ignore_index)


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_cos: mean of 1 - cos(h_s, h_t) over the selected positions (cosine embedding loss, target 1)."""
    s, t = _positions(student_hidden, mask).float(), _positions(teacher_hidden, mask).float()
    if s.shape[-1] != t.shape[-1]:
        raise ValueError(f"hidden sizes differ (student {s.shape[-1]}, teacher {t.shape[-1]}): "
                         "the cosine loss needs equal widths")
    if s.shape[0] == 0:
        return student_hidden.sum() * 0.0
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def pooled_mse(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
    """MSE between sentence embeddings (B, C): the signal for teachers with no MLM head."""
    return F.mse_loss(student_pooled.float(), teacher_pooled.float())


def pooled_cosine(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
    """1 - cos between sentence embeddings, averaged over the batch."""
    return (1 - F.cosine_similarity(student_pooled.float(), teacher_pooled.float(), dim=-1)).mean()


def task_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      alpha: float = 0.5, temperature: float = TEMPERATURE) -> torch.Tensor:
    """alpha * KL_T * T^2 + (1 - alpha) * CE(labels); rows with label -100 (unlabeled) get KL only."""
    kl = soft_target_kl(student_logits, teacher_logits, temperature)
    if labels is None or (labels != -100).sum() == 0:
        return alpha * kl  # unlabeled rows: the teacher's soft targets alone
    ce = F.cross_entropy(student_logits.float(), labels, ignore_index=-100)
    return alpha * kl + (1 - alpha) * ce


