"""The general-distillation objective as ``distill`` calls it: ``DistillConfig.loss`` (one nested config, the
paper's weights and T by default) straight into ``objective.general_distillation``, checked against the triple
loss written out by hand."""

from __future__ import annotations

import torch

import model
from training import objective, paper
from training.config import DistillConfig
from training.distill import DistillStudent
from training.init import init_student

TINY = {"vocab_size": 50, "hidden_size": 16, "num_layers": 4, "num_heads": 2, "intermediate_size": 32}


def test_the_nested_loss_defaults_are_the_papers():
    w = DistillConfig().loss
    assert (w.temperature, w.ce, w.mlm, w.cos, w.pooled_mse, w.pooled_cos) == (2.0, 5.0, 2.0, 1.0, 0.0, 0.0)
    assert (w.temperature, w.ce, w.mlm, w.cos) == (paper.TEMPERATURE, paper.ALPHA_CE, paper.ALPHA_MLM, paper.ALPHA_COS)
    assert DistillConfig().cos_layers is None  # L_cos on the last hidden states


def _batch():
    torch.manual_seed(0)
    teacher = model.BertForMaskedLM(model.BertConfig(**TINY)).eval()
    student = DistillStudent(init_student(teacher, task="mlm")).eval()
    with torch.no_grad():  # a student some steps away from its initialisation: every term well above 0
        for w in student.parameters():
            w.add_(0.2 * torch.randn_like(w))
    ids = torch.randint(5, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.full((2, 6), -100)
    labels[0, 1], labels[0, 4], labels[1, 2] = ids[0, 1], ids[0, 4], ids[1, 2]
    with torch.no_grad():
        states = teacher.encoder.hidden_states(ids, mask)
        t = objective.Outputs(states, teacher.logits(states[-1]))
        s = student(ids, mask)
    return s, t, mask, labels


def _one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_a_general_distillation_step_with_the_defaults_is_the_papers_triple_loss_by_hand():
    s, t, mask, labels = _batch()
    cfg = DistillConfig()
    loss, parts = objective.general_distillation(s, t, mask, cfg.loss, labels, cfg.cos_layers or objective.LAST_LAYERS)

    real = mask.bool()  # 10 real tokens; KL and cosine average over them, the MLM loss over the 3 labelled
    T = 2.0
    p_t = torch.softmax(t.logits[real] / T, -1)
    p_s = torch.softmax(s.logits[real] / T, -1)
    ce = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * T * T
    picked = labels != -100
    mlm = -torch.log_softmax(s.logits[picked], -1).gather(1, labels[picked][:, None]).mean()
    cos = _one_minus_cos(s.hidden[-1][real], t.hidden[-1][real]).mean()
    assert real.sum() == 10 and picked.sum() == 3 and min(ce, mlm, cos) > 0.01  # every term is really there
    assert set(parts) == {"loss_ce", "loss_mlm", "loss_cos"}
    torch.testing.assert_close(torch.tensor([parts["loss_ce"], parts["loss_mlm"], parts["loss_cos"]]),
                               torch.stack([ce, mlm, cos]))
    torch.testing.assert_close(loss, 5.0 * ce + 2.0 * mlm + 1.0 * cos)


def test_the_embedders_weights_and_layer_pairs_by_hand():
    """compress task=embed's recipe: L_cos layer by layer plus the pooled cosine, no logits."""
    s, t, mask, labels = _batch()
    cfg = DistillConfig(loss=objective.GeneralWeights(ce=0.0, mlm=0.0, cos=1.0, pooled_cos=2.0),
                        cos_layers=[[1, 1], [2, 3]])
    loss, parts = objective.general_distillation(s, t, mask, cfg.loss, None, cfg.cos_layers)

    real = mask.bool()
    cos = (_one_minus_cos(s.hidden[1][real], t.hidden[1][real]).mean()
           + _one_minus_cos(s.hidden[2][real], t.hidden[3][real]).mean()) / 2
    m = mask[..., None].float()
    pooled = _one_minus_cos((s.hidden[-1] * m).sum(1) / m.sum(1), (t.hidden[-1] * m).sum(1) / m.sum(1)).mean()
    assert set(parts) == {"loss_cos", "loss_pooled_cos"}
    torch.testing.assert_close(loss, 1.0 * cos + 2.0 * pooled)
