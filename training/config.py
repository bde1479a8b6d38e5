"""Typed configs for each command, loadable from YAML/JSON with ``key=value`` overrides.

    python -m training distill --config distill.yaml teacher=path train.lr=1e-4

Every config is saved inside each checkpoint and next to the exported model.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .objective import GeneralWeights
from .paper import TEMPERATURE
from .trainer import TrainConfig


@dataclass
class DistillConfig:
    """General (task-agnostic) distillation with the triple loss on raw text."""

    teacher: str = ""
    corpus: str = ""  # .txt (one text per line) or .csv/.tsv/.jsonl with corpus_column
    corpus_column: str = "text"
    max_texts: int | None = None
    max_length: int = 128
    eval_fraction: float = 0.02
    student_layers: int | None = None  # default: half the teacher's
    layer_map: list[int] | None = None  # default: one layer out of two (0,2,4,7,9,11 for 12 -> 6)
    fold_token_type: bool = False
    # The triple loss's weights and T (the paper's by default), as the objective takes them: loss.ce=0 ...
    loss: GeneralWeights = field(default_factory=GeneralWeights)
    cos_layers: list[list[int]] | None = None  # [[student, teacher], ...] hidden-state indices; default last
    freeze_embeddings: bool = False  # keep the word embeddings copied from the teacher fixed (faster on CPU)
    dropout: float | None = None  # the student's hidden and attention dropout while distilling; None: the teacher's
    mlm_probability: float = 0.15
    mlm_smoothing: float | None = None  # 0.7 as in the authors' script
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-4, out_dir="runs/distill"))


# Options that moved, old spelling -> new key: an old command line or config file is refused naming the new one.
MOVED: dict[type, dict[str, str]] = {DistillConfig: {
    "temperature": "loss.temperature", "alpha_ce": "loss.ce", "alpha_mlm": "loss.mlm", "alpha_cos": "loss.cos",
    "alpha_pooled_mse": "loss.pooled_mse", "alpha_pooled_cos": "loss.pooled_cos"}}


def _task_train(out_dir: str) -> TrainConfig:
    """Fine-tuning optimiser defaults (BERT's: lr 5e-5, clip 1.0, decay 0.01), shared by both task stages."""
    return TrainConfig(lr=5e-5, out_dir=out_dir, max_grad_norm=1.0, weight_decay=0.01,
                       adam_betas=(0.9, 0.999), adam_eps=1e-8)


@dataclass
class FinetuneConfig:
    """Fine-tune a checkpoint (base or classifier) on a labeled classification file."""

    model: str = ""
    train_file: str = ""
    dev_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    labels: list[str] | None = None  # label names in id order; default: sorted names in the file
    max_length: int = 128
    embed_reference: str | None = None  # keep sentence embeddings close to this model's while fine-tuning
    alpha_embed: float = 0.0
    freeze_embeddings: bool = False
    class_weights: list[float] | None = None  # per label id: weights of the cross-entropy (None: all 1)
    train: TrainConfig = field(default_factory=lambda: _task_train("runs/finetune"))


@dataclass
class TaskDistillConfig:
    """Task distillation: alpha * KL_T * T^2 + (1 - alpha) * CE from a fine-tuned teacher."""

    teacher: str = ""  # a classifier
    student: str | None = None  # a (generally distilled) student dir; None: init from the teacher
    student_layers: int | None = None
    train_file: str = ""
    dev_file: str | None = None
    unlabeled_file: str | None = None  # extra text scored by the teacher (KL only)
    unlabeled_column: str = "text"
    max_unlabeled: int | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = 128
    alpha: float = 0.5
    temperature: float = TEMPERATURE
    embed_reference: str | None = None  # keep sentence embeddings close to this model's
    alpha_embed: float = 0.0
    # Per-token hidden states: 1 - cos between each student layer's output and the teacher layer it
    # was copied from (the paper's L_cos, here during task distillation, on every text scored).
    alpha_hidden: float = 0.0
    freeze_embeddings: bool = False
    class_weights: list[float] | None = None  # per label id: weights of the labels' cross-entropy (teacherless)
    train: TrainConfig = field(default_factory=lambda: _task_train("runs/distill-task"))


@dataclass
class CompressConfig:
    """``compress``: a student classifier distilled from a teacher on your data, in one command, with the
    recipe ``make models`` keeps 97% of its teacher with (``experiments.pipeline.Recipe``), not the
    library's plain defaults. ``training/compress.py`` says where each default comes from."""

    teacher: str = ""  # a fine-tuned sequence classifier, Hugging Face format (BERT or DistilBERT family)
    base: str = ""  # or an encoder without a head: fine-tuned on train_file into out_dir/teacher first
    train_file: str = ""  # .csv, .tsv or .jsonl
    dev_file: str | None = None  # None: the rows of train_file with sha1(text) mod 10 == 0
    test_file: str | None = None
    unlabeled_file: str | None = None  # extra text the teacher scores (.txt, or a table with text_column)
    out_dir: str = ""
    text_column: str = "text"
    text_pair_column: str | None = None  # sentence-pair tasks: the second text
    label_column: str = "label"
    max_length: int | None = None  # None: 128, or the teacher's positions if it has fewer
    student_layers: int | None = None  # None: half the teacher's, initialised from one teacher layer in two
    # The recipe (Recipe's defaults): soft targets alone, perturbed copies of half the training texts and
    # any unlabeled text scored by the teacher, pooled cosine toward the teacher's sentence representation.
    alpha: float = 1.0
    temperature: float = TEMPERATURE
    perturbed: float = 0.5  # perturbed copies per training text (training.augment)
    alpha_embed: float = 1.0
    max_unlabeled: int | None = None
    # The budget, fitted to the data (training/compress.py: ``fit_epochs``, the teacher's sweep). Each
    # training stage is evaluated on dev after every epoch and keeps its best epoch.
    epochs: int | None = None  # the student's; None: 3 to 10, at least STUDENT_STEPS optimizer steps
    lr: float = 1e-4
    batch_size: int = 32
    warmup_fraction: float = 0.06
    teacher_epochs: int | None = None  # base= only; None: 3 to 10, at least TEACHER_STEPS optimizer steps
    teacher_lr: float | None = None  # base= only; None: each of teacher_lrs tried, the best on dev kept
    teacher_lrs: list[float] = field(default_factory=lambda: [5e-5, 1e-4, 2e-4])
    # Cross-entropy weights of the teacher's fine-tuning and the labels-only baseline: auto (sqrt when the
    # most frequent label has at least 3x the rows of the rarest, else none) | none | sqrt | balanced
    class_weight: str = "auto"
    max_steps: int | None = None  # a cap on each training stage's optimizer steps (a quick try)
    budget_minutes: float | None = None  # scale the steps and extra text to fit (a short probe measures speed)
    baseline: bool = False  # also train the labels-only student (same size, initialisation, optimizer steps)
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    n_latency: int = 100  # dev texts timed at batch 1 on the CPU
    # The teacher's and the student's int8 and ONNX variants measured (training/variants.py), the fastest
    # within 1.0 point of its fp32's accuracy served by serve.json
    variants: bool = True
    progress: bool = True


@dataclass
class EvaluateConfig:
    model: str = ""
    data_file: str = ""
    teacher: str | None = None  # also report agreement with this model's predictions
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = 128
    batch_size: int = 64
    output: str | None = None  # JSON file; always printed


def _convert(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _convert(value, args[0])
    if tp is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected a boolean, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if tp in (int, float, str):
        return tp(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = json.loads(value)
        return tuple(value) if origin is tuple else list(value)
    return value


def build(cls: type, values: dict[str, Any]) -> Any:
    """Nested dict -> dataclass, converting types and rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    moved = {k: MOVED[cls][k] for k in sorted(unknown) if k in MOVED.get(cls, {})}
    if moved:
        raise ValueError(f"{cls.__name__} option(s) renamed: " + ", ".join(
            f"{old}={values[old]} is now {new}={values[old]}" for old, new in moved.items()))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {sorted(unknown)}; known: {sorted(names)}")
    defaults = cls()
    kwargs = {}
    for k, v in values.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):  # nested: start from this command's defaults
            kwargs[k] = build(tp, {**dataclasses.asdict(getattr(defaults, k)), **v})
        else:
            kwargs[k] = _convert(v, tp)
    return cls(**kwargs)


def load_config(cls: type, file: str | Path | None, overrides: list[str]) -> Any:
    values: dict[str, Any] = {}
    if file:
        text = Path(file).read_text()
        if str(file).endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build(cls, values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
