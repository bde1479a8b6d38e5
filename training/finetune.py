"""Fine-tuning a checkpoint (base or classifier) on a labeled classification file, and the
classifier training loop that task distillation shares (fine-tuning is the case with no teacher)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import model
from model.device import resolve_device
from model.pooling import mean_pool

from . import objective
from .checkpoints import ClassifierOutputs, classifier_from, embedding_reference, export, maybe_freeze_embeddings
from .config import FinetuneConfig, TaskDistillConfig, to_dict
from .data import Labeled, SequenceData, TokenStates, read_labeled
from .scoring import classification_metrics, pooled_of, score
from .trainer import Trainer, distributed, seed_all, use_threads


def labeled_ids(tok: model.Tokenizer, path: str, cfg, id2label=None) -> tuple[Labeled, list[list[int]]]:
    data = read_labeled(path, cfg.text_column, cfg.label_column, id2label)
    return data, tok.tokenize_ids(data.texts)


def finetune_loss(cfg: FinetuneConfig) -> objective.TaskLoss:
    """Fine-tuning's loss: the labels (weighted per class if asked), and the embedding term if asked."""
    return objective.TaskLoss(alpha_embed=cfg.alpha_embed, class_weights=_weights(cfg.class_weights))


def distill_loss(cfg: TaskDistillConfig) -> objective.TaskLoss:
    """Task distillation's loss, as its config sets it."""
    return objective.TaskLoss(cfg.alpha, cfg.temperature, cfg.alpha_embed, cfg.alpha_hidden,
                              _weights(cfg.class_weights))


def _weights(class_weights: list[float] | None) -> tuple[float, ...] | None:
    return tuple(class_weights) if class_weights else None


def train_classifier(cfg: FinetuneConfig | TaskDistillConfig, clf: nn.Module, tok: model.Tokenizer,
                     seqs: list[list[int]], labels: list[int], teacher_logits: torch.Tensor | None,
                     pooling_from: str | None, dev_eval=None, reference_pooled: torch.Tensor | None = None,
                     teacher_states: TokenStates | None = None,
                     token_types: list[list[int]] | None = None, *, loss: objective.TaskLoss) -> dict[str, float]:
    """Train ``clf`` on (seqs, labels) with ``loss`` (``finetune_loss`` or ``distill_loss`` of ``cfg``): CE alone,
    or with the teacher's cached logits the task-distillation objective; ``cfg`` gives the optimiser, the
    length, the embedding reference and what the export records. The frozen teacher and embedding reference
    are run once, before training, over every
    sequence (``reference_pooled``: already done); what they produced travels with each batch, so neither
    model is held during training. ``teacher_states``: the teacher's per-token outputs at the layers
    ``clf``'s layers pair with, in order (one per student layer), for the hidden-state loss.
    ``token_types``: each sequence's segment ids (sentence pairs), for a BERT-family ``clf``."""
    tr = cfg.train
    device = resolve_device(tr.device, distributed()[2])  # the Trainer's: this process's GPU under torchrun
    maybe_freeze_embeddings(clf, cfg.freeze_embeddings)
    per_sequence = {}
    if teacher_logits is not None:
        per_sequence["teacher_logits"] = teacher_logits
    if reference_pooled is not None and loss.alpha_embed > 0:
        per_sequence["reference_pooled"] = reference_pooled
    elif (reference := embedding_reference(cfg.embed_reference, loss.alpha_embed)) is not None:
        reference.to(device)
        per_sequence["reference_pooled"] = score(reference, seqs, tok.pad_id, cfg.max_length, pooled_of,
                                                 token_types=token_types)
        del reference
    per_token, layers = {}, None
    if teacher_states is not None and loss.alpha_hidden > 0:
        per_token["teacher_states"] = teacher_states
        layers = list(range(clf.config.num_layers))
    data = SequenceData(seqs, labels, tok.pad_id, cfg.max_length, tr.batch_size, tr.seed, per_sequence, per_token,
                        token_types)
    weights = loss.class_weights
    weights = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None

    def loss_fn(m, batch, g):
        t = batch.tensors
        ids, mask = t["input_ids"], t["attention_mask"]
        logits, last, states = m(ids, mask, t.get("token_type_ids"))
        return objective.task_distillation(logits, t.get("teacher_logits"), t["labels"], loss.alpha,
                                           loss.temperature, mean_pool(last, mask), t.get("reference_pooled"),
                                           loss.alpha_embed, states, t.get("teacher_states"), mask,
                                           loss.alpha_hidden, weights)

    out = Path(tr.out_dir)
    trainer = Trainer(ClassifierOutputs(clf, layers), tr, data.batches_for_epoch, data.make_batch, loss_fn,
                      (lambda m: dev_eval(m.clf)) if dev_eval else None,
                      export_fn=lambda m: export(m.clf, out / "final", tok, cfg, pooling_from=pooling_from),
                      extra_config=to_dict(cfg))
    return trainer.train()


def dev_accuracy(cfg, tok: model.Tokenizer, id2label: dict[int, str], teacher_logits=None):
    """An eval function on cfg.dev_file (None without one): accuracy, macro F1 and, given the
    teacher's dev logits, agreement with it."""
    if not cfg.dev_file:
        return None
    dev, ids = labeled_ids(tok, cfg.dev_file, cfg, id2label)

    def evaluate(clf: nn.Module) -> dict[str, float]:
        pred = score(clf, ids, tok.pad_id, cfg.max_length).argmax(-1)
        res = classification_metrics(pred, dev.labels, len(id2label))
        if teacher_logits is not None:
            res["teacher_agreement"] = (teacher_logits(ids).argmax(-1) == pred).float().mean().item()
        return res

    return evaluate


def run_finetune(cfg: FinetuneConfig) -> dict[str, float]:
    use_threads(cfg.train.threads)
    seed_all(cfg.train.seed)
    tok = model.Tokenizer.from_dir(cfg.model)
    id2label = dict(enumerate(cfg.labels)) if cfg.labels else None
    train, train_ids = labeled_ids(tok, cfg.train_file, cfg, id2label)
    clf = classifier_from(cfg.model, train.id2label)
    return train_classifier(cfg, clf, tok, train_ids, train.labels, None, cfg.model,
                            dev_accuracy(cfg, tok, train.id2label), loss=finetune_loss(cfg))
