"""Evaluation of a classifier on a labeled file: accuracy, macro F1, agreement with a teacher."""

from __future__ import annotations

import json
from pathlib import Path

import model

from .config import EvaluateConfig
from .finetune import labeled_ids
from .scoring import classification_metrics, score


def run_evaluate(cfg: EvaluateConfig) -> dict[str, float]:
    m = model.load(cfg.model)
    if m.task != "classification":
        raise ValueError(f"{cfg.model}: not a classifier ({m.task})")
    tok = model.Tokenizer.from_dir(cfg.model)
    data, ids = labeled_ids(tok, cfg.data_file, cfg, m.config.id2label)
    pred = score(m, ids, tok.pad_id, cfg.max_length, batch_size=cfg.batch_size).argmax(-1)
    res = {"model": cfg.model, "data": cfg.data_file,
           **classification_metrics(pred, data.labels, m.config.num_labels)}
    if cfg.teacher:
        t = model.load(cfg.teacher)
        t_pred = score(t, ids, tok.pad_id, cfg.max_length, batch_size=cfg.batch_size).argmax(-1)
        res["teacher_agreement"] = (t_pred == pred).float().mean().item()
    text = json.dumps(res, indent=2)
    print(text)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text + "\n")
    return res
