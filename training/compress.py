"""``python -m training compress``: your teacher and your data in, a smaller classifier out, with the
recipe ``make models`` keeps 97% of its teacher with, and the evidence of how well it did.

    python -m training compress teacher=DIR train_file=F [dev_file=F] [test_file=F] out_dir=DIR [key=value ...]
    python -m training compress base=DIR ...      (fine-tunes the teacher first, into out_dir/teacher)

Stages, each skipped when its inputs (the data files' bytes, the options it reads, the models it starts
from) are the same as the finished run's in out_dir:

  teacher   base= only: the encoder fine-tuned on the labels (training.finetune) at each learning
            rate of teacher_lrs (5e-5, 1e-4, 2e-4) by successive halving: every rate's first epoch,
            then the best on dev trains on; its best epoch on dev kept            -> out_dir/teacher
  student   half the teacher's layers, one in two copied from it (training.init); trained on the
            teacher's soft targets (alpha 1, T 2) for the training texts, perturbed copies of half of
            them (training.augment) and any unlabeled text, plus a pooled-cosine loss toward the
            teacher's mean-pooled last layer (alpha_embed 1); its best epoch on dev kept -> out_dir/student
  baseline  baseline=true: the same student trained on the labels alone, for as many optimizer steps
            as the student (the same budget), its best epoch on dev kept         -> out_dir/baseline
  evaluate  per split: accuracy, macro and per-label F1, agreement with the teacher, retention;
            batch-1 CPU latency, parameters  -> report.json, report.md, accuracy_latency.png, serve.json
  variants  variants=true (the default): the teacher and the student as the service can run them (torch
            fp32, torch int8, ONNX Runtime fp32 and int8: training/variants.py) on the headline split (test,
            else dev): accuracy, macro-F1, agreement with the model's own fp32; batch-1 CPU latency on
            evaluate's texts. The fastest within 1.0 point of its fp32's accuracy is what serve.json serves

Where the defaults come from: the student's recipe is ``experiments.pipeline.Recipe`` (chosen on dev splits
by ``make ablation`` and ``make candidates``: docs/ablation.md), lr 1e-4, batch 32, warm-up 6%. What
depends on the data is fitted to it (``fitted``, ``class_weights``, the sweep): epochs by the number of
texts (at least TEACHER_STEPS / STUDENT_STEPS optimizer steps, 3 to 10 epochs), the teacher's learning
rate and every stage's epoch on the dev split, and class-weighted cross-entropy (the square root of
balanced weights) for the teacher and the baseline when the most frequent label has 3x the rows of the
rarest. The evidence, on several tasks: docs/compress.md (``python -m experiments.evidence``).
The report (report.md) says what was chosen and each label's F1, and warns when a model never predicts
a label the split has. Every input problem is an ``InputError`` (a
ValueError) raised before the first training step (``prepare``).

Under ``torchrun --nproc_per_node=N -m training compress ...`` every process reads and checks the data and
trains each training stage (the Trainer's DDP: batch_size stays the batch of one optimizer step, split
across the processes, so the recipe is the same); rank 0 alone evaluates on dev and keeps the best epoch,
publishes, evaluates, measures the variants and writes the records, the report and the log, and the
others wait for what it decided (``Ranks``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import model
from model.device import resolve_device

from . import variants
from .augment import perturbed_copies
from .checkpoints import classifier_from, export
from .config import CompressConfig, FinetuneConfig, TaskDistillConfig, to_dict
from .data import collate, read_texts
from .figures import pyplot, save
from .finetune import distill_loss, finetune_loss, train_classifier
from .init import init_student
from .objective import task_distillation
from .scoring import logits_and_pooled_of, logits_of, score
from .tabular import (
    FORMATS,
    InputError,
    Table,
    check_lengths,
    encode,
    label_order,
    read_table,
    resolve_labels,
    split_dev,
)
from .trainer import TrainConfig, init_distributed, seed_all, use_threads

log = logging.getLogger("compress")  # not under "training": the Trainer points that logger at its own file
SPLITS = ("dev", "test")
STAGE_DIR = ".stages"
PLOT = "accuracy_latency.png"
TRAINING_STAGES = ("teacher", "student", "baseline")
SAVE_EVERY = 200  # optimizer steps between checkpoints: a stopped stage loses at most these
DEFAULT_MAX_LENGTH = 128  # the library's (FinetuneConfig, TaskDistillConfig); make models' short snippets use 64

# The options each stage reads (besides the data and the model it starts from): a stage reruns when one
# of them changes, and only then. ``out_dir``, ``device``, ``threads`` and ``progress`` say how, not what.
_DATA_OPTIONS = ("text_column", "text_pair_column", "label_column", "max_length", "seed", "batch_size",
                 "warmup_fraction", "max_steps", "budget_minutes")
_STAGE_OPTIONS = {
    "teacher": (*_DATA_OPTIONS, "teacher_epochs", "teacher_lrs", "class_weight"),
    "student": (*_DATA_OPTIONS, "student_layers", "alpha", "temperature", "perturbed", "alpha_embed",
                "max_unlabeled", "epochs", "lr"),
    # the student's optimizer steps, hence what sets them
    "baseline": (*_DATA_OPTIONS, "student_layers", "epochs", "lr", "class_weight", "perturbed", "max_unlabeled"),
    "evaluate": (*_DATA_OPTIONS, "n_latency"),
    "variants": (*_DATA_OPTIONS, "n_latency"),
}
# Budgets fitted to the data's size: each training stage runs at least this many optimizer steps (more
# epochs on small data), within [MIN, MAX] epochs; on dev, each keeps its best epoch. Chosen on the
# tasks of docs/compress.md (python -m experiments.evidence).
TEACHER_STEPS, TEACHER_EPOCHS = 300, (3, 10)
STUDENT_STEPS, STUDENT_EPOCHS = 400, (3, 10)
CLASS_WEIGHTS = ("auto", "none", "sqrt", "balanced")
IMBALANCE = 3.0  # auto: class weights when the most frequent label has this many times the rarest's rows


@dataclass
class Prepared:
    """Everything read and checked before training: the splits as token ids, their label ids, the
    teacher's (or, with base=, the data's) labels, and what each file's bytes hash to."""

    tok: model.Tokenizer
    source: Path  # teacher= or base=
    source_model: nn.Module
    id2label: dict[int, str]
    tables: dict[str, Table]  # train, dev, test (when given)
    ids: dict[str, list[list[int]]]
    types: dict[str, list[list[int]] | None]
    labels: dict[str, list[int]]
    unlabeled: Table | None
    dev_from_train: bool
    cut: dict[str, int]  # rows max_length cuts, per split
    digests: dict[str, str]  # option -> sha256 of the file's bytes
    max_length: int  # max_length, or its default for this teacher


# -- checks: every problem before the first step -----------------------------------------------------
def prepare(cfg: CompressConfig) -> Prepared:
    """Read and check the options, the model and every data file; raise ValueError naming the fix."""
    if bool(cfg.teacher) == bool(cfg.base):
        raise InputError("give teacher=DIR (a fine-tuned classifier) or base=DIR (an encoder to fine-tune first), "
                         f"exactly one of them (got teacher={cfg.teacher!r}, base={cfg.base!r})")
    for option in ("train_file", "out_dir"):
        if not getattr(cfg, option):
            raise InputError(f"{option}= is required")
    option = "teacher" if cfg.teacher else "base"
    source = Path(cfg.teacher or cfg.base)
    if not (source / "config.json").is_file():
        raise InputError(f"{option}={source}: not a Hugging Face model folder (no config.json)")
    try:
        m = model.load(source)
        tok = model.Tokenizer.from_dir(source)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        raise InputError(f"{option}={source}: cannot be read as a BERT or DistilBERT checkpoint ({e})") from None
    if cfg.teacher and m.task != "classification":
        raise InputError(f"teacher={source} has no classification head (it is a {m.task!r} model): pass it as "
                         f"base={source} to fine-tune a teacher on train_file first")
    layers = m.config.num_layers
    if cfg.student_layers is not None and not 1 <= cfg.student_layers <= layers:
        raise InputError(f"student_layers={cfg.student_layers}: the teacher has {layers} layers; want 1..{layers}")
    positions = m.config.max_position_embeddings
    max_length = min(DEFAULT_MAX_LENGTH, positions) if cfg.max_length is None else cfg.max_length
    if not 2 <= max_length <= positions:
        raise InputError(f"max_length={max_length}: the model takes 2..{positions} tokens")
    for name, v in (("epochs", cfg.epochs), ("teacher_epochs", cfg.teacher_epochs), ("batch_size", cfg.batch_size)):
        if v is not None and v < 1:
            raise InputError(f"{name}={v}: want at least 1")
    lrs = [cfg.teacher_lr] if cfg.teacher_lr is not None else cfg.teacher_lrs
    if not lrs or any(not lr > 0 for lr in [*lrs, cfg.lr]):
        raise InputError(f"lr={cfg.lr}, teacher_lr={cfg.teacher_lr}, teacher_lrs={cfg.teacher_lrs}: want learning "
                         "rates above 0 (and at least one in teacher_lrs)")
    if cfg.class_weight not in CLASS_WEIGHTS:
        raise InputError(f"class_weight={cfg.class_weight!r}: want one of {', '.join(CLASS_WEIGHTS)}")

    def table(what: str, path: str) -> Table:
        return read_table(path, what, cfg.text_column, cfg.label_column, cfg.text_pair_column)

    whole = table("train_file", cfg.train_file)
    _check_labels_vary(whole, cfg.label_column)
    tables = {"train": whole}
    if cfg.dev_file:
        tables["dev"] = table("dev_file", cfg.dev_file)
    else:
        tables["train"], tables["dev"] = split_dev(whole)
        if not len(tables["dev"]) or not len(tables["train"]):
            raise InputError(f"{whole.source}: {len(whole)} rows are too few to cut a dev split off (sha1(text) mod "
                             f"10 == 0 picked {len(tables['dev'])}): give a dev_file=")
        _check_labels_vary(tables["train"], cfg.label_column)
    if cfg.test_file:
        tables["test"] = table("test_file", cfg.test_file)
    id2label = (dict(m.config.id2label) if cfg.teacher
                else dict(enumerate(label_order(set(tables["train"].labels or [])))))
    labels = {"train": resolve_labels(tables["train"], id2label)}
    known = set(labels["train"])
    for split in SPLITS:
        if split in tables:
            labels[split] = _labels_known(tables[split], id2label, known)
    ids, types, cut = {}, {}, {}
    for split, t in tables.items():
        ids[split], types[split] = encode(tok, t)
        cut[split] = check_lengths(t, ids[split], max_length, positions)
    unlabeled = _read_unlabeled(cfg) if cfg.unlabeled_file else None
    digests = {o: _file_digest(p) for o in ("train_file", "dev_file", "test_file", "unlabeled_file")
               if (p := getattr(cfg, o))}
    return Prepared(tok, source, m, id2label, tables, ids, types, labels, unlabeled, not cfg.dev_file, cut, digests,
                    max_length)


def _check_labels_vary(t: Table, column: str) -> None:
    distinct = set(t.labels or [])
    if len(distinct) < 2:
        raise InputError(f"{t.source}: column {column!r} has {len(distinct)} distinct value ({sorted(distinct)}); "
                         "a classifier needs at least 2 labels")


def _labels_known(t: Table, id2label: dict[int, str], known: set[int]) -> list[int]:
    """Label ids of a dev/test table; raises when it has labels the training rows never show."""
    label2id = {v: k for k, v in id2label.items()}
    out, lacking = [], set()
    for lab in t.labels or []:
        i = label2id.get(lab, int(lab) if lab.lstrip("-").isdigit() and int(lab) in id2label else None)
        if i is None or i not in known:
            lacking.add(lab)
        out.append(i)
    if lacking:
        raise InputError(f"{t.source}: label(s) {label_order(lacking)} never occur in the training rows, so no "
                         "model trained on them can predict them: add examples of them to train_file, or drop "
                         "these rows")
    return out


def _read_unlabeled(cfg: CompressConfig) -> Table:
    path = Path(cfg.unlabeled_file or "")
    if path.suffix in FORMATS:
        return read_table(path, "unlabeled_file", cfg.text_column, None, cfg.text_pair_column)
    if cfg.text_pair_column:
        raise InputError(f"unlabeled_file={path}: a sentence-pair task needs a .csv, .tsv or .jsonl file with "
                         f"columns {cfg.text_column!r} and {cfg.text_pair_column!r}")
    if not path.is_file():
        raise InputError(f"unlabeled_file={path}: no such file")
    texts = read_texts(path)
    if not texts:
        raise InputError(f"unlabeled_file={path} has no text: give it one text per line, or leave it out")
    return Table(f"unlabeled_file={path}", texts, None, None)


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_digest(folder: Path) -> str:
    """sha256 of a model folder's configuration, weights and tokenizer (not its model card)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "tokenizer.json",
                                                                              "vocab.txt")):
            h.update(p.name.encode() + b"\0" + _file_digest(p).encode())
    return h.hexdigest()


# -- the processes -----------------------------------------------------------------------------------
WAIT = timedelta(hours=24)  # how long the other ranks wait for rank 0 (evaluation, variants: not NCCL's 10 min)


@dataclass
class Ranks:
    """This process's place under torchrun. Every rank trains (the Trainer wraps the model in DDP and
    shards the batches); rank 0 alone writes, and what it decides or reads reaches the others through
    ``share``, which also makes them wait until it is done. Alone: rank 0 of 1, and nothing to wait for."""

    rank: int = 0
    world: int = 1
    local: int = 0
    group: Any = None  # gloo, whatever the training's backend: objects stay on the CPU, and a long timeout
    started: bool = False  # the process group was begun here, so it is ended here

    @classmethod
    def join(cls, device: str) -> Ranks:
        """The process group torchrun set up (the Trainer's ``init_distributed``: NCCL on CUDA, gloo on the
        CPU), joined once before anything is read; (0, 1, 0) outside torchrun."""
        begun = dist.is_available() and dist.is_initialized()
        rank, world, local = init_distributed(device)
        if world == 1:
            return cls()
        return cls(rank, world, local, dist.new_group(backend="gloo", timeout=WAIT), not begun)

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.world > 1 else None

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (plain data: it travels pickled)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def on_rank0(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 alone (a write, a decision), its result on every rank once it has returned."""
        return self.share(fn() if self.rank == 0 else None)

    def close(self) -> None:
        if self.started:
            dist.destroy_process_group()


# -- the run -----------------------------------------------------------------------------------------
class Run:
    """One ``compress`` invocation in ``out_dir``: its stages, each run or skipped, and their records."""

    def __init__(self, cfg: CompressConfig, prep: Prepared, command: str = "", ranks: Ranks | None = None) -> None:
        self.cfg, self.prep, self.command = cfg, prep, command
        self.ranks = ranks or Ranks()
        self.out = Path(cfg.out_dir)
        self.device = resolve_device(cfg.device, self.ranks.local if self.ranks.world > 1 else None)
        if self.device.type == "cuda" and self.ranks.world > 1:
            torch.cuda.set_device(self.device)  # this process's GPU, for every tensor made on "cuda"
        self.stages: dict[str, dict] = {}
        self.resuming: dict[str, bool] = {}

    # stage records: out_dir/.stages/<name>.json holds the key of the finished stage
    def key(self, stage: str, **upstream: str) -> str:
        options = {o: getattr(self.cfg, o) for o in _STAGE_OPTIONS[stage]}
        payload = {"stage": stage, "options": options, "data": self.prep.digests, "upstream": upstream,
                   "plan": self.plan_for(stage)}
        if stage in TRAINING_STAGES and self.ranks.world > 1:
            # Another split of the batch (and checkpoints the Trainer will not resume into): trained again.
            # Absent alone, so the records of single-process runs stay valid.
            payload["world_size"] = self.ranks.world
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def stage(self, name: str, key: str, output: Path, fn) -> dict:
        """The stage's record when its key is the finished run's (skipped), else ``fn()`` run and recorded.
        Under torchrun rank 0 decides the skip and writes the record; a training stage's ``fn`` runs on
        every rank (its result is the same on each: what was chosen on dev comes from rank 0), any other
        stage's on rank 0 alone while the others wait."""
        record = self.out / STAGE_DIR / f"{name}.json"

        def finished() -> dict | None:
            if record.is_file() and output.exists():
                saved = json.loads(record.read_text())
                if saved["key"] == key:
                    return saved
            record.unlink(missing_ok=True)
            return None

        saved = self.ranks.on_rank0(finished)
        if saved is not None:
            log.info("%s: skipped, its inputs are byte for byte the finished run's (%s)", name, output)
            self.stages[name] = {"ran": False, "seconds": saved["seconds"]}
            return saved
        if name in TRAINING_STAGES:
            self.resuming[name] = self.ranks.on_rank0(lambda: self.begin(name, key))
        t0 = time.perf_counter()
        result = (fn() if name in TRAINING_STAGES else self.ranks.on_rank0(fn)) or {}

        def keep() -> dict:
            saved = {"key": key, "seconds": round(time.perf_counter() - t0, 1), **result}
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(saved, indent=1) + "\n")
            return saved

        saved = self.ranks.on_rank0(keep)
        self.stages[name] = {"ran": True, "seconds": saved["seconds"]}
        return saved

    # the budget
    plan: dict

    def plan_for(self, stage: str) -> dict:
        return {k: v for k, v in self.plan.items() if k.startswith(stage) or k == "extra_fraction"}

    def train_config(self, name: str, epochs: int, lr: float, steps: int | None = None,
                     eval_every: int = 0) -> TrainConfig:
        """``name``: the stage, or ``stage/candidate`` (a run of the teacher's sweep), its folder under work/."""
        cfg = self.cfg
        steps = steps or self.plan.get(f"{name}_steps") or cfg.max_steps
        return replace(FinetuneConfig().train, out_dir=str(self.out / "work" / name), epochs=epochs, lr=lr,
                       max_steps=steps, batch_size=cfg.batch_size // self.ranks.world,  # per process
                       warmup_fraction=cfg.warmup_fraction,
                       save_every=SAVE_EVERY, log_every=10, eval_every=eval_every, seed=cfg.seed, device=cfg.device,
                       threads=cfg.threads, progress=cfg.progress,
                       resume=self.resuming.get(name.split("/")[0], False))

    def publish(self, name: str, source: str = "best") -> Path:
        """The stage's kept model (``source`` under work/<name>: the best epoch on dev) moved to
        out_dir/<name>; its checkpoints (optimizer state included) removed. By rank 0; every rank returns
        once it is there."""
        run_dir, dest = self.out / "work" / name, self.out / name

        def move() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(run_dir / source), str(dest))
            for ck in run_dir.glob("**/checkpoint.pt"):
                ck.unlink()

        self.ranks.on_rank0(move)
        return dest

    def begin(self, name: str, key: str) -> bool:
        """A stopped stage with the same inputs continues from its checkpoint (out_dir/work/<name>): True;
        any other starts from scratch there: False."""
        run_dir = self.out / "work" / name
        pending = run_dir / "stage_key"
        if pending.is_file() and pending.read_text() == key and (run_dir / "checkpoint.pt").is_file():
            log.info("%s: continuing the stopped run from %s", name, run_dir / "checkpoint.pt")
            return True
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        pending.write_text(key)
        return False

    def dev_eval(self, types_too: bool):
        p = self.prep

        def evaluate(clf: nn.Module) -> dict[str, float]:
            pred = score(clf, p.ids["dev"], p.tok.pad_id, self.cfg.max_length,
                         token_types=p.types["dev"] if types_too and has_types(clf) else None).argmax(-1)
            return {k: v for k, v in label_metrics(pred.tolist(), p.labels["dev"], p.id2label).items()
                    if k in ("accuracy", "macro_f1")}

        return evaluate


def has_types(m: nn.Module) -> bool:
    """Whether ``m`` reads token_type_ids (BERT family): sentence pairs' segments reach it."""
    return getattr(m.encoder.embeddings, "token_type", None) is not None


def run_compress(cfg: CompressConfig) -> dict:
    """The command: checks, stages (each skipped when its inputs are unchanged), report. Returns the report."""
    t_start = time.perf_counter()
    out = Path(cfg.out_dir) if cfg.out_dir else None
    ranks = Ranks.join(cfg.device)
    handlers = _open_log(out, ranks.rank)
    try:
        use_threads(cfg.threads)
        seed_all(cfg.seed)
        # as typed, before the defaults that depend on the teacher are filled in
        command = command_line(cfg, ranks.world)
        log.info("compress: %s", command)
        if ranks.world > 1:
            log.info("torchrun: %d processes (DDP, %s), each training on %d of the %d texts of every batch; rank 0 "
                     "evaluates and writes", ranks.world, ranks.backend, cfg.batch_size // ranks.world,
                     cfg.batch_size)
        try:
            _check_world(cfg, ranks.world)
            prep = prepare(cfg)
        except InputError as e:
            log.error("nothing trained: %s", e)
            raise
        cfg = replace(cfg, max_length=prep.max_length, **fitted(cfg, prep))
        _log_data(cfg, prep)
        run = Run(cfg, prep, command, ranks)
        # rank 0's plan (under DDP its probe still times one process on whole batches)
        run.plan = ranks.on_rank0(lambda: plan_budget(run))
        teacher_dir = prep.source
        records = {}  # each training stage's record: what it chose on dev
        if cfg.base:
            records["teacher"] = run.stage("teacher", run.key("teacher", base=model_digest(prep.source)),
                                           run.out / "teacher", lambda: _train_teacher(run))
            teacher_dir = run.out / "teacher"
        teacher_digest = model_digest(teacher_dir)
        dirs = {"teacher": teacher_dir}
        records["student"] = run.stage("student", run.key("student", teacher=teacher_digest), run.out / "student",
                                       lambda: _train_student(run, teacher_dir))
        dirs["student"] = run.out / "student"
        if cfg.baseline:
            records["baseline"] = run.stage("baseline", run.key("baseline", teacher=teacher_digest),
                                            run.out / "baseline",
                                            lambda: _train_baseline(run, teacher_dir, records["student"]["steps"]))
            dirs["baseline"] = run.out / "baseline"
        digests = {n: model_digest(p) for n, p in dirs.items()}
        measured = run.stage("evaluate", run.key("evaluate", **digests), run.out / "report.json",
                             lambda: {"results": evaluate(run, dirs)})
        served = None
        if cfg.variants:
            served = run.stage("variants", run.key("variants", teacher=digests["teacher"], student=digests["student"],
                                                   exporter=variants.exporter_versions()),
                               run.out / "report.json", lambda: {"variants": measure_variants(run, dirs)})["variants"]
        selection = {n: r["selection"] | ({"steps": r["steps"]} if "steps" in r else {})
                     for n, r in records.items()}
        report = ranks.on_rank0(lambda: write_report(run, dirs, measured["results"],
                                                     records["student"].get("extra", {}), selection,
                                                     round(time.perf_counter() - t_start, 1), served))
        log.info("done in %.1f s: %s", time.perf_counter() - t_start, report["summary"])
        return report
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        ranks.close()


def _check_world(cfg: CompressConfig, world: int) -> None:
    if cfg.batch_size % world:
        raise InputError(f"batch_size={cfg.batch_size} is the batch of one optimizer step, split across the {world} "
                         f"processes torchrun started: want a multiple of {world}")


def _open_log(out: Path | None, rank: int = 0) -> list[logging.Handler]:
    """Progress on stderr and a readable log in out_dir/compress.log (appended: one block per run). Under
    torchrun rank 0's; the other ranks print their errors alone (their warnings would be rank 0's again)."""
    log.setLevel(logging.INFO)
    log.propagate = False
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("[compress] %(message)s" if rank == 0 else
                                             f"[compress rank {rank}] %(message)s"))
    handlers: list[logging.Handler] = [to_stderr]
    if rank:
        to_stderr.setLevel(logging.ERROR)
    elif out is not None:
        out.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(out / "compress.log")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(to_file)
    for h in handlers:
        log.addHandler(h)
    return handlers


def command_line(cfg: CompressConfig, world: int = 1) -> str:
    """The command with the options that differ from the defaults (what a reader would type again), under
    torchrun with its process count."""
    default = CompressConfig()
    parts = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
             if getattr(cfg, f.name) != getattr(default, f.name)]
    launcher = "python"
    if world > 1:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        nodes = f"--nnodes={world // per_node} " if per_node < world else ""
        launcher = f"torchrun {nodes}--nproc_per_node={per_node}"
    return f"{launcher} -m training compress " + " ".join(parts)


def _log_data(cfg: CompressConfig, prep: Prepared) -> None:
    counts = {s: len(t) for s, t in prep.tables.items()}
    log.info("data: %s; labels %s%s", counts, prep.id2label,
             "; sentence pairs (token types to the teacher)" if cfg.text_pair_column else "")
    if prep.dev_from_train:
        log.info("no dev_file: the dev split is the %d rows of train_file with sha1(text) mod 10 == 0 "
                 "(the same rows on every run); %d rows train", counts["dev"], counts["train"])
    for split, n in prep.cut.items():
        if n:
            log.warning("%s: %d of %d texts are longer than max_length=%d tokens and are cut", split, n,
                        counts[split], cfg.max_length)


# -- the budget ----------------------------------------------------------------------------------------
def _steps(n: int, batch_size: int, epochs: int, cap: int | None) -> int:
    steps = math.ceil(n / batch_size) * epochs
    return min(steps, cap) if cap else steps


def sweep_steps(n_lrs: int, per_epoch: int, each: int) -> int:
    """Optimizer steps of the teacher's sweep: every rate's first epoch, then the rest of one run."""
    return each if n_lrs < 2 else each + (n_lrs - 1) * min(per_epoch, each)


def _extra_counts(cfg: CompressConfig, prep: Prepared, fraction: float = 1.0) -> tuple[int, int]:
    """(perturbed copies, unlabeled texts) the student's extra text holds at ``fraction`` of the recipe's."""
    n_train = len(prep.tables["train"])
    copies = round(cfg.perturbed * fraction * n_train) if cfg.perturbed else 0
    n_unl = len(prep.unlabeled) if prep.unlabeled else 0
    n_unl = min(n_unl, cfg.max_unlabeled) if cfg.max_unlabeled is not None else n_unl
    return copies, round(n_unl * fraction)


def plan_budget(run: Run) -> dict:
    """Without budget_minutes: the recipe's steps ({}). With it: a short probe measures seconds per step of
    the student (and of the teacher when it is fine-tuned) and per scoring batch; when the recipe does not
    fit, every stage's steps shrink by the same factor, and below one epoch of the student the extra text
    with them. Saved in out_dir/plan.json and reused while the data and options are the same."""
    cfg, prep = run.cfg, run.prep
    if not cfg.budget_minutes:
        return {}
    key = hashlib.sha256(json.dumps({"options": to_dict(cfg) | {"out_dir": "", "device": "", "threads": None,
                                                                "progress": None},
                                     "data": prep.digests}, sort_keys=True, default=str).encode()).hexdigest()
    saved = run.out / "plan.json"
    if saved.is_file() and (old := json.loads(saved.read_text()))["key"] == key:
        log.info("budget: the plan of the earlier run (%s)", saved)
        return old["plan"]
    n_train = len(prep.tables["train"])
    copies, n_unl = _extra_counts(cfg, prep)
    n_lrs = len(cfg.teacher_lrs)  # the teacher's sweep: one run per learning rate
    teacher_each = _steps(n_train, cfg.batch_size, cfg.teacher_epochs, cfg.max_steps) if cfg.base else 0
    student = _steps(n_train + copies + n_unl, cfg.batch_size, cfg.epochs, cfg.max_steps)
    steps = {"teacher": sweep_steps(n_lrs, math.ceil(n_train / cfg.batch_size), teacher_each) if cfg.base else 0,
             "student": student, "baseline": student if cfg.baseline else 0}
    probe = _probe(run)
    n_eval = sum(len(prep.tables[s]) for s in SPLITS if s in prep.tables) * (3 if cfg.baseline else 2)
    n_b1 = cfg.n_latency * (3 if cfg.baseline else 2)
    if cfg.variants:  # four variants of the teacher and of the student on the headline split, and timed
        n_eval += len(prep.tables["test" if "test" in prep.tables else "dev"]) * 2 * len(variants.VARIANTS)
        n_b1 += cfg.n_latency * 2 * len(variants.VARIANTS)
    fixed = probe["s_per_score_batch"] * (math.ceil((n_train + copies + n_unl) / 64) + math.ceil(n_eval / 64))
    fixed += n_b1 * probe["s_per_forward_b1"] + probe["seconds"]
    train_s = (steps["teacher"] * probe["s_per_step_teacher"]
               + (steps["student"] + steps["baseline"]) * probe["s_per_step_student"])
    budget_s = cfg.budget_minutes * 60 * 0.9  # a tenth kept for loading, exporting and the unforeseen
    scale = min(1.0, max(budget_s - fixed, 0.0) / train_s) if train_s else 1.0
    extra_fraction = min(1.0, scale * cfg.epochs)  # less than one pass over the texts fits: fewer extra texts
    plan = {"budget_minutes": cfg.budget_minutes, "probe": probe, "scale": round(scale, 4),
            "extra_fraction": round(extra_fraction, 4),
            "recipe_minutes": round((fixed + train_s) / 60, 2)}
    if scale < 1.0:
        copies, n_unl = _extra_counts(cfg, prep, extra_fraction)
        n_student = n_train + copies + n_unl
        plan["student_steps"] = max(1, min(round(steps["student"] * scale),
                                           _steps(n_student, cfg.batch_size, cfg.epochs, cfg.max_steps)))
        if cfg.base:
            plan["teacher_steps"] = max(1, round(teacher_each * scale))  # each run of the sweep
    per_epoch = math.ceil(n_train / cfg.batch_size)
    chosen = {"teacher": sweep_steps(n_lrs, per_epoch, plan.get("teacher_steps", teacher_each)) if cfg.base else 0,
              "student": plan.get("student_steps", student)}
    chosen["baseline"] = chosen["student"] if cfg.baseline else 0  # the same budget: as many steps
    chosen = {k: v for k, v in chosen.items() if v}
    plan["expected_minutes"] = round((fixed + chosen.get("teacher", 0) * probe["s_per_step_teacher"]
                                      + (chosen["student"] + chosen.get("baseline", 0)) * probe["s_per_step_student"])
                                     / 60, 2)
    plan["steps"] = chosen
    if scale < 1.0:
        log.info("budget %.3g min: the recipe would take about %.1f min (probe: %.3f s per student step%s); "
                 "training %.0f%% of its steps %s, extra text at %.0f%%, about %.1f min", cfg.budget_minutes,
                 plan["recipe_minutes"], probe["s_per_step_student"],
                 f", {probe['s_per_step_teacher']:.3f} per teacher step" if cfg.base else "", 100 * scale, chosen,
                 100 * extra_fraction, plan["expected_minutes"])
    else:
        log.info("budget %.3g min: the whole recipe fits (about %.1f min: steps %s)", cfg.budget_minutes,
                 plan["recipe_minutes"], chosen)
    run.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"key": key, "plan": plan}, indent=1) + "\n")
    return plan


def _probe(run: Run, steps: int = 3) -> dict:
    """Seconds per optimizer step (forward, backward, AdamW) of the student, and of the teacher when it is
    fine-tuned here, on one batch of training texts; per scoring batch of 64; per batch-1 forward."""
    cfg, prep = run.cfg, run.prep
    t0 = time.perf_counter()
    teacher = (prep.source_model if prep.source_model.task == "classification"
               else classifier_from(prep.source, prep.id2label)).to(run.device)
    student = init_student(teacher, "classification", cfg.student_layers).to(run.device)
    ids = prep.ids["train"][: cfg.batch_size]
    x, mask = collate(ids, prep.tok.pad_id, cfg.max_length)
    x, mask = x.to(run.device), mask.to(run.device)
    y = torch.tensor(prep.labels["train"][: cfg.batch_size], device=run.device)

    def per_step(m: nn.Module) -> float:
        m = _copy_of(m).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
        times = []
        for _ in range(steps + 1):
            t = time.perf_counter()
            loss, _ = task_distillation(m(x, mask), None, y, 0.0, 1.0)
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:])  # the first step warms caches and allocators

    with torch.no_grad():
        teacher.eval()
        fwd = []
        for _ in range(2):
            t = time.perf_counter()
            teacher(x, mask)
            fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        teacher(x[:1], mask[:1])
        b1 = time.perf_counter() - t
    out = {"s_per_step_student": per_step(student),
           "s_per_step_teacher": per_step(teacher) if cfg.base else 0.0,
           "s_per_score_batch": min(fwd) * 64 / max(len(ids), 1), "s_per_forward_b1": b1}
    out = {k: round(v, 5) for k, v in out.items()}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _copy_of(m: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(m)


# -- hyperparameters fitted to the data ------------------------------------------------------------------
def fit_epochs(n_texts: int, batch_size: int, min_steps: int, bounds: tuple[int, int]) -> int:
    """Epochs for at least ``min_steps`` optimizer steps over ``n_texts``, within ``bounds``: small data
    gets more passes over it, large data the fewest."""
    per_epoch = math.ceil(n_texts / batch_size)
    return max(bounds[0], min(bounds[1], math.ceil(min_steps / per_epoch)))


def class_weights(labels: list[int], n_labels: int, mode: str) -> list[float] | None:
    """Cross-entropy weights per label id (None: plain cross-entropy). balanced: n / (K n_c), so every
    label's rows weigh as much in all; sqrt: its square root, halfway; auto: sqrt when the most frequent
    label has IMBALANCE times the rows of the rarest, else none. Scaled so the mean weight over the rows is
    1 (the learning rate means what it meant)."""
    counts = [labels.count(c) for c in range(n_labels)]
    present = [c for c in counts if c]
    if mode == "none" or (mode == "auto" and max(present) < IMBALANCE * min(present)):
        return None
    power = 1.0 if mode == "balanced" else 0.5
    raw = [(len(labels) / (len(present) * c)) ** power if c else 0.0 for c in counts]
    mean = sum(w * c for w, c in zip(raw, counts, strict=True)) / len(labels)
    return [round(w / mean, 6) for w in raw]


def fitted(cfg: CompressConfig, p: Prepared) -> dict:
    """The options left to the data (None), filled in: the teacher's and the student's epochs by the size of
    what each trains on; teacher_lr, when given, as the whole sweep."""
    out: dict = {}
    if cfg.base and cfg.teacher_epochs is None:
        out["teacher_epochs"] = fit_epochs(len(p.ids["train"]), cfg.batch_size, TEACHER_STEPS, TEACHER_EPOCHS)
    if cfg.epochs is None:
        copies, n_unl = _extra_counts(cfg, p)
        out["epochs"] = fit_epochs(len(p.ids["train"]) + copies + n_unl, cfg.batch_size, STUDENT_STEPS,
                                   STUDENT_EPOCHS)
    if cfg.teacher_lr is not None:
        out["teacher_lrs"] = [cfg.teacher_lr]
    return out


def selection_score(metrics: dict) -> float:
    """What dev evaluations are ranked by: accuracy plus macro-F1 (a model that drops a rare label loses
    on the second even where the first hardly moves)."""
    return metrics["accuracy"] + metrics["macro_f1"]


def pick_best(evals: list[dict]) -> dict:
    """The evaluation with the best selection_score; a tie goes to the earliest (the cheaper run)."""
    return max(evals, key=selection_score)  # max keeps the first of equals


def eval_points(total_steps: int, per_epoch: int) -> list[int]:
    """The optimizer steps a Trainer with eval_every=per_epoch evaluates at: each epoch's end, and the end."""
    points = list(range(per_epoch, total_steps + 1, per_epoch))
    return points if points and points[-1] == total_steps else [*points, total_steps]


class Selector:
    """The dev evaluation a Trainer runs after every epoch: each result is recorded (selection.json) and the
    best-scoring model so far is kept, exported in ``best_dir`` (early stopping that trains on: the later
    epochs' models are not kept). ``points``: the steps the Trainer evaluates at, in order. Under torchrun
    the Trainer evaluates on rank 0 alone, on the whole dev split: rank 0 decides, ``summary`` tells all."""

    def __init__(self, run: Run, best_dir: Path, export_cfg, pooling_from: str, types_too: bool,
                 points: list[int], per_epoch: int) -> None:
        self.evaluate, self.tok, self.ranks = run.dev_eval(types_too), run.prep.tok, run.ranks
        self.best_dir, self.cfg, self.pooling_from = best_dir, export_cfg, pooling_from
        self.points, self.per_epoch = points, per_epoch
        self.record = best_dir.parent / "selection.json"
        self.history: list[dict] = []
        ck = best_dir.parent / "checkpoint.pt"
        if export_cfg.train.resume and ck.is_file() and self.record.is_file():
            # a resumed run: the evaluations up to its checkpoint stand, later ones are made again
            step = torch.load(ck, map_location="cpu", weights_only=True, mmap=True)["state"]["step"]
            self.history = [h for h in json.loads(self.record.read_text())["history"] if h["step"] <= step]

    def __call__(self, clf: nn.Module) -> dict[str, float]:
        last = self.history[-1]["step"] if self.history else 0
        upcoming = [p for p in self.points if p > last]
        if not upcoming:  # the Trainer's closing evaluation, at the step of the last epoch's
            return {k: self.history[-1][k] for k in ("accuracy", "macro_f1")}
        res = self.evaluate(clf)
        entry = {"step": upcoming[0], "epoch": round(upcoming[0] / self.per_epoch, 2), **res}
        if not self.history or selection_score(entry) > selection_score(pick_best(self.history)):
            tmp = self.best_dir.with_name(self.best_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            export(clf, tmp, self.tok, self.cfg, pooling_from=self.pooling_from)
            shutil.rmtree(self.best_dir, ignore_errors=True)
            tmp.rename(self.best_dir)
        self.history.append(entry)
        self.record.write_text(json.dumps({"history": self.history}, indent=1) + "\n")
        return res

    def summary(self) -> dict:
        """The kept evaluation and every one, on every rank (rank 0's: the one that evaluated)."""
        return self.ranks.on_rank0(lambda: {"kept": pick_best(self.history), "evaluated": self.history,
                                            "steps": self.points[-1]})


# -- the training stages -----------------------------------------------------------------------------
def _train_teacher(run: Run) -> dict:
    """base= : the encoder with a new head, fine-tuned on the training labels (training.finetune's loop) at
    each learning rate of the sweep, by successive halving: every rate trains its first epoch (of the same
    schedule), is evaluated on dev, and the best one alone trains on to the end, evaluated after every epoch;
    the best (learning rate, epoch) on dev is the teacher. Cross-entropy weighted by label when the labels
    are unbalanced (class_weight)."""
    cfg, p = run.cfg, run.prep
    lrs = list(cfg.teacher_lrs)
    weights = class_weights(p.labels["train"], len(p.id2label), cfg.class_weight)
    per_epoch = math.ceil(len(p.ids["train"]) / cfg.batch_size)
    total = run.plan.get("teacher_steps") or _steps(len(p.ids["train"]), cfg.batch_size, cfg.teacher_epochs,
                                                    cfg.max_steps)
    first = min(per_epoch, total) if len(lrs) > 1 else total  # the steps every rate trains
    log.info("teacher: fine-tuning %s on %d texts: learning rates %s for %d steps each, the best on dev on to "
             "%d steps (%d epochs), its best epoch on dev kept; class weights %s -> %s", p.source,
             len(p.tables["train"]), lrs, first, total, cfg.teacher_epochs, weights, run.out / "teacher")

    def train(lr: float, stop_at: int | None, resume: bool) -> dict:
        name = f"teacher/lr{lr:g}"
        seed_all(cfg.seed)
        clf = classifier_from(p.source, p.id2label)
        fcfg = FinetuneConfig(model=str(p.source), train_file=cfg.train_file, dev_file=cfg.dev_file,
                              text_column=cfg.text_column, label_column=cfg.label_column,
                              labels=[p.id2label[i] for i in range(len(p.id2label))], max_length=cfg.max_length,
                              class_weights=weights,
                              train=replace(run.train_config(name, cfg.teacher_epochs, lr, total, per_epoch),
                                            stop_at=stop_at, **({"resume": True} if resume else {})))
        selector = Selector(run, run.out / "work" / name / "best", fcfg, str(p.source), True,
                            eval_points(total, per_epoch), per_epoch)
        train_classifier(fcfg, clf, p.tok, p.ids["train"], p.labels["train"], None, str(p.source), selector,
                         token_types=p.types["train"] if has_types(clf) else None, loss=finetune_loss(fcfg))
        return {"lr": lr, **selector.summary()}

    def once(lr: float, what: str, stop_at: int | None, resume: bool) -> dict:
        """A round of one rate, its record kept (a stopped command does not train it again)."""
        record = run.out / "work" / f"teacher/lr{lr:g}" / f"{what}.json"
        done = run.ranks.on_rank0(lambda: json.loads(record.read_text()) if record.is_file() else None)
        if done is not None:
            return done
        result = train(lr, stop_at, resume)  # the same on every rank: the Selector's summary is rank 0's
        if run.ranks.rank == 0:
            record.write_text(json.dumps(result, indent=1) + "\n")
        log.info("teacher lr %g (%s): dev %s at epoch %g", lr, what, _scores(result["kept"]), result["kept"]["epoch"])
        return result

    paused = first < total
    candidates = {lr: once(lr, "first" if paused else "done", first if paused else None, False) for lr in lrs}
    if paused:
        survivor = pick_best([c["kept"] | {"lr": c["lr"]} for c in candidates.values()])["lr"]
        log.info("teacher: lr %g trains on (the best after %d steps)", survivor, first)
        candidates[survivor] = once(survivor, "done", None, True)
    chosen = pick_best([c["kept"] | {"lr": c["lr"]} for c in candidates.values()])
    log.info("teacher: lr %g, epoch %g kept (dev %s)", chosen["lr"], chosen["epoch"], _scores(chosen))
    run.publish("teacher", f"lr{chosen['lr']:g}/best")
    return {"selection": {"lr": chosen["lr"], "epoch": chosen["epoch"], "step": chosen["step"],
                          "dev": {k: chosen[k] for k in ("accuracy", "macro_f1")}, "class_weights": weights,
                          "candidates": list(candidates.values()), "steps_each": first, "steps_kept_run": total}}


def _scores(m: dict) -> str:
    return f"accuracy {100 * m['accuracy']:.1f}%, macro-F1 {m['macro_f1']:.3f}"


def _task_config(run: Run, teacher_dir: Path, name: str, steps: int, per_epoch: int, **recipe) -> TaskDistillConfig:
    cfg = run.cfg
    return TaskDistillConfig(teacher=str(teacher_dir), student_layers=cfg.student_layers, train_file=cfg.train_file,
                             dev_file=cfg.dev_file, text_column=cfg.text_column,
                             label_column=cfg.label_column, max_length=cfg.max_length, temperature=cfg.temperature,
                             train=run.train_config(name, cfg.epochs, cfg.lr, steps, per_epoch), **recipe)


def _load_teacher(run: Run, teacher_dir: Path) -> nn.Module:
    teacher = model.load(teacher_dir).to(run.device)
    if teacher.task != "classification":
        raise ValueError(f"{teacher_dir}: not a classifier")
    return teacher


def _train_student(run: Run, teacher_dir: Path) -> dict:
    """The recipe: soft targets on the training texts and the extra text, pooled cosine toward the teacher;
    evaluated on dev after every epoch, the best epoch kept."""
    cfg, p = run.cfg, run.prep
    seed_all(cfg.seed)
    teacher = _load_teacher(run, teacher_dir)
    student = init_student(teacher, "classification", cfg.student_layers)
    train = p.tables["train"]
    fraction = run.plan.get("extra_fraction", 1.0)
    copies, n_unl = _extra_counts(cfg, p, fraction)
    a, b = perturbed_copies(train.texts, copies / len(train), cfg.seed, train.pairs) if copies else ([], None)
    extra = Table("perturbed copies", a, b, None)
    if p.unlabeled and n_unl:
        u = p.unlabeled.rows(list(range(n_unl)))
        extra = Table("extra text", extra.texts + u.texts,
                      (extra.pairs or []) + u.pairs if u.pairs is not None else None, None)
    extra_ids, extra_types = encode(p.tok, extra) if len(extra) else ([], [] if train.pairs is not None else None)
    seqs = p.ids["train"] + extra_ids
    labels = p.labels["train"] + [-100] * len(extra_ids)  # no label: the teacher's soft targets alone
    types = p.types["train"] + extra_types if train.pairs is not None else None
    per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = run.plan.get("student_steps") or _steps(len(seqs), cfg.batch_size, cfg.epochs, cfg.max_steps)
    log.info("student: %d layers of the teacher's %d (one in two), on %d labeled texts + %d perturbed copies + "
             "%d unlabeled texts scored by the teacher; alpha %g, T %g, alpha_embed %g; %d epochs (%d steps), lr %g, "
             "the best epoch on dev kept -> %s", student.config.num_layers, teacher.config.num_layers,
             len(p.ids["train"]), len(a), n_unl, cfg.alpha, cfg.temperature, cfg.alpha_embed, cfg.epochs, total,
             cfg.lr, run.out / "student")
    log.info("student: the teacher scores %d texts", len(seqs))
    fn = logits_and_pooled_of if cfg.alpha_embed > 0 else logits_of
    both = score(teacher, seqs, p.tok.pad_id, cfg.max_length, fn,
                 token_types=types if has_types(teacher) else None)
    n_labels = len(p.id2label)
    tcfg = _task_config(run, teacher_dir, "student", total, per_epoch, alpha=cfg.alpha, alpha_embed=cfg.alpha_embed,
                        embed_reference=str(teacher_dir) if cfg.alpha_embed > 0 else None,
                        unlabeled_file=cfg.unlabeled_file, max_unlabeled=n_unl if cfg.unlabeled_file else None)
    del teacher
    selector = Selector(run, run.out / "work" / "student" / "best", tcfg, str(teacher_dir), False,
                        eval_points(total, per_epoch), per_epoch)
    train_classifier(tcfg, student, p.tok, seqs, labels, both[:, :n_labels], str(teacher_dir), selector,
                     both[:, n_labels:] if cfg.alpha_embed > 0 else None, loss=distill_loss(tcfg))
    run.publish("student")
    return {"extra": {"perturbed_copies": len(a), "unlabeled": n_unl}, "steps": total,
            "selection": selector.summary() | {"lr": cfg.lr}}


def _train_baseline(run: Run, teacher_dir: Path, steps: int) -> dict:
    """The same student initialisation on the labels alone (``experiments.pipeline.baseline_of``), with the
    student's budget: as many optimizer steps (more passes over the fewer texts), the same learning rate, the
    teacher's class weights, its best epoch on dev kept."""
    cfg, p = run.cfg, run.prep
    seed_all(cfg.seed)
    teacher = _load_teacher(run, teacher_dir)
    student = init_student(teacher, "classification", cfg.student_layers)
    del teacher
    weights = class_weights(p.labels["train"], len(p.id2label), cfg.class_weight)
    per_epoch = math.ceil(len(p.ids["train"]) / cfg.batch_size)
    log.info("baseline: the same %d-layer student on the %d labeled texts alone (no teacher signal), the "
             "student's %d optimizer steps, class weights %s -> %s", student.config.num_layers, len(p.ids["train"]),
             steps, weights, run.out / "baseline")
    tcfg = _task_config(run, teacher_dir, "baseline", steps, per_epoch, alpha=0.0, alpha_embed=0.0,
                        unlabeled_file=None, class_weights=weights)
    selector = Selector(run, run.out / "work" / "baseline" / "best", tcfg, str(teacher_dir), False,
                        eval_points(steps, per_epoch), per_epoch)
    train_classifier(tcfg, student, p.tok, p.ids["train"], p.labels["train"], None, str(teacher_dir), selector,
                     loss=distill_loss(tcfg))
    run.publish("baseline")
    return {"steps": steps, "selection": selector.summary() | {"lr": cfg.lr}}


# -- evaluation --------------------------------------------------------------------------------------
def label_metrics(pred: list[int], gold: list[int], id2label: dict[int, str]) -> dict:
    """Accuracy, macro F1 over the labels in the gold or predicted labels, and per-label F1/support."""
    labels = sorted(set(gold) | set(pred))
    per_label = {}
    for c in labels:
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(pred, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(pred, gold, strict=True))
        per_label[id2label[c]] = {"f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                                  "support": sum(g == c for g in gold), "predicted": tp + fp}
    return {"accuracy": sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold),
            "macro_f1": statistics.mean(v["f1"] for v in per_label.values()), "per_label": per_label,
            "n": len(gold)}


def evaluate(run: Run, dirs: dict[str, Path]) -> dict:
    """Per split and model: metrics, agreement with the teacher and retention; batch-1 CPU latency."""
    cfg, p = run.cfg, run.prep
    log.info("evaluate: %s on %s", sorted(dirs), [s for s in SPLITS if s in p.tables])
    models = {n: model.load(d).to(run.device) for n, d in dirs.items()}
    splits: dict[str, dict] = {}
    for split in SPLITS:
        if split not in p.tables:
            continue
        preds = {n: score(m, p.ids[split], p.tok.pad_id, cfg.max_length,
                          token_types=p.types[split] if has_types(m) else None).argmax(-1).tolist()
                 for n, m in models.items()}
        res = {}
        for n, pred in preds.items():
            r = label_metrics(pred, p.labels[split], p.id2label)
            if n != "teacher":
                r["teacher_agreement"] = sum(a == b for a, b in zip(pred, preds["teacher"], strict=True)) / len(pred)
                r["retention"] = r["accuracy"] / max(res["teacher"]["accuracy"], 1e-12)
            res[n] = r
        splits[split] = res
    texts = list(range(min(cfg.n_latency, len(p.ids["dev"]))))
    latency = latency_b1(dirs, [p.ids["dev"][i] for i in texts],
                         [p.types["dev"][i] for i in texts] if p.types["dev"] is not None else None, cfg.max_length)
    info = {}
    for n, m in models.items():
        info[n] = {"parameters": sum(t.numel() for t in m.parameters()), "layers": m.config.num_layers,
                   "family": m.config.family, "latency_ms_b1": latency[n],
                   "speedup_b1": latency["teacher"] / latency[n], "path": str(dirs[n])}
    return {"splits": splits, "models": info, "latency_texts": len(texts)}


@torch.no_grad()
def latency_b1(dirs: dict[str, Path], ids: list[list[int]], types: list[list[int]] | None,
               max_length: int) -> dict[str, float]:
    """Median forward ms at batch 1 on one CPU thread, tokenization excluded; the models take turns on
    each input, so background load falls on all of them alike (make models times its five models with it)."""
    models = {n: model.load(d) for n, d in dirs.items()}
    pad = model.Tokenizer.from_dir(next(iter(dirs.values()))).pad_id

    def forward(m: nn.Module, x, mask, t) -> None:
        m.logits(m.encoder(x, mask, t)) if t is not None and has_types(m) else m(x, mask)

    return variants.time_b1({n: (lambda b, m=m: forward(m, *b)) for n, m in models.items()},
                            variants.batches_b1(ids, types, pad, max_length))


def measure_variants(run: Run, dirs: dict[str, Path]) -> dict:
    """The teacher's and the student's variants (training/variants.py) on the headline split, whole: accuracy,
    macro-F1, agreement with the model's own fp32 predictions and the largest logit difference to them;
    batch-1 latency on one CPU thread on evaluate's dev texts, a model's variants taking turns. Chosen per
    model: the fastest within the budget."""
    cfg, p = run.cfg, run.prep
    split = "test" if "test" in p.tables else "dev"
    n_lat = min(cfg.n_latency, len(p.ids["dev"]))
    lat_types = p.types["dev"][:n_lat] if p.types["dev"] is not None else None
    out: dict = {"split": split, "n": len(p.ids[split]), "budget": {"max_accuracy_loss": variants.MAX_ACCURACY_LOSS},
                 "reference": variants.REFERENCE, "latency_texts": n_lat,
                 "latency": f"median of {n_lat} dev texts, one CPU thread", "models": {}, "skipped": {}, "chosen": {}}
    for n in ("teacher", "student"):
        t0 = time.perf_counter()
        types_too = p.types[split] is not None and has_types(model.load(dirs[n]))
        log.info("variants: %s: %s on the %d %s rows (ONNX exports cached in %s)", n,
                 ", ".join(variants.name(*bp) for bp in variants.VARIANTS), len(p.ids[split]), split, dirs[n] / "onnx")
        found, skipped = variants.load(dirs[n], types_too)
        for v, why in skipped.items():
            log.info("variants: %s %s not measured: %s", n, v, why)
        types = p.types[split] if types_too else None
        logits = {v.name: variants.logits(v.forward(threads=torch.get_num_threads()), p.ids[split], types,
                                          p.tok.pad_id, cfg.max_length) for v in found}
        latency = variants.latency_b1(found, p.ids["dev"][:n_lat], lat_types if types_too else None, p.tok.pad_id,
                                      cfg.max_length)
        ref = logits[variants.REFERENCE]
        rows: dict[str, dict] = {}
        for v in found:  # the reference first
            pred = logits[v.name].argmax(-1)
            m = label_metrics(pred.tolist(), p.labels[split], p.id2label)
            r = rows[v.name] = {
                "backend": v.backend, "precision": v.precision, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "agreement_with_fp32": (pred == ref.argmax(-1)).float().mean().item(),
                "max_abs_logit_diff": (logits[v.name] - ref).abs().max().item(),
                "latency_ms_b1": latency[v.name], "speedup_b1": latency[variants.REFERENCE] / latency[v.name]}
            fp32 = rows[variants.REFERENCE]
            r["within_budget"] = variants.within_budget(r["accuracy"], fp32["accuracy"])
            if v.export is not None:
                r |= {"export": str(v.export.path), "sha256": v.sha256}
            log.info("variants: %s %s: %s accuracy %.1f%% (fp32 %.1f%%), agreement with fp32 %.1f%%, batch-1 "
                     "%.2f ms (fp32 %.2f ms)%s", n, v.name, split, 100 * r["accuracy"], 100 * fp32["accuracy"],
                     100 * r["agreement_with_fp32"], r["latency_ms_b1"], fp32["latency_ms_b1"],
                     "" if r["within_budget"] else ", over the budget")
        out["models"][n], out["skipped"][n] = rows, skipped
        out["chosen"][n] = variants.choose(rows)
        log.info("variants: %s serves %s, the fastest within %.1f point of its fp32's accuracy (%.0f s)", n,
                 out["chosen"][n], 100 * variants.MAX_ACCURACY_LOSS, time.perf_counter() - t0)
    return out


# -- the report ----------------------------------------------------------------------------------------
def warnings_of(results: dict, id2label: dict[int, str]) -> list[str]:
    """A model that never predicts a label its split has: the report says so (the mean hides it)."""
    out = []
    for split, res in results["splits"].items():
        for n, r in res.items():
            never = [lab for lab, v in r["per_label"].items() if v["support"] and not v["predicted"]]
            if never:
                out.append(f"{n} never predicts {never} on {split}, though {split} has "
                           f"{sum(r['per_label'][lab]['support'] for lab in never)} such rows")
    return out


def write_report(run: Run, dirs: dict[str, Path], results: dict, extra: dict, selection: dict,
                 wall_s: float, served: dict | None = None) -> dict:
    cfg, p = run.cfg, run.prep
    headline = "test" if "test" in results["splits"] else "dev"
    s = results["splits"][headline]["student"]
    speed = results["models"]["student"]["speedup_b1"]
    summary = (f"the student keeps {100 * s['retention']:.1f}% of the teacher's {headline} accuracy "
               f"({100 * s['accuracy']:.1f}% vs {100 * results['splits'][headline]['teacher']['accuracy']:.1f}%), "
               f"agrees with it on {100 * s['teacher_agreement']:.1f}% of {headline}, and runs "
               f"{speed:.2f}x its batch-1 CPU speed")
    warnings = warnings_of(results, p.id2label)
    for w in warnings:
        log.warning("%s", w)
    recipe = {k: getattr(cfg, k) for k in ("alpha", "temperature", "perturbed", "alpha_embed", "epochs", "lr",
                                            "batch_size", "warmup_fraction", "teacher_epochs", "teacher_lrs",
                                            "class_weight", "max_length", "max_steps", "seed")}
    recipe["student_layers"] = results["models"]["student"]["layers"]
    if "teacher" in selection:
        recipe["teacher_lr"] = selection["teacher"]["lr"]  # the sweep's choice
    report = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": run.command or command_line(cfg),
        "summary": summary,
        "teacher": str(dirs["teacher"]), "fine_tuned_teacher": bool(cfg.base),
        "labels": {str(k): v for k, v in p.id2label.items()},
        "data": {"files": {o: {"path": getattr(cfg, o), "sha256": d} for o, d in p.digests.items()},
                 "rows": {s_: len(t) for s_, t in p.tables.items()},
                 "dev_split": "cut off train_file: sha1(text) mod 10 == 0" if p.dev_from_train else "dev_file",
                 "cut_by_max_length": p.cut, "extra_text": extra, "sentence_pairs": bool(cfg.text_pair_column)},
        "recipe": recipe | {"source": "experiments.pipeline.Recipe (make models); epochs, the teacher's learning "
                                      "rate and class weights fitted to this data (docs/compress.md)"},
        "selection": selection,
        "budget": run.plan or {"budget_minutes": None, "note": "the recipe's epochs in full"},
        "models": results["models"],
        "splits": results["splits"],
        "warnings": warnings,
        "stages": run.stages,
        "wall_time_s": wall_s,
        "device": str(run.device),
        # torchrun: the processes that trained (DDP), each on its share of every batch_size batch
        "distributed": {"world_size": run.ranks.world, "ddp": run.ranks.world > 1, "backend": run.ranks.backend,
                        "batch_per_process": cfg.batch_size // run.ranks.world},
        "latency": f"median of {results['latency_texts']} dev texts, batch 1, one CPU thread, tokenization excluded",
        "variants": served,  # None: variants=false
    }
    out = run.out
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot(report, out / PLOT)
    (out / "serve.json").write_text(json.dumps(serve_config(dirs, cfg.max_length, served), indent=2) + "\n")
    (out / "student" / "README.md").write_text(model_card(report))
    return report


def serve_config(dirs: dict[str, Path], max_length: int, served: dict | None = None) -> dict:
    """What ``python -m app --config out_dir/serve.json`` serves: teacher and student side by side
    (``POST /compare``), the baseline beside them. With the variants measured, the teacher and the student
    each as its chosen variant (backend, precision, an ONNX export's SHA-256), on the CPU they were chosen on
    when one of them is not torch fp32 (int8 runs on the CPU only)."""
    roles = {"student": "student", "teacher": "teacher", "baseline": "other"}
    models = [{"name": n, "path": str(Path(d).resolve()), "role": roles[n], "task": "classify",
               "max_length": max_length} for n, d in sorted(dirs.items(), key=lambda kv: kv[0] != "student")]
    chosen = (served or {}).get("chosen", {})
    for entry in models:
        if entry["name"] in chosen:
            entry |= variants.serve_entry(*chosen[entry["name"]].split(), Path(entry["path"]))
    return ({"device": "cpu"} if any(c != variants.REFERENCE for c in chosen.values()) else {}) | {"models": models}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(r: dict) -> str:
    summary = r["summary"][:1].upper() + r["summary"][1:]
    lines = [f"# compress report ({r['created']})", "", f"`{r['command']}`", "", f"**{summary}.**", ""]
    for split, res in r["splits"].items():
        lines += [f"## {split} ({next(iter(res.values()))['n']} rows)", "",
                  "| model | accuracy | macro-F1 | agreement with teacher | retention | batch-1 CPU ms | speed-up | "
                  "parameters |", "|---|---|---|---|---|---|---|---|"]
        for n, m in res.items():
            info = r["models"][n]
            lines.append(f"| {n} | {_pct(m['accuracy'])} | {m['macro_f1']:.3f} | "
                         f"{_pct(m['teacher_agreement']) if 'teacher_agreement' in m else '-'} | "
                         f"{_pct(m['retention']) if 'retention' in m else '-'} | {info['latency_ms_b1']:.2f} | "
                         f"{info['speedup_b1']:.2f}x | {info['parameters']:,} |")
        labels = list(next(iter(res.values()))["per_label"])
        lines += ["", "Per-label F1 (support):", "", "| model | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for n, m in res.items():
            lines.append(f"| {n} | " + " | ".join(
                f"{m['per_label'][lab]['f1']:.3f} ({m['per_label'][lab]['support']})" if lab in m["per_label"]
                else "-" for lab in labels) + " |")
        lines.append("")
    if r.get("variants"):
        lines += variants.markdown(r["variants"])
    if r["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in r["warnings"]], ""]
    d = r["data"]
    lines += ["## Data", "", f"- rows: {d['rows']}; dev split: {d['dev_split']}",
              f"- extra text scored by the teacher: {d['extra_text']}",
              f"- cut by max_length: {d['cut_by_max_length']}"]
    lines += [f"- {o}: `{f['path']}` (sha256 {f['sha256'][:12]})" for o, f in d["files"].items()]
    dist_ = r.get("distributed") or {}
    ddp = f", {dist_['world_size']} processes (DDP, {dist_['backend']})" if dist_.get("ddp") else ""
    lines += ["", *selection_markdown(r.get("selection", {})), "## Recipe and budget", "", f"- recipe: {r['recipe']}",
              f"- budget: {r['budget']}",
              f"- stages: {r['stages']}", f"- wall time of this run: {r['wall_time_s']} s on {r['device']}{ddp}",
              f"- latency: {r['latency']}", "", f"![accuracy vs latency]({PLOT})", ""]
    return "\n".join(lines)


def selection_markdown(sel: dict) -> list[str]:
    """What each training stage chose on dev: the teacher's learning rate and epoch, the students' epoch."""
    if not sel:
        return []
    lines = ["## Chosen on dev", "", "Each run is evaluated on dev after every epoch and keeps its best epoch "
             "(accuracy + macro-F1); the teacher is the best of its learning-rate sweep.", "",
             "| run | learning rate | epochs trained | epoch kept | dev accuracy | dev macro-F1 | class weights |",
             "|---|---|---|---|---|---|---|"]
    t = sel.get("teacher")
    if t:
        for c in t["candidates"]:
            k = c["kept"]
            lines.append(f"| teacher{' (kept)' if c['lr'] == t['lr'] else ''} | {c['lr']:g} | "
                         f"{c['evaluated'][-1]['epoch']:g} | {k['epoch']:g} | {_pct(k['accuracy'])} | "
                         f"{k['macro_f1']:.3f} | {t['class_weights'] or '-'} |")
    for n in ("student", "baseline"):
        if n in sel:
            k = sel[n]["kept"]
            lines.append(f"| {n} ({sel[n]['steps']} steps) | {sel[n]['lr']:g} | {sel[n]['evaluated'][-1]['epoch']:g} | "
                         f"{k['epoch']:g} | {_pct(k['accuracy'])} | {k['macro_f1']:.3f} | - |")
    return [*lines, ""]


def model_card(r: dict) -> str:
    """out_dir/student/README.md: what the student was distilled from, on what, how well it kept the teacher."""
    return "\n".join([
        "# Distilled student classifier", "",
        f"Distilled from `{r['teacher']}` by `{r['command']}` ({r['created']}).", "",
        f"{r['summary'][:1].upper() + r['summary'][1:]}.", "",
        f"Labels: {r['labels']}. Data: {r['data']['rows']} rows; "
        + ", ".join(f"{o} sha256 {f['sha256'][:12]}" for o, f in r["data"]["files"].items()) + ".", "",
        f"Recipe: {r['recipe']}.", "", "The full report: `../report.md`.", ""])


def plot(r: dict, path: Path) -> None:
    """Accuracy against batch-1 CPU latency, one point per model (skipped without matplotlib)."""
    plt = pyplot(path)
    if plt is None:
        return
    split = "test" if "test" in r["splits"] else "dev"
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, (n, m) in enumerate(r["splits"][split].items()):
        x, y = r["models"][n]["latency_ms_b1"], 100 * m["accuracy"]
        ax.scatter([x], [y])
        ax.annotate(f"{n} ({r['models'][n]['layers']} layers)", (x, y), textcoords="offset points",
                    xytext=(5, 5 - 12 * i))  # stacked: a student and its baseline often sit on one point
    ax.set_xlabel("batch-1 CPU latency (ms, one thread)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
