"""General (task-agnostic) distillation on raw text: the student initialised from the teacher's
layers learns its hidden states and (with an MLM teacher) its token distributions."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

import model
from model.pooling import mean_pool

from . import objective
from .checkpoints import Frozen, export, maybe_freeze_embeddings
from .config import DistillConfig, to_dict
from .data import SequenceData, chunk_corpus, collate, padding_fraction, read_texts
from .init import init_student
from .masking import MaskingConfig, mask_tokens, token_weights
from .trainer import Batch, Trainer, seed_all, use_threads

log = logging.getLogger("training")


class DistillStudent(nn.Module):
    """Training-side wrapper so DDP sees one forward returning what the objective needs."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids, attention_mask) -> objective.Outputs:
        states = self.student.encoder.hidden_states(input_ids, attention_mask)
        logits = self.student.logits(states[-1]) if self.student.task == "mlm" else None
        return objective.Outputs(states, logits)


def check_distill_weights(cfg: DistillConfig, teacher_has_mlm: bool) -> None:
    w = cfg.loss
    if not teacher_has_mlm:
        for name in ("ce", "mlm"):
            if getattr(w, name) > 0:
                raise ValueError(
                    f"loss.{name}={getattr(w, name)} needs a teacher with an MLM head, and {cfg.teacher} has none "
                    f"(L_ce needs its token logits; L_mlm a student head initialised from it). Set loss.{name}=0 "
                    "and use loss.cos / loss.pooled_cos / loss.pooled_mse instead")
    if w.ce + w.mlm + w.cos + w.pooled_mse + w.pooled_cos <= 0:
        raise ValueError("every loss weight is 0: nothing to train")


def run_distill(cfg: DistillConfig) -> dict[str, float]:
    use_threads(cfg.train.threads)
    seed_all(cfg.train.seed)
    tr = cfg.train
    loaded = model.load(cfg.teacher)
    teacher_has_mlm = loaded.task == "mlm"
    check_distill_weights(cfg, teacher_has_mlm)
    tok = model.Tokenizer.from_dir(cfg.teacher)
    use_mlm_head = teacher_has_mlm and (cfg.loss.ce > 0 or cfg.loss.mlm > 0)
    student = init_student(loaded, task="mlm" if use_mlm_head else "base", num_layers=cfg.student_layers,
                           layers=cfg.layer_map, fold_token_type=cfg.fold_token_type,
                           **({} if cfg.dropout is None else {"hidden_dropout": cfg.dropout,
                                                             "attention_dropout": cfg.dropout}))
    teacher = Frozen(loaded)
    maybe_freeze_embeddings(student, cfg.freeze_embeddings)
    texts = read_texts(cfg.corpus, cfg.corpus_column)[: cfg.max_texts]
    seqs = chunk_corpus(tok, texts, cfg.max_length)
    n_eval = max(1, int(len(seqs) * cfg.eval_fraction))
    gen = torch.Generator().manual_seed(tr.seed)
    order = torch.randperm(len(seqs), generator=gen).tolist()
    eval_seqs, train_seqs = [seqs[i] for i in order[:n_eval]], [seqs[i] for i in order[n_eval:]]
    data = SequenceData(train_seqs, None, tok.pad_id, cfg.max_length, tr.batch_size, tr.seed)
    batches = data.batches_for_epoch
    pf = padding_fraction(data.lengths, batches(0))
    log.info("corpus: %d texts -> %d train / %d eval sequences; padding %.1f%% with length grouping", len(texts),
             len(train_seqs), len(eval_seqs), 100 * pf)

    masking = MaskingConfig(mlm_probability=cfg.mlm_probability, smoothing=cfg.mlm_smoothing)
    mask_weights = None
    if cfg.mlm_smoothing:
        counts = torch.bincount(torch.tensor([t for s in train_seqs for t in s]), minlength=tok.vocab_size)
        mask_weights = token_weights(counts, cfg.mlm_smoothing)
    special = torch.tensor(sorted(tok.special_ids))
    pairs = cfg.cos_layers or objective.LAST_LAYERS
    do_mask = cfg.loss.ce > 0 or cfg.loss.mlm > 0

    def loss_fn(m: nn.Module, batch: Batch, g: torch.Generator):
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        t = teacher.on(ids.device)
        labels = None
        if do_mask:
            ids, labels = mask_tokens(ids, mask, special, tok.mask_id, tok.vocab_size, masking, g, mask_weights)
        with torch.no_grad():
            t_states = t.encoder.hidden_states(ids, mask)
            t_out = objective.Outputs(t_states, t.logits(t_states[-1]) if cfg.loss.ce > 0 else None)
        return objective.general_distillation(m(ids, mask), t_out, mask, cfg.loss, labels, pairs)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return distill_agreement(m.student, teacher.module, eval_seqs, tok.pad_id, cfg.max_length, tr.batch_size)

    out = Path(tr.out_dir)
    trainer = Trainer(DistillStudent(student), tr, batches, data.make_batch, loss_fn, eval_fn,
                      export_fn=lambda m: export(m.student, out / "final", tok, cfg, pooling_from=cfg.teacher),
                      extra_config=to_dict(cfg))
    return trainer.train()


@torch.no_grad()
def distill_agreement(student: nn.Module, teacher: nn.Module, seqs: list[list[int]], pad_id: int,
                      max_length: int, batch_size: int) -> dict[str, float]:
    """Token-level and sentence-level cosine between student and teacher on held-out text."""
    device = next(student.parameters()).device
    teacher = teacher.to(device)
    tok_cos, sent_cos, n_tok, n_sent = 0.0, 0.0, 0, 0
    for i in range(0, len(seqs), batch_size):
        ids, mask = collate(seqs[i:i + batch_size], pad_id, max_length)
        ids, mask = ids.to(device), mask.to(device)
        s, t = student.encoder(ids, mask).float(), teacher.encoder(ids, mask).float()
        real = mask.bool()
        tok_cos += torch.nn.functional.cosine_similarity(s[real], t[real], dim=-1).sum().item()
        n_tok += int(real.sum())
        sent_cos += torch.nn.functional.cosine_similarity(mean_pool(s, mask), mean_pool(t, mask), dim=-1).sum().item()
        n_sent += ids.shape[0]
    return {"token_cosine": tok_cos / max(n_tok, 1), "sentence_cosine": sent_cos / max(n_sent, 1)}
