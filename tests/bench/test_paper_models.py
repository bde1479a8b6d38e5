"""Paper-size checkpoints for the latency benchmark: BERT-base teacher, 6-layer student."""

from __future__ import annotations

import pytest
import torch

import model
from bench.paper_models import build
from tests.fixtures import write_tiny


@pytest.mark.slow
def test_paper_models_have_the_papers_shapes_and_the_student_starts_from_the_teacher(tmp_path):
    tok_dir = write_tiny(tmp_path / "tok", "bert", "base", seed=0, layers=1)
    paths = build(tmp_path / "paper", tok_dir)
    teacher, student = model.load(paths["teacher"]), model.load(paths["student"])
    assert (teacher.config.num_layers, teacher.config.hidden_size, teacher.config.intermediate_size) == (12, 768, 3072)
    assert (student.config.num_layers, student.config.hidden_size) == (6, 768)
    assert teacher.task == student.task == "classification"
    assert student.config.id2label == {0: "negative", 1: "positive"}
    # One layer in two: student layer 1 is teacher layer 2 (map [0, 2, 4, 7, 9, 11]).
    t_layer, s_layer = teacher.encoder.layers[2], student.encoder.layers[1]
    for (tn, tp), (sn, sp) in zip(t_layer.state_dict().items(), s_layer.state_dict().items(), strict=True):
        assert torch.equal(tp, sp), (tn, sn)
    ids = model.Tokenizer.from_dir(paths["student"]).tokenize_ids(["a b c"])
    assert ids and ids[0][0] == model.Tokenizer.from_dir(tok_dir).tokenize_ids(["a b c"])[0][0]
