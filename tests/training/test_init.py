"""Student initialisation: embeddings and one layer out of two, copied exactly."""

from __future__ import annotations

import pytest
import torch

import model
from training.init import PAPER_LAYER_MAP, init_student, layer_map


def test_layer_maps():
    assert layer_map(12, 6) == [0, 2, 4, 7, 9, 11] == list(PAPER_LAYER_MAP)
    assert layer_map(6, 3) == [0, 2, 5]
    assert layer_map(4, 2) == [0, 3]
    assert layer_map(24, 12)[0] == 0 and layer_map(24, 12)[-1] == 23 and len(set(layer_map(24, 12))) == 12
    with pytest.raises(ValueError):
        layer_map(6, 7)


def _teacher(task="mlm", layers=12):
    cfg = model.BertConfig(vocab_size=60, hidden_size=16, num_layers=layers, num_heads=2, intermediate_size=32,
                           max_position_embeddings=32)
    torch.manual_seed(0)
    t = {"mlm": model.BertForMaskedLM, "base": model.BertModel,
         "classification": model.BertForSequenceClassification}[task](cfg)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p))
    return t


@pytest.mark.parametrize("task", ["mlm", "base", "classification"])
def test_copies_exactly_the_right_tensors(task):
    teacher = _teacher(task)
    student = init_student(teacher, task=task)
    s, t = student.encoder, teacher.encoder
    assert student.config.num_layers == 6 and student.config.type_vocab_size == 0
    assert torch.equal(s.embeddings.word.weight, t.embeddings.word.weight)
    assert torch.equal(s.embeddings.position.weight, t.embeddings.position.weight)
    assert torch.equal(s.embeddings.norm.weight, t.embeddings.norm.weight)
    for si, ti in enumerate([0, 2, 4, 7, 9, 11]):
        for (name, a), (_, b) in zip(s.layers[si].state_dict().items(), t.layers[ti].state_dict().items(), strict=True):
            assert torch.equal(a, b), (si, ti, name)
        # and not a neighbouring layer
        assert not torch.equal(s.layers[si].ffn.up.weight, t.layers[ti + 1 if ti < 11 else ti - 1].ffn.up.weight)
    if task == "mlm":
        assert torch.equal(student.head.transform.weight, teacher.head.transform.weight)


def test_student_matches_teacher_when_all_layers_kept():
    teacher = _teacher("base", layers=4)
    student = init_student(teacher, task="base", num_layers=4, fold_token_type=True)
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        assert torch.allclose(student.eval()(ids), teacher.eval()(ids), atol=1e-5)
    plain = init_student(teacher, task="base", num_layers=4)  # without folding, token type 0 is lost
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(ids), teacher(ids), atol=1e-3)


def test_custom_layer_map_and_errors():
    teacher = _teacher("base", layers=6)
    s = init_student(teacher, task="base", layers=[1, 3, 5])
    assert torch.equal(s.layers[0].attention.query.weight, teacher.layers[1].attention.query.weight)
    with pytest.raises(ValueError, match="layer map"):
        init_student(teacher, task="base", layers=[0, 9, 5])


def test_a_student_can_distil_without_dropout():
    """Distilling toward exact targets, dropout is noise in the student's own forward (DistillConfig.dropout)."""
    teacher = _teacher("base", layers=4)
    ids = torch.randint(5, 60, (2, 9))
    plain = init_student(teacher, task="base", num_layers=2).train()
    assert plain.config.hidden_dropout == teacher.config.hidden_dropout > 0
    assert not torch.equal(plain(ids), plain(ids))  # training mode: dropout draws differ
    quiet = init_student(teacher, task="base", num_layers=2, hidden_dropout=0.0, attention_dropout=0.0).train()
    assert (quiet.config.hidden_dropout, quiet.config.attention_dropout) == (0.0, 0.0)
    assert torch.equal(quiet(ids), quiet(ids))
    assert torch.allclose(quiet(ids), plain.eval()(ids))  # the same weights: only the noise is gone
