"""Each loss against a value worked out by hand (in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from training import losses


def test_soft_target_kl_hand_value():
    # teacher p = softmax([ln 3, 0]) = [3/4, 1/4]; student q = [1/2, 1/2]
    # KL(p||q) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3), 0.0]])
    assert losses.soft_target_kl(s, t, temperature=1.0).item() == pytest.approx(0.1308120, abs=1e-6)
    # T = 2 with teacher logits doubled gives the same distributions, times T^2 = 4.
    assert losses.soft_target_kl(s, 2 * t, temperature=2.0).item() == pytest.approx(0.5232481, abs=1e-6)


def test_soft_target_kl_masks_positions():
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[math.log(3), 0.0], [50.0, -50.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    # position 0: 0.1308120, position 2: 0 -> mean over 2 selected positions
    assert losses.soft_target_kl(s, t, 1.0, mask).item() == pytest.approx(0.0654060, abs=1e-6)


def test_masked_lm_hand_value():
    logits = torch.zeros(1, 2, 4)
    labels = torch.tensor([[2, -100]])
    assert losses.masked_lm(logits, labels).item() == pytest.approx(math.log(4), abs=1e-6)
    assert losses.masked_lm(logits, torch.full((1, 2), -100)).item() == 0.0


def test_hidden_cosine_hand_value():
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # 1 - 0 = 1 and 1 - 1/sqrt(2) = 0.2928932; the third position is padding.
    assert losses.hidden_cosine(s, t, mask).item() == pytest.approx((1 + 0.2928932) / 2, abs=1e-6)


def test_hidden_cosine_rejects_width_mismatch():
    with pytest.raises(ValueError, match="hidden sizes differ"):
        losses.hidden_cosine(torch.ones(1, 2, 3), torch.ones(1, 2, 4), torch.ones(1, 2))


def test_mse_hand_values():
    assert losses.pooled_mse(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == pytest.approx(2.5)
    assert losses.pooled_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(1.0)


def test_task_distillation_hand_value():
    # 0.5 * 0.5232481 (KL at T=2, times 4) + 0.5 * ln 2 (CE of [0,0] on label 0) = 0.6081977
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2 * math.log(3), 0.0]])
    got = losses.task_distillation(s, t, torch.tensor([0]), alpha=0.5, temperature=2.0)
    assert got.item() == pytest.approx(0.6081977, abs=1e-6)
    # Unlabeled rows: only the KL term.
    got = losses.task_distillation(s, t, torch.tensor([-100]), alpha=0.5, temperature=2.0)
    assert got.item() == pytest.approx(0.5 * 0.5232481, abs=1e-6)


def test_losses_have_gradients():
    s = torch.randn(2, 3, 5, requires_grad=True)
    losses.soft_target_kl(s, torch.randn(2, 3, 5), 2.0, torch.ones(2, 3)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_task_distillation_hidden_term_by_hand():
    """loss_hidden: 1 - cos per real token, averaged over tokens then over the layer pairs; padding
    positions are ignored whatever they hold."""
    from training import objective

    logits = torch.zeros(1, 2)
    teacher = torch.zeros(1, 3, 2, 2)  # (B, T, pairs, C); token 2 is padding
    teacher[0, :, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    teacher[0, :, 1] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    student = torch.zeros(1, 3, 2, 2)
    student[0, :, 0] = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # cos 1, 0   -> mean 0.5
    student[0, :, 1] = torch.tensor([[-1.0, 0.0], [3.0, 0.0], [-1.0, 0.0]])  # cos -1, 1 -> mean 1.0
    mask = torch.tensor([[1, 1, 0]])
    total, parts = objective.task_distillation(logits, logits, torch.tensor([0]), 0.5, 2.0,
                                               student_states=student, teacher_states=teacher,
                                               attention_mask=mask, alpha_hidden=2.0)
    assert parts["loss_hidden"] == pytest.approx((0.5 + 1.0) / 2)
    assert total.item() == pytest.approx(parts["loss_task"] + 2.0 * 0.75)
    _, off = objective.task_distillation(logits, logits, torch.tensor([0]), 0.5, 2.0, student_states=student,
                                         teacher_states=teacher, attention_mask=mask, alpha_hidden=0.0)
    assert "loss_hidden" not in off
