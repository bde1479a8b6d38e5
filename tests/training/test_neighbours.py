"""Batches of near neighbours (training.neighbours) and the distillation that trains on them."""

from __future__ import annotations

import logging

import pytest
import torch

import model
from training.config import DistillConfig, load_config
from training.distill import run_distill
from training.neighbours import nearest, neighbour_batches, sentence_embeddings

from .test_runs import _distill_args, assets  # noqa: F401  (the fixture)


def _clusters(n_clusters=6, size=8, dim=16, seed=0):
    """``n_clusters`` tight clusters of ``size`` unit vectors, rows shuffled; returns (emb, cluster of row)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, dim, generator=g), dim=-1)
    labels = torch.arange(n_clusters).repeat_interleave(size)
    emb = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(len(labels), dim, generator=g), dim=-1)
    perm = torch.randperm(len(labels), generator=g)
    return emb[perm], labels[perm]


def test_nearest_leaves_out_the_row_itself_and_finds_its_cluster():
    emb, cluster = _clusters()
    near = nearest(emb, 7, chunk=5)  # chunks that do not divide the rows
    assert near.shape == (48, 7)
    assert not (near == torch.arange(48)[:, None]).any()
    assert (cluster[near] == cluster[:, None]).all()


def test_each_group_is_a_sentence_and_its_neighbours_and_every_sentence_comes_once_per_epoch():
    emb, cluster = _clusters()
    near = nearest(emb, 16)
    batches = neighbour_batches(near, batch_size=16, group=8, seed=3, epoch=0)
    assert [len(b) for b in batches] == [16, 16, 16]
    assert sorted(i for b in batches for i in b) == list(range(48))
    for b in batches:
        for g in (b[:8], b[8:]):
            assert len(set(cluster[g].tolist())) == 1  # a group is one cluster: its members are near
    assert neighbour_batches(near, 16, 8, 3, 0) == batches  # seeded
    assert neighbour_batches(near, 16, 8, 3, 1) != batches  # another order each epoch
    with pytest.raises(ValueError, match="neighbour_group=6 must be at least 2 and divide train.batch_size=16"):
        neighbour_batches(near, 16, 6, 3, 0)


def test_a_short_group_runs_into_the_next_so_the_batches_stay_full():
    emb, _ = _clusters(n_clusters=5, size=6)  # groups of 4 from clusters of 6: leftovers of two
    batches = neighbour_batches(nearest(emb, 5), batch_size=8, group=4, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(30))
    assert all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) == 30 % 8


def test_sentence_embeddings_keep_the_input_order(assets):  # noqa: F811
    m = model.load(assets / "teacher_base")
    tok = model.Tokenizer.from_dir(assets / "teacher_base")
    texts = (assets / "corpus.txt").read_text().splitlines()[:20]
    seqs = tok.tokenize_ids(texts)
    emb = sentence_embeddings(m, seqs, tok.pad_id, 32, batch_size=6)  # sorted by length inside
    one = sentence_embeddings(m, [seqs[7]], tok.pad_id, 32)
    assert emb.shape[0] == 20 and torch.allclose(emb[7], one[0], atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(20), atol=1e-5)


def test_distillation_on_neighbour_batches_trains_the_similarity_loss(assets, tmp_path, caplog):  # noqa: F811
    out = tmp_path / "nb"
    cfg = load_config(DistillConfig, None, _distill_args(
        assets, out, teacher=assets / "teacher_base", alpha_ce=0, alpha_mlm=0, alpha_pooled_cos=1,
        alpha_pooled_sim=1, neighbour_group=4, dropout=0.0, **{"train.max_steps": 12}))
    with caplog.at_level(logging.INFO, logger="training"):
        run_distill(cfg)
    assert "padding" in caplog.text and "with groups of 4 near neighbours" in caplog.text
    assert "loss_pooled_sim=" in (out / "train.log").read_text()
    assert model.load(out / "final").config.hidden_dropout == 0.0


def test_a_group_that_does_not_divide_the_batch_is_refused_before_any_work(assets, tmp_path):  # noqa: F811
    cfg = load_config(DistillConfig, None, _distill_args(
        assets, tmp_path / "bad", teacher=assets / "teacher_base", alpha_ce=0, alpha_mlm=0, alpha_pooled_sim=1,
        neighbour_group=3, corpus=tmp_path / "missing.txt"))  # refused before the corpus is even read
    with pytest.raises(ValueError, match="neighbour_group=3 must be at least 2 and divide train.batch_size=16"):
        run_distill(cfg)
