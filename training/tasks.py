"""The commands: general distillation, fine-tuning, task distillation, evaluation.

Each builds a model, its batches and its loss function, and hands them to the generic
Trainer. Losses come from losses.py; nothing here runs an optimizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

import model
from model.pooling import mean_pool

from . import losses
from .config import DistillConfig, EvaluateConfig, FinetuneConfig, TaskDistillConfig, to_dict
from .data import chunk_corpus, collate, length_grouped_batches, padding_fraction, read_labeled, read_texts
from .init import init_student
from .masking import MaskingConfig, mask_tokens, token_weights
from .trainer import Batch, Trainer

log = logging.getLogger("training")


# -- shared pieces -------------------------------------------------------------------------
def frozen(m: nn.Module, device: torch.device) -> nn.Module:
    m.eval().to(device)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def classifier_from(path: str | Path, id2label: dict[int, str]) -> nn.Module:
    """A classifier from any checkpoint: its own head if the labels match, else a new head."""
    base = model.load(path)
    if base.task == "classification" and base.config.id2label == id2label:
        return base
    cfg = base.config.replace(id2label=id2label)
    cls = model.BertForSequenceClassification if cfg.family == "bert" else model.DistilBertForSequenceClassification
    clf = cls(cfg)
    missing, unexpected = clf.encoder.load_state_dict(base.encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"{path}: encoder does not fit a classifier (missing {missing}, unexpected {unexpected})")
    return clf


def maybe_freeze_embeddings(m: nn.Module, freeze: bool) -> None:
    if freeze:
        m.encoder.embeddings.word.weight.requires_grad_(False)


def embedding_reference(path: str | None, alpha: float) -> nn.Module | None:
    if alpha > 0 and not path:
        raise ValueError("alpha_embed > 0 needs embed_reference (a model whose sentence embeddings to keep)")
    return model.load(path) if path and alpha > 0 else None


def export(student: nn.Module, out: Path, tokenizer: model.Tokenizer, cfg: object,
           pooling_from: str | Path | None = None) -> Path:
    model.save(student, out, tokenizer=tokenizer)
    (out / "training_config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str) + "\n")
    if pooling_from and (Path(pooling_from) / "1_Pooling").is_dir():
        (out / "1_Pooling").mkdir(exist_ok=True)
        src = Path(pooling_from) / "1_Pooling" / "config.json"
        (out / "1_Pooling" / "config.json").write_text(src.read_text())
    log.info("exported %s to %s", type(student).__name__, out)
    return out


class SequenceData:
    """Token-id sequences (+ labels) served as length-grouped batches."""

    def __init__(self, seqs: list[list[int]], labels: list[int] | None, pad_id: int, max_length: int,
                 batch_size: int, seed: int) -> None:
        self.seqs, self.labels = [s[:max_length] for s in seqs], labels
        self.pad_id, self.max_length, self.batch_size, self.seed = pad_id, max_length, batch_size, seed
        self.lengths = [len(s) for s in self.seqs]

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch)

    def make_batch(self, idx: list[int]) -> Batch:
        ids, mask = collate([self.seqs[i] for i in idx], self.pad_id, self.max_length)
        t = {"input_ids": ids, "attention_mask": mask}
        if self.labels is not None:
            t["labels"] = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        return Batch(t, tokens=int(mask.sum()))


# -- general distillation ---------------------------------------------------------------------
class DistillStudent(nn.Module):
    """Training-side wrapper so DDP sees one forward returning what the losses need."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids, attention_mask):
        states = self.student.encoder.hidden_states(input_ids, attention_mask)
        logits = self.student.logits(states[-1]) if self.student.task == "mlm" else None
        return states, logits


def check_distill_weights(cfg: DistillConfig, teacher_has_mlm: bool) -> None:
    if not teacher_has_mlm:
        for name in ("alpha_ce", "alpha_mlm"):
            if getattr(cfg, name) > 0:
                raise ValueError(
                    f"{name}={getattr(cfg, name)} needs a teacher with an MLM head, and {cfg.teacher} has none "
                    f"(L_ce needs its token logits; L_mlm a student head initialised from it). Set {name}=0 and "
                    "use alpha_cos / alpha_pooled_cos / alpha_pooled_mse instead")
    total = (cfg.alpha_ce + cfg.alpha_mlm + cfg.alpha_cos + cfg.alpha_mse + cfg.alpha_pooled_mse
             + cfg.alpha_pooled_cos)
    if total <= 0:
        raise ValueError("every loss weight is 0: nothing to train")


def run_distill(cfg: DistillConfig) -> dict[str, float]:
    tr = cfg.train
    teacher = model.load(cfg.teacher)
    teacher_has_mlm = teacher.task == "mlm"
    check_distill_weights(cfg, teacher_has_mlm)
    tok = model.Tokenizer.from_dir(cfg.teacher)
    use_mlm_head = teacher_has_mlm and (cfg.alpha_ce > 0 or cfg.alpha_mlm > 0)
    student = init_student(teacher, task="mlm" if use_mlm_head else "base", num_layers=cfg.student_layers,
                           layers=cfg.layer_map, fold_token_type=cfg.fold_token_type)
    maybe_freeze_embeddings(student, cfg.freeze_embeddings)
    texts = read_texts(cfg.corpus, cfg.corpus_column)[: cfg.max_texts]
    seqs = chunk_corpus(tok, texts, cfg.max_length)
    n_eval = max(1, int(len(seqs) * cfg.eval_fraction))
    gen = torch.Generator().manual_seed(tr.seed)
    order = torch.randperm(len(seqs), generator=gen).tolist()
    eval_seqs, train_seqs = [seqs[i] for i in order[:n_eval]], [seqs[i] for i in order[n_eval:]]
    data = SequenceData(train_seqs, None, tok.pad_id, cfg.max_length, tr.batch_size, tr.seed)
    pf = padding_fraction(data.lengths, data.batches_for_epoch(0))
    log.info("corpus: %d texts -> %d train / %d eval sequences; padding %.1f%% with length grouping",
             len(texts), len(train_seqs), len(eval_seqs), 100 * pf)

    wrapped = DistillStudent(student)
    device_holder: dict = {}
    masking = MaskingConfig(mlm_probability=cfg.mlm_probability, smoothing=cfg.mlm_smoothing)
    weights = None
    if cfg.mlm_smoothing:
        counts = torch.bincount(torch.tensor([t for s in train_seqs for t in s]), minlength=tok.vocab_size)
        weights = token_weights(counts, cfg.mlm_smoothing)
    special = torch.tensor(sorted(tok.special_ids))
    pairs = cfg.cos_layers or [[-1, -1]]
    do_mask = cfg.alpha_ce > 0 or cfg.alpha_mlm > 0

    def loss_fn(m: nn.Module, batch: Batch, g: torch.Generator):
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        if "teacher" not in device_holder:
            device_holder["teacher"] = frozen(teacher, ids.device)
        t = device_holder["teacher"]
        labels = None
        if do_mask:
            ids, labels = mask_tokens(ids, mask, special, tok.mask_id, tok.vocab_size, masking, g, weights)
        with torch.no_grad():
            t_states = t.encoder.hidden_states(ids, mask)
            t_logits = t.logits(t_states[-1]) if cfg.alpha_ce > 0 else None
        s_states, s_logits = m(ids, mask)
        parts, total = {}, ids.new_zeros((), dtype=torch.float32)
        real = mask.bool()
        if cfg.alpha_ce > 0:
            sel = (labels != -100) if cfg.ce_masked_only else real
            parts["loss_ce"] = losses.soft_target_kl(s_logits, t_logits, cfg.temperature, sel)
            total = total + cfg.alpha_ce * parts["loss_ce"]
        if cfg.alpha_mlm > 0:
            parts["loss_mlm"] = losses.masked_lm(s_logits, labels)
            total = total + cfg.alpha_mlm * parts["loss_mlm"]
        if cfg.alpha_cos > 0:
            cos = sum(losses.hidden_cosine(s_states[si], t_states[ti], real) for si, ti in pairs) / len(pairs)
            parts["loss_cos"] = cos
            total = total + cfg.alpha_cos * cos
        if cfg.alpha_mse > 0:
            mse = sum(losses.hidden_mse(s_states[si], t_states[ti], real) for si, ti in pairs) / len(pairs)
            parts["loss_mse"] = mse
            total = total + cfg.alpha_mse * mse
        if cfg.alpha_pooled_mse > 0 or cfg.alpha_pooled_cos > 0:
            sp, tp = mean_pool(s_states[-1], mask), mean_pool(t_states[-1], mask)
            if cfg.alpha_pooled_mse > 0:
                parts["loss_pooled_mse"] = losses.pooled_mse(sp, tp)
                total = total + cfg.alpha_pooled_mse * parts["loss_pooled_mse"]
            if cfg.alpha_pooled_cos > 0:
                parts["loss_pooled_cos"] = losses.pooled_cosine(sp, tp)
                total = total + cfg.alpha_pooled_cos * parts["loss_pooled_cos"]
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return distill_agreement(m.student, device_holder.get("teacher", teacher), eval_seqs, tok.pad_id,
                                 cfg.max_length, tr.batch_size)

    out = Path(tr.out_dir)
    trainer = Trainer(wrapped, tr, data.batches_for_epoch, data.make_batch, loss_fn, eval_fn,
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


# -- classification: fine-tune, task-distill, evaluate ----------------------------------------
class ClassifierOutputs(nn.Module):
    def __init__(self, clf: nn.Module) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, input_ids, attention_mask):
        last = self.clf.encoder(input_ids, attention_mask)
        return self.clf.logits(last), last


@torch.no_grad()
def predict(m: nn.Module, seqs: list[list[int]], pad_id: int, max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Logits (N, labels) in input order; batches sorted by length for speed."""
    device = next(m.parameters()).device
    m.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs), m.config.num_labels)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = collate([seqs[j] for j in idx], pad_id, max_length)
        out[idx] = m(ids.to(device), mask.to(device)).float().cpu()
    return out


def classification_metrics(pred: torch.Tensor, labels: list[int], num_labels: int) -> dict[str, float]:
    y = torch.tensor(labels)
    acc = (pred == y).float().mean().item()
    f1s = []
    for c in range(num_labels):
        tp = ((pred == c) & (y == c)).sum().item()
        fp = ((pred == c) & (y != c)).sum().item()
        fn = ((pred != c) & (y == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s), "n": len(labels)}


def _labeled_ids(tok: model.Tokenizer, path: str, cfg, id2label=None):
    data = read_labeled(path, cfg.text_column, cfg.label_column, id2label)
    return data, tok.tokenize_ids(data.texts)


def run_finetune(cfg: FinetuneConfig) -> dict[str, float]:
    tr = cfg.train
    tok = model.Tokenizer.from_dir(cfg.model)
    id2label = dict(enumerate(cfg.labels)) if cfg.labels else None
    train, train_ids = _labeled_ids(tok, cfg.train_file, cfg, id2label)
    clf = classifier_from(cfg.model, train.id2label)
    maybe_freeze_embeddings(clf, cfg.freeze_embeddings)
    dev = _labeled_ids(tok, cfg.dev_file, cfg, train.id2label) if cfg.dev_file else None
    data = SequenceData(train_ids, train.labels, tok.pad_id, cfg.max_length, tr.batch_size, tr.seed)
    reference = embedding_reference(cfg.embed_reference, cfg.alpha_embed)
    held: dict = {}

    def loss_fn(m, batch, g):
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        logits, last = m(ids, mask)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch.tensors["labels"])
        return _plus_embed_loss(loss, "loss_ce", held, reference, cfg.alpha_embed, last, ids, mask)

    def eval_fn(m):
        if dev is None:
            return {}
        pred = predict(m.clf, dev[1], tok.pad_id, cfg.max_length).argmax(-1)
        return classification_metrics(pred, dev[0].labels, clf.config.num_labels)

    out = Path(tr.out_dir)
    trainer = Trainer(ClassifierOutputs(clf), tr, data.batches_for_epoch, data.make_batch, loss_fn, eval_fn,
                      export_fn=lambda m: export(m.clf, out / "final", tok, cfg, pooling_from=cfg.model),
                      extra_config=to_dict(cfg))
    return trainer.train()


def _plus_embed_loss(loss: torch.Tensor, name: str, held: dict, reference: nn.Module | None, alpha: float,
                     last: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """The task loss, plus (with a reference model) embedding preservation:
    alpha * (1 - cos(mean-pooled embedding, the reference's))."""
    parts = {name: float(loss.detach())}
    if reference is None:
        return loss, parts
    if "reference" not in held:
        held["reference"] = frozen(reference, ids.device)
    with torch.no_grad():
        r = mean_pool(held["reference"].encoder(ids, mask), mask)
    e = losses.pooled_cosine(mean_pool(last, mask), r)
    parts["loss_embed"] = float(e.detach())
    return loss + alpha * e, parts


def run_distill_task(cfg: TaskDistillConfig) -> dict[str, float]:
    tr = cfg.train
    teacher = model.load(cfg.teacher)
    if teacher.task != "classification":
        raise ValueError(f"{cfg.teacher}: task distillation needs a fine-tuned classifier teacher, got {teacher.task}")
    tok = model.Tokenizer.from_dir(cfg.teacher)
    id2label = teacher.config.id2label
    if cfg.student:
        student = classifier_from(cfg.student, id2label)
    else:
        student = init_student(teacher, task="classification", num_layers=cfg.student_layers)
    maybe_freeze_embeddings(student, cfg.freeze_embeddings)
    train, train_ids = _labeled_ids(tok, cfg.train_file, cfg, id2label)
    dev = _labeled_ids(tok, cfg.dev_file, cfg, id2label) if cfg.dev_file else None
    seqs, labels = list(train_ids), list(train.labels)
    if cfg.unlabeled_file:
        extra = read_texts(cfg.unlabeled_file, cfg.unlabeled_column)[: cfg.max_unlabeled]
        extra_ids = tok.tokenize_ids(extra)
        seqs += extra_ids
        labels += [-100] * len(extra_ids)  # no label: the teacher's soft targets alone
        log.info("task distillation: %d labeled + %d unlabeled texts", len(train_ids), len(extra_ids))
    data = SequenceData(seqs, labels, tok.pad_id, cfg.max_length, tr.batch_size, tr.seed)
    reference = embedding_reference(cfg.embed_reference, cfg.alpha_embed)
    held: dict = {}

    def loss_fn(m, batch, g):
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        if "teacher" not in held:
            held["teacher"] = frozen(teacher, ids.device)
        with torch.no_grad():
            t_logits = held["teacher"](ids, mask)
        s_logits, s_last = m(ids, mask)
        loss = losses.task_distillation(s_logits, t_logits, batch.tensors["labels"], cfg.alpha, cfg.temperature)
        return _plus_embed_loss(loss, "loss_task", held, reference, cfg.alpha_embed, s_last, ids, mask)

    def eval_fn(m):
        if dev is None:
            return {}
        logits = predict(m.clf, dev[1], tok.pad_id, cfg.max_length)
        res = classification_metrics(logits.argmax(-1), dev[0].labels, len(id2label))
        t_pred = predict(held.get("teacher", teacher), dev[1], tok.pad_id, cfg.max_length).argmax(-1)
        res["teacher_agreement"] = (t_pred == logits.argmax(-1)).float().mean().item()
        return res

    out = Path(tr.out_dir)
    trainer = Trainer(ClassifierOutputs(student), tr, data.batches_for_epoch, data.make_batch, loss_fn, eval_fn,
                      export_fn=lambda m: export(m.clf, out / "final", tok, cfg,
                                                 pooling_from=cfg.embed_reference or cfg.teacher),
                      extra_config=to_dict(cfg))
    return trainer.train()


def run_evaluate(cfg: EvaluateConfig) -> dict[str, float]:
    m = model.load(cfg.model)
    if m.task != "classification":
        raise ValueError(f"{cfg.model}: not a classifier ({m.task})")
    tok = model.Tokenizer.from_dir(cfg.model)
    data, ids = _labeled_ids(tok, cfg.data_file, cfg, m.config.id2label)
    pred = predict(m, ids, tok.pad_id, cfg.max_length, cfg.batch_size).argmax(-1)
    res = {"model": cfg.model, "data": cfg.data_file,
           **classification_metrics(pred, data.labels, m.config.num_labels)}
    if cfg.teacher:
        t = model.load(cfg.teacher)
        t_pred = predict(t, ids, tok.pad_id, cfg.max_length, cfg.batch_size).argmax(-1)
        res["teacher_agreement"] = (t_pred == pred).float().mean().item()
    text = json.dumps(res, indent=2)
    print(text)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text + "\n")
    return res
