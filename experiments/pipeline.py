"""``make models``: the default teacher and student, built from real weights and data.

  data         movie-review snippets (train/dev/test by id), out-of-domain tweets and NYT editorial
               snippets (dev/test halves by id, never trained on), news for embeddings
  classifiers  ``python -m training compress`` (training/compress.py, the recipe users run on their own
               data) with base= all-MiniLM-L6-v2 on the movie-review train split, the dev splits of every
               domain as its dev_file, 2,000 news sentences as its unlabeled_file: it fine-tunes the
               teacher, distils the 3-layer student and trains the labels-only baseline
                                                                    -> artifacts/{teacher,student,baseline}
  embedder     ``python -m training compress task=embed`` toward all-MiniLM-L6-v2 on news sentences
                                                                    -> artifacts/student_embedder
               the teacher's embedder is all-MiniLM-L6-v2 itself    -> artifacts/teacher_embedder
  evaluate     test accuracy per domain and retention, CPU latency, embedding agreement -> artifacts/results.json
  serve        the models and the task each serves                  -> artifacts/serve.json

What is specific to the study stays here: the data, the out-of-domain sets, the embedder's corpus, the
evaluation per domain. ``make ablation`` and ``make candidates`` still train recipe by recipe with the
library's commands (``Recipe``, ``train_teacher``, ``train_student`` below): they vary what compress fixes.
Test splits are read by ``evaluate`` only. Seeded and reproducible; a log in artifacts/pipeline.log and
compress's own in artifacts/work/compress/compress.log.

    python -m experiments.pipeline [--out artifacts] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

import model
from lab.assets import fetch
from lab.datasets import LABELS, cut_sentences, load_news, load_ood, load_sentiment, write_atomic, write_splits
from lab.environment import cpu_model
from training.augment import perturb
from training.compress import latency_b1 as compress_latency_b1
from training.compress import run_compress
from training.compress_embed import EmbedCompressConfig, agreement, run_compress_embed, sentence_embeddings
from training.config import CompressConfig, DistillConfig, FinetuneConfig, TaskDistillConfig, to_dict
from training.data import read_labeled
from training.distill import run_distill
from training.distill_task import run_distill_task
from training.finetune import run_finetune
from training.paper import TEMPERATURE
from training.scoring import classification_metrics, score
from training.trainer import TrainConfig

log = logging.getLogger("experiments.pipeline")
Rows = list[tuple[str, int]]
Files = dict[str, Path]
IN_DOMAIN = "movies"


@dataclass(frozen=True)
class Recipe:
    """How a student classifier is made: what the ablation varies. The defaults are the recipe
    ``make models`` uses, picked on dev splits (``ablation.choose``: docs/ablation.md, and for the rows it
    cannot tell apart, docs/candidates.json at the full budget): task KD on the teacher's soft targets alone
    (alpha 1), every weight trainable,
    plus unlabeled news and perturbed copies of a seeded half of the training texts, both scored by the teacher, plus a
    pooled-cosine loss toward the fine-tuned teacher's own sentence representation. The 4-layer row scores
    higher but misses the 1.8x speed target."""

    general_distillation: bool = False  # start from a student generally distilled on news
    augment: bool = True  # + unlabeled news sentences scored by the teacher (KD only)
    perturbed: float = 0.5  # + this many perturbed copies per training text (training.augment), scored by the teacher
    freeze_embeddings: bool = False
    alpha_embed: float = 1.0  # pooled cosine toward embed_toward's mean-pooled last layer
    # "teacher": match the fine-tuned teacher's own (a 384-wide target per text besides its two logits);
    # "minilm": preserve the original all-MiniLM-L6-v2's sentence embeddings
    embed_toward: str = "teacher"
    # per-token hidden states: each student layer toward the teacher layer it was copied from (1 - cos)
    alpha_hidden: float = 0.0
    alpha: float = 1.0  # weight of the teacher's soft targets against the labels; 0: labels only (the baseline)
    temperature: float = TEMPERATURE
    layers: int = 3  # of all-MiniLM-L6-v2's 6


def baseline_of(recipe: Recipe) -> Recipe:
    """The label-only baseline at ``recipe``'s size and initialisation: every teacher signal off (soft
    targets, the unlabeled text only they supervise, and the representation loss toward the teacher)."""
    return replace(recipe, alpha=0.0, augment=False, perturbed=0.0, alpha_embed=0.0, alpha_hidden=0.0)


BASELINE = baseline_of(Recipe())


def _task_train(**kw) -> TrainConfig:
    """The task stages' optimiser: the library's fine-tuning defaults, with this experiment's budget."""
    return replace(FinetuneConfig().train, **{"batch_size": 32, "warmup_fraction": 0.06, "save_every": 0,
                                              "log_every": 10, **kw})


@dataclass
class PipelineConfig:
    out: str = "artifacts"
    seed: int = 42
    threads: int | None = None  # torch threads per worker process (the stages that run alone use every core)
    workers: int = 1  # 2 or more: the embedder trains in a process of its own beside the classifiers
    # The classifier stages: the compress command with its defaults (the recipe, Recipe's: alpha 1, perturbed
    # copies of half the texts, the representation loss toward the teacher, the best epoch on dev kept) and
    # make models' budget: the 2-epoch teacher at lr 1e-4 the study has used since the ablation (a sweep
    # would cost 30 minutes' worth of three teachers), short snippets cut at 64 tokens, 3 student layers.
    # variants=False: make models measures the served variants itself, on every domain and the embedders too
    # (experiments/variants.py, the last step), with the same budget.
    classifiers: CompressConfig = field(default_factory=lambda: CompressConfig(
        max_length=64, student_layers=3, teacher_lr=1e-4, teacher_epochs=2, epochs=3, baseline=True,
        n_latency=100, variants=False, progress=False))
    # The ablation's and make candidates' per-stage commands (Recipe by Recipe); paths and output folders
    # are filled in per run.
    # Two epochs: on the dev splits the 1-epoch teacher was no better in-domain than the label-only
    # baseline (83.9% against 84.0%), so no student that follows it closely could beat that baseline;
    # and its students kept less of it out of domain unless the labels were dropped (alpha 1).
    teacher: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        labels=list(LABELS.values()), max_length=64, train=_task_train(epochs=2, lr=1e-4)))
    # Three epochs, the reference budget. The same step budget spent as two epochs with 8,000
    # unlabeled sentences scored lower on the dev splits and was not adopted (measured with an earlier
    # recipe: alpha 0.5 and a 1-epoch teacher).
    student: TaskDistillConfig = field(default_factory=lambda: TaskDistillConfig(
        max_length=64, train=_task_train(epochs=3, lr=1e-4)))
    general: DistillConfig = field(default_factory=lambda: DistillConfig(
        max_length=64, loss=replace(DistillConfig().loss, ce=0.0, mlm=0.0, cos=1.0, pooled_cos=2.0),
        freeze_embeddings=True,
        train=TrainConfig(max_steps=100, batch_size=32, lr=1e-3, warmup_fraction=0.06, save_every=0,
                          log_every=10)))
    # The student embedder: `python -m training compress task=embed` with its defaults, the recipe chosen on
    # dev news sentences (training/compress_embed.py: five of the teacher's six layers, layer 1 left out,
    # hidden states layer by layer and the pooled embedding, frozen word embeddings, no dropout, 900 steps,
    # bf16 where native), on news sentences, measured on the held-out articles' sentences.
    embedder: EmbedCompressConfig = field(default_factory=lambda: EmbedCompressConfig(progress=False))
    unlabeled: int = 2000  # news sentences for the augmented recipes
    embedder_sentences: int = 60000  # news sentences the embedder distils on
    n_latency: int = 200
    n_embed: int = 1000
    limit: int | None = None  # quick mode: this many training examples


def quick(cfg: PipelineConfig) -> PipelineConfig:
    """A few hundred examples and a few steps per stage (tests)."""
    short = {"epochs": 1, "batch_size": 16}
    return replace(
        cfg, limit=200, unlabeled=64, embedder_sentences=200, n_latency=5, n_embed=40,
        classifiers=replace(cfg.classifiers, teacher_epochs=1, epochs=1, batch_size=16, n_latency=5),
        teacher=replace(cfg.teacher, train=replace(cfg.teacher.train, **short)),
        student=replace(cfg.student, train=replace(cfg.student.train, **short)),
        general=replace(cfg.general, train=replace(cfg.general.train, max_steps=4, batch_size=8)),
        embedder=replace(cfg.embedder, steps=4, batch_size=8, n_latency=5))


# -- data -------------------------------------------------------------------------------------------
@dataclass
class Data:
    """Labeled rows per domain: ``train`` (movie reviews only), ``dev`` and ``test`` per domain
    (the in-domain movie reviews first, then the out-of-domain sets), and news text."""

    files: Files  # train/dev TSVs for the training commands, news text files
    dev: Mapping[str, Rows]
    test: Mapping[str, Rows]
    news_heldout: list[str]
    counts: dict[str, int]


def load_data(cfg: PipelineConfig, work: Path) -> Data:
    sentiment = load_sentiment(fetch("sentiment"))
    ood = load_ood(fetch("sentiment_ood"))
    news = load_news(fetch("news"))
    if cfg.limit:
        pick = random.Random(cfg.seed)
        sentiment = {k: pick.sample(v, min(cfg.limit if k == "train" else cfg.limit // 4, len(v)))
                     for k, v in sentiment.items()}
        ood = {d: {h: pick.sample(v, min(cfg.limit // 4, len(v))) for h, v in halves.items()}
               for d, halves in ood.items()}
        news = {"train": news["train"][:200], "heldout": news["heldout"][: cfg.n_embed]}
    splits = write_splits({k: sentiment[k] for k in ("train", "dev")}, work / "sentiment")
    rng = random.Random(cfg.seed)
    # The augmentation's sentences keep the cut its recipe was chosen with (at ". " only, so 4% end with a
    # period); the embedder's are cut like the held-out sentences it is measured on (94% end with one).
    sentences = [s for p in news["train"] for s in p.split(". ") if 30 <= len(s) <= 300]
    embed_sentences = [s for p in news["train"] for s in cut_sentences(p)]
    files = {"train": splits["train"], "dev": splits["dev"], "unlabeled": work / "news_unlabeled.txt",
             "news_sentences": work / "news_sentences.txt", "news_paragraphs": work / "news_train.txt",
             "news_heldout": work / "news_heldout.txt"}
    write_atomic(files["unlabeled"], "\n".join(rng.sample(sentences, min(cfg.unlabeled, len(sentences)))) + "\n")
    write_atomic(files["news_sentences"],
                 "\n".join(rng.sample(embed_sentences, min(cfg.embedder_sentences, len(embed_sentences)))) + "\n")
    write_atomic(files["news_paragraphs"], "\n".join(news["train"]) + "\n")
    write_atomic(files["news_heldout"], "\n".join(news["heldout"][: cfg.n_embed]) + "\n")
    dev = {IN_DOMAIN: sentiment["dev"], **{d: h["dev"] for d, h in ood.items()}}
    # compress's dev_file: every domain's dev split, as make models has always chosen on them
    files |= write_splits({"dev_domains": [row for rows in dev.values() for row in rows]}, work / "sentiment")
    test = {IN_DOMAIN: sentiment["test"], **{d: h["test"] for d, h in ood.items()}}
    counts = {"train": len(sentiment["train"]), **{f"dev_{d}": len(v) for d, v in dev.items()},
              **{f"test_{d}": len(v) for d, v in test.items()}, "news_train_paragraphs": len(news["train"]),
              "news_sentences_available": len(sentences), "embed_sentences_available": len(embed_sentences),
              "embed_heldout": len(news["heldout"][: cfg.n_embed])}
    log.info("data: %s", counts)
    return Data(files, dev, test, news["heldout"][: cfg.n_embed], counts)


# -- training stages --------------------------------------------------------------------------------
def _train(tc: TrainConfig, out: Path, seed: int, threads: int | None) -> TrainConfig:
    # resume: a stage stopped after its last checkpoint continues from it (same configuration only).
    return replace(tc, out_dir=str(out), seed=seed, threads=threads, resume=True)


# How a run is carried out, not what it computes: a finished run that differs only in these is reused.
_VOLATILE = ("out_dir", "threads", "progress", "device", "resume", "log_every", "save_every")


def _comparable(config: dict) -> dict:
    return config | {"train": {k: v for k, v in config["train"].items() if k not in _VOLATILE}}


# The configuration fields that name what a run reads: data files, and model folders (a teacher retrained
# in place keeps its path). A run is reused only if they still hold the same bytes.
_INPUTS = ("train_file", "dev_file", "unlabeled_file", "corpus", "model", "teacher", "student", "embed_reference")
_INPUTS_RECORD = "inputs.json"  # {field: sha256 of the file, or of the folder's weights, it named}


def _input_digests(cfg) -> dict[str, str]:
    out = {}
    for f in _INPUTS:
        if not isinstance(p := getattr(cfg, f, None), str) or not p:
            continue
        path = Path(p) / "model.safetensors" if Path(p).is_dir() else Path(p)
        if path.is_file():
            out[f] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run_once(command, cfg) -> Path:
    """Run a training command unless its output folder already holds a finished run of the same
    configuration on the same data (so ``make models`` and ``make ablation`` share the teacher, and a
    stopped pipeline continues); returns the exported model's folder. The data is compared by content:
    an extra-text file rewritten under the same name (another sample, another perturbation) retrains,
    from scratch (a checkpoint of the old data is not resumed)."""
    run_dir = Path(cfg.train.out_dir)
    final = run_dir / "final"
    digests = _input_digests(cfg)
    if _finished(cfg, digests):
        log.info("reusing %s (same configuration, same data)", final)
        return final
    # What the checkpoint was trained on, written before the run so a stopped one resumes; the export's
    # own record, after it, so a stopped run never vouches for an older export.
    if not _same_data(run_dir / _INPUTS_RECORD, digests) and (run_dir / "checkpoint.pt").is_file():
        log.info("%s: the data changed since its checkpoint, training from scratch", run_dir)
        (run_dir / "checkpoint.pt").unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    record = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    write_atomic(run_dir / _INPUTS_RECORD, record)
    (final / _INPUTS_RECORD).unlink(missing_ok=True)  # an older export's record must not vouch for this run's
    command(cfg)
    write_atomic(final / _INPUTS_RECORD, record)
    return final


def _finished(cfg, digests: dict[str, str] | None = None) -> bool:
    """Whether cfg's output folder holds a finished run of the same configuration on the same data."""
    final = Path(cfg.train.out_dir) / "final"
    saved = final / "training_config.json"
    want = json.loads(json.dumps(to_dict(cfg), default=str))
    digests = _input_digests(cfg) if digests is None else digests
    return (saved.is_file() and _same_data(final / _INPUTS_RECORD, digests)
            and _comparable(json.loads(saved.read_text())) == _comparable(want))


def _same_data(record: Path, digests: dict[str, str]) -> bool:
    return record.is_file() and json.loads(record.read_text()) == digests


def train_teacher(cfg: PipelineConfig, files: Files, work: Path, name: str = "teacher",
                  threads: int | None = None) -> Path:
    """all-MiniLM-L6-v2 fine-tuned on the movie-review train split (``threads`` None: every core)."""
    return _run_once(run_finetune, replace(
        cfg.teacher, model=str(fetch("minilm")), train_file=str(files["train"]),
        train=_train(cfg.teacher.train, work / name, cfg.seed, threads)))


def general_distillation(cfg: PipelineConfig, files: Files, work: Path, layers: int) -> Path:
    """A student generally distilled on news paragraphs toward all-MiniLM-L6-v2 (Recipe.general_distillation)."""
    return _run_once(run_distill, replace(
        cfg.general, teacher=str(fetch("minilm")), corpus=str(files["news_paragraphs"]), student_layers=layers,
        train=_train(cfg.general.train, work / f"general_{layers}l", cfg.seed, cfg.threads)))


def train_student(cfg: PipelineConfig, files: Files, work: Path, teacher: Path, recipe: Recipe, name: str,
                  seed: int | None = None) -> Path:
    """Task distillation from the teacher with ``recipe`` (labels only when recipe.alpha is 0)."""
    start = general_distillation(cfg, files, work, recipe.layers) if recipe.general_distillation else None
    return _run_once(run_distill_task, student_config(cfg, files, work, teacher, recipe, name, seed, start))


def student_config(cfg: PipelineConfig, files: Files, work: Path, teacher: Path, recipe: Recipe, name: str,
                   seed: int | None = None, start: Path | None = None) -> TaskDistillConfig:
    """The task-distillation command for ``recipe`` (``start``: its generally distilled student)."""
    seed = cfg.seed if seed is None else seed
    minilm = fetch("minilm")
    return replace(
        cfg.student, teacher=str(teacher), student=str(start) if start else None, student_layers=recipe.layers,
        train_file=str(files["train"]), dev_file=None,
        unlabeled_file=unlabeled_for(recipe, files, work / f"{name}.unlabeled.txt", cfg.seed),
        alpha=recipe.alpha, temperature=recipe.temperature, freeze_embeddings=recipe.freeze_embeddings,
        alpha_embed=recipe.alpha_embed, alpha_hidden=recipe.alpha_hidden,
        embed_reference=str({"minilm": minilm, "teacher": teacher}[recipe.embed_toward]) if recipe.alpha_embed > 0
        else None,
        train=_train(cfg.student.train, work / name, seed, cfg.threads))


def unlabeled_for(recipe: Recipe, files: Files, path: Path, seed: int) -> str | None:
    """The text only the teacher's soft targets supervise: news sentences (``augment``) and perturbed
    copies of the training texts (``perturbed``), in one file at ``path``; None when there is none.
    ``seed`` is the pipeline's, as for the news sample: the seeds of one recipe share their extra text,
    so their spread is the training's noise, not the draw of the text's."""
    if not recipe.perturbed:
        return str(files["unlabeled"]) if recipe.augment else None
    texts = read_labeled(files["train"], id2label=LABELS).texts
    rng = random.Random(seed)
    whole, part = divmod(round(recipe.perturbed * len(texts)), max(len(texts), 1))
    # Every text ``whole`` times, then a seeded sample of the rest: the train split's file is in the
    # corpus's order (most of its first half positive), so its first texts would not be a fair share.
    picked = list(range(len(texts))) * whole + rng.sample(range(len(texts)), part)
    copies = [perturb(texts[i], rng) for i in picked]
    news = files["unlabeled"].read_text(encoding="utf-8").splitlines() if recipe.augment else []
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(write_atomic(path, "\n".join(news + copies) + "\n"))


def train_embedder(cfg: PipelineConfig, files: Files, work: Path) -> Path:
    """A student for sentence embeddings: ``python -m training compress task=embed`` toward all-MiniLM-L6-v2
    on news sentences, the held-out articles' sentences kept out of its training text (29 of the 60,000
    sampled sentences repeat one of them word for word: boilerplate); skipped when its inputs are unchanged."""
    out = work / "embedder"
    run_compress_embed(replace(cfg.embedder, teacher=str(fetch("minilm")), corpus=str(files["news_sentences"]),
                               test_file=str(files["news_heldout"]), out_dir=str(out), seed=cfg.seed,
                               threads=cfg.threads))
    return out / "student"


# -- measurements -----------------------------------------------------------------------------------
def accuracy_by_domain(path: Path, sets: Mapping[str, Rows], max_length: int) -> dict[str, dict]:
    """{domain: accuracy, macro F1, n} of the classifier at ``path``, plus the predictions."""
    m = model.load(path)
    tok = model.Tokenizer.from_dir(path)
    out = {}
    for domain, rows in sets.items():
        pred = score(m, tok.tokenize_ids([t for t, _ in rows]), tok.pad_id, max_length).argmax(-1)
        out[domain] = classification_metrics(pred, [y for _, y in rows], 2) | {"pred": pred}
    return out


def with_retention(student: dict[str, dict], teacher: dict[str, dict]) -> dict[str, float]:
    """Accuracy and retention (student / teacher accuracy) per domain, the out-of-domain mean, and
    the selection score: the mean of in-domain and out-of-domain-mean retention."""
    res: dict[str, float] = {}
    for d in student:
        res[f"accuracy_{d}"] = student[d]["accuracy"]
        res[f"retention_{d}"] = student[d]["accuracy"] / teacher[d]["accuracy"]
    ood = [d for d in student if d != IN_DOMAIN]
    res["accuracy_ood_mean"] = statistics.mean(student[d]["accuracy"] for d in ood)
    res["retention_ood_mean"] = statistics.mean(res[f"retention_{d}"] for d in ood)
    res["score"] = (res[f"retention_{IN_DOMAIN}"] + res["retention_ood_mean"]) / 2
    return res


def select(candidates: dict[str, Path], teacher: Path, dev: Mapping[str, Rows], max_length: int,
           measured: Mapping[Path, dict] | None = None) -> tuple[str, dict[str, dict[str, float]]]:
    """The candidate with the best dev score (in-domain dev and out-of-domain dev halves only).
    ``measured``: ``accuracy_by_domain`` on ``dev`` already taken, by model folder."""
    measured = measured or {}

    def on_dev(p: Path) -> dict:
        return measured[p] if p in measured else accuracy_by_domain(p, dev, max_length)

    t = on_dev(teacher)
    scores = {name: with_retention(on_dev(p), t) for name, p in candidates.items()}
    return max(scores, key=lambda n: scores[n]["score"]), scores


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


@dataclass
class Built:
    """What the training stages produced, before any test split is read."""

    teacher: Path
    student: Path
    baseline: Path
    embedder: Path
    compress: dict  # compress's report: what it chose on dev, its stages and their times


EMBEDDER_NICENESS = 10  # a worker at niceness 10 gets about a tenth of a core that a niceness-0 worker wants


def classifier_config(cfg: PipelineConfig, files: Files, work: Path) -> CompressConfig:
    """The compress command make models runs: base= all-MiniLM-L6-v2 on the movie-review train split."""
    return replace(cfg.classifiers, base=str(fetch("minilm")), train_file=str(files["train"]),
                   dev_file=str(files["dev_domains"]), test_file=None, unlabeled_file=str(files["unlabeled"]),
                   out_dir=str(work / "compress"), seed=cfg.seed, threads=cfg.threads)


def build(cfg: PipelineConfig, data: Data, work: Path, step) -> Built:
    """The classifiers (teacher, student, baseline: one compress run) and the embedder. They see the
    training files and the dev splits only; nothing here reads ``data.test``.

    With ``cfg.workers`` > 1 the embedder, which needs no teacher, trains in a process of its own at a
    lower priority, single-threaded: it takes what compress leaves of the cores, then the rest."""
    ccfg = classifier_config(cfg, data.files, work)
    if cfg.workers > 1:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn, initializer=os.nice, initargs=(EMBEDDER_NICENESS,)) as side:
            embedder = side.submit(train_embedder, replace(cfg, threads=1), data.files, work)
            report = run_compress(ccfg)
            step("classifiers")
            embedder_path = embedder.result()
    else:
        report = run_compress(ccfg)
        step("classifiers")
        embedder_path = train_embedder(cfg, data.files, work)
    step("embedder")
    out = Path(ccfg.out_dir)
    return Built(out / "teacher", out / "student", out / "baseline", embedder_path, report)


def evaluate(cfg: PipelineConfig, built: Built, data: Data, out: Path) -> dict:
    """Publish the chosen models and measure them on the test splits."""
    for name, src in (("teacher", built.teacher), ("student", built.student), ("baseline", built.baseline),
                      ("student_embedder", built.embedder), ("teacher_embedder", fetch("minilm"))):
        _copy(src, out / name)
    max_length = cfg.classifiers.max_length
    names = ("teacher", "student", "baseline")
    lat_texts = random.Random(cfg.seed).sample([t for t, _ in data.test[IN_DOMAIN]],
                                               min(cfg.n_latency, len(data.test[IN_DOMAIN])))
    embedders = ("teacher_embedder", "student_embedder")
    tok = model.Tokenizer.from_dir(out / "teacher")  # all five keep all-MiniLM-L6-v2's vocabulary
    latencies = compress_latency_b1({n: out / n for n in names + embedders}, tok.tokenize_ids(lat_texts), None,
                                    max_length)
    per_domain = {n: accuracy_by_domain(out / n, data.test, max_length) for n in names}
    models: dict[str, dict] = {}
    for n in names:
        m = model.load(out / n)
        r = {"accuracy": per_domain[n][IN_DOMAIN]["accuracy"], "macro_f1": per_domain[n][IN_DOMAIN]["macro_f1"],
             "parameters": sum(p.numel() for p in m.parameters()), "layers": m.config.num_layers,
             "family": m.config.family, "latency_ms_b1": latencies[n],
             "domains": {d: {k: v for k, v in x.items() if k != "pred"} for d, x in per_domain[n].items()}}
        if n != "teacher":
            r |= with_retention(per_domain[n], per_domain["teacher"])
            r["retention"] = r[f"retention_{IN_DOMAIN}"]
            r["speedup_b1"] = latencies["teacher"] / latencies[n]
            r["teacher_agreement"] = (per_domain[n][IN_DOMAIN]["pred"] == per_domain["teacher"][IN_DOMAIN]["pred"]
                                      ).float().mean().item()
            r["parameters_vs_teacher"] = r["parameters"] / models["teacher"]["parameters"]
        else:
            r["accuracy_ood_mean"] = statistics.mean(v["accuracy"] for d, v in per_domain[n].items()
                                                     if d != IN_DOMAIN)
        models[n] = r
    emb = {n: sentence_embeddings(p, data.news_heldout, max_length, "mean")
           for n, p in (("minilm", fetch("minilm")), ("teacher_embedder", out / "teacher_embedder"),
                        ("student_embedder", out / "student_embedder"), ("teacher", out / "teacher"),
                        ("student", out / "student"))}
    embeddings = {
        "student_embedder_vs_teacher_embedder": agreement(emb["student_embedder"], emb["teacher_embedder"]),
        "teacher_embedder_vs_minilm": agreement(emb["teacher_embedder"], emb["minilm"]),
        # One checkpoint for both tasks? The classifiers' own mean-pooled embeddings, measured.
        "student_classifier_vs_teacher_classifier": agreement(emb["student"], emb["teacher"]),
        "teacher_classifier_vs_minilm": agreement(emb["teacher"], emb["minilm"]),
    }
    # What the student embedder's extra fidelity costs: its size and batch-1 latency beside the teacher's.
    sizes = {n: model.load(out / n) for n in embedders}
    embeddings["embedders"] = {n: {"layers": m.config.num_layers, "parameters": sum(p.numel() for p in m.parameters()),
                                   "latency_ms_b1": latencies[n]} for n, m in sizes.items()}
    embeddings["embedders"]["student_embedder"]["speedup_b1"] = (
        latencies["teacher_embedder"] / latencies["student_embedder"])
    s, b = models["student"], models["baseline"]
    e = embeddings["student_embedder_vs_teacher_embedder"]
    targets = {
        "retention_ge_0.97": s["retention"] >= 0.97,
        "ood_retention_ge_0.97": s["retention_ood_mean"] >= 0.97,
        "student_above_baseline": s["accuracy"] > b["accuracy"] and s["accuracy_ood_mean"] > b["accuracy_ood_mean"],
        "speedup_ge_1.8": s["speedup_b1"] >= 1.8,
        "embed_cosine_ge_0.90": e["mean_cosine"] >= 0.90,
        "top1_agreement_ge_0.70": e["top1_agreement"] >= 0.70,
        "teacher_embedder_cosine_ge_0.99": embeddings["teacher_embedder_vs_minilm"]["mean_cosine"] >= 0.99,
    }
    return {"models": models, "embeddings": embeddings, "targets": targets}


def serve_config(out: Path) -> dict:
    """The DISTIL_CONFIG file ``make serve`` reads: each model and the task it serves."""
    entries = [("student", "student", "classify"), ("teacher", "teacher", "classify"),
               ("student_embedder", "student", "embed"), ("teacher_embedder", "teacher", "embed")]
    return {"models": [{"name": n.replace("_", "-"), "path": str(out / n), "role": role, "task": task}
                       for n, role, task in entries]}


def cpu_seconds() -> float:
    """CPU time of this process and its finished workers: the budget on a machine shared with other jobs."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


# -- the pipeline -----------------------------------------------------------------------------------
def run(cfg: PipelineConfig) -> dict:
    out = Path(cfg.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "pipeline.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start - sum(timings.values()), 1)
        log.info("step %s done in %.1fs", name, timings[name])
        print(f"[pipeline] {name}: {timings[name]:.1f}s", file=sys.stderr, flush=True)

    data = load_data(cfg, work)
    step("data")
    built = build(cfg, data, work, step)
    measured = evaluate(cfg, built, data, out)
    step("evaluate")
    (out / "serve.json").write_text(json.dumps(serve_config(out), indent=2) + "\n")
    results = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "config": asdict(cfg),
        "data": data.counts,
        **measured,
        "selection": {"on": sorted(data.dev), "chosen": built.compress["selection"]},
        "compress": {k: built.compress[k] for k in ("command", "recipe", "data", "stages", "wall_time_s", "summary")},
        "timings_s": timings | {"total": round(time.perf_counter() - t_start, 1), "cpu": round(cpu_seconds(), 1)},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log.info("results: %s", json.dumps(results["models"]))
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="artifacts")
    p.add_argument("--quick", action="store_true", help="a few hundred examples, a few steps per stage (tests)")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--workers", type=int, default=1, help="processes for the independent training stages")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = PipelineConfig(out=args.out, threads=args.threads, workers=args.workers)
    res = run(quick(cfg) if args.quick else cfg)
    print(json.dumps({"models": res["models"], "embeddings": res["embeddings"], "targets": res["targets"],
                      "timings_s": res["timings_s"]}, indent=2, default=str))


if __name__ == "__main__":
    main()
