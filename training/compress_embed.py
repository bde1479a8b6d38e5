"""``python -m training compress task=embed``: a sentence-embedding teacher and your text in, a smaller
embedder out, with how closely it agrees with its teacher on held-out text, per domain when the corpus
names them.

    python -m training compress task=embed teacher=DIR corpus=F out_dir=DIR [test_file=F] [domain_column=C]

Stages, each skipped when its inputs (the corpus' and test file's bytes, the options it reads, the
teacher's weights) are the finished run's:

  student   the teacher's layers but a sixth of them (rounded; the first and the last kept), distilled on
            the corpus toward the teacher's hidden states, layer by layer, and its pooled sentence
            embedding (make models' embedder recipe)                                 -> out_dir/student
  evaluate  held-out text: mean cosine of student and teacher embeddings and top-1 neighbour agreement
            (per domain), batch-1 CPU latency  -> report.json, report.md, agreement.png, serve.json

Held-out text: ``test_file``, else the corpus rows with sha1(text) mod 10 == 0, kept out of training.
Embeddings pool as the teacher's sentence-transformers config says (1_Pooling), else mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import model

from .compress import _file_digest, _open_log, latency_b1, model_digest
from .config import DistillConfig, to_dict
from .data import collate, read_texts
from .distill import run_distill
from .figures import pyplot, save
from .objective import GeneralWeights
from .tabular import FORMATS, InputError, dev_bucket, read_table
from .trainer import TrainConfig, seed_all, use_threads

log = logging.getLogger("compress")
PLOT = "agreement.png"
NEIGHBOUR_POOL = 1000  # held-out texts per domain among which neighbours are found (make models' test set)


@dataclass
class EmbedCompressConfig:
    """``compress task=embed``. The defaults are make models' student embedder (experiments.pipeline)."""

    task: str = "embed"
    teacher: str = ""  # a sentence-embedding encoder, Hugging Face format (sentence-transformers folders too)
    corpus: str = ""  # one text per line (.txt), or .csv/.tsv/.jsonl with text_column
    out_dir: str = ""
    text_column: str = "text"
    domain_column: str | None = None  # report agreement per value of this column (tables only)
    test_file: str | None = None  # held-out text; None: the corpus rows with sha1(text) mod 10 == 0
    # None: five sixths of the teacher's layers, rounded. On dev news sentences (make models, 6-layer
    # teacher) three layers kept 64% of the top-1 neighbours, four 73-75%, five 78.5%.
    student_layers: int | None = None
    max_length: int = 64
    steps: int = 900
    batch_size: int = 32
    lr: float = 1e-3
    amp: str = "bf16-native"  # bf16 where the hardware computes it natively (matched fp32 in make models)
    max_texts: int | None = None  # the corpus' first this many training rows
    n_eval: int = NEIGHBOUR_POOL  # held-out texts per domain
    n_latency: int = 100
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    progress: bool = True


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers a student copies: the first and the last, and those between with the ones
    left out spread evenly from the bottom (6 -> 5: 0, 2, 3, 4, 5, make models' choice)."""
    if not 1 <= student_layers <= teacher_layers:
        raise InputError(f"student_layers={student_layers}: give 1 to the teacher's {teacher_layers} layers")
    drop = teacher_layers - student_layers
    if student_layers == 1:
        return [teacher_layers - 1]
    left_out = {1 + round(i * (teacher_layers - 2) / drop) for i in range(drop)} if drop else set()
    kept = [i for i in range(teacher_layers) if i not in left_out]
    while len(kept) > student_layers:  # rounding put two drops on one layer
        kept.pop(len(kept) // 2)
    return kept


def embed_recipe(cfg: EmbedCompressConfig, teacher_layers: int, out: Path) -> DistillConfig:
    """make models' embedder: hidden states layer by layer toward the layer each student layer was
    copied from, plus the pooled sentence embedding; the word embeddings stay the teacher's; no dropout
    (the targets are exact)."""
    n = cfg.student_layers or max(1, round(teacher_layers * 5 / 6))
    kept = layer_map(teacher_layers, n)
    recipe = DistillConfig(
        teacher=cfg.teacher, corpus=str(out / "work" / "corpus.txt"), max_length=cfg.max_length,
        student_layers=n, layer_map=kept, loss=GeneralWeights(ce=0.0, mlm=0.0, cos=1.0, pooled_cos=2.0),
        cos_layers=[[i + 1, t + 1] for i, t in enumerate(kept)], freeze_embeddings=True, dropout=0.0,
        train=TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_fraction=0.06,
                          amp=cfg.amp, save_every=0, log_every=10, out_dir=str(out / "work" / "student"),
                          seed=cfg.seed, device=cfg.device, threads=cfg.threads, progress=cfg.progress))
    return recipe


@dataclass
class Corpus:
    train: list[str]
    heldout: dict[str, list[str]]  # domain ("all" without domain_column) -> texts
    split: str  # how the held-out text was chosen, for the log and the report


def read_corpus(cfg: EmbedCompressConfig) -> Corpus:
    """The training text and the held-out text by domain; InputError for anything a person must fix."""
    for option in ("teacher", "corpus", "out_dir"):
        if not getattr(cfg, option):
            raise InputError(f"{option}= is required for task=embed")
    if not (Path(cfg.teacher) / "config.json").is_file():
        raise InputError(f"teacher={cfg.teacher}: not a Hugging Face model folder (no config.json)")

    def rows(path: str, what: str) -> tuple[list[str], list[str]]:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{what}={p}: no such file")
        if p.suffix in FORMATS:
            t = read_table(p, what, cfg.text_column, cfg.domain_column)
            domains = t.labels if t.labels is not None else ["all"] * len(t)
            return t.texts, [str(d) for d in domains]
        if cfg.domain_column:
            raise InputError(f"{what}={p}: domain_column= needs a .csv, .tsv or .jsonl file, not one text per line")
        texts = read_texts(p)
        return texts, ["all"] * len(texts)

    texts, domains = rows(cfg.corpus, "corpus")
    if not texts:
        raise InputError(f"corpus={cfg.corpus} has no text: give it one text per line, or a text column")
    held: dict[str, list[str]] = {}
    if cfg.test_file:
        t_texts, t_domains = rows(cfg.test_file, "test_file")
        test = set(t_texts)
        train = [x for x in texts if x not in test]  # a test text is never trained on
        split = f"test_file={cfg.test_file} ({len(texts) - len(train)} of its texts removed from the corpus)"
    else:
        keep = [not dev_bucket(x) for x in texts]
        train = [x for x, k in zip(texts, keep, strict=True) if k]
        t_texts = [x for x, k in zip(texts, keep, strict=True) if not k]
        t_domains = [d for d, k in zip(domains, keep, strict=True) if not k]
        split = "the corpus rows with sha1(text) mod 10 == 0, left out of training"
    for x, d in zip(t_texts, t_domains, strict=True):
        held.setdefault(d, []).append(x)
    held = {d: xs[: cfg.n_eval] for d, xs in sorted(held.items())}
    small = [d for d, xs in held.items() if len(xs) < 2]
    if small or not held:
        raise InputError(f"held-out text of domain(s) {small or ['all']} has fewer than 2 texts: neighbour agreement "
                         "needs more; give a larger corpus or a test_file=")
    if not train:
        raise InputError("no corpus text is left to train on once the held-out text is set aside")
    return Corpus(train[: cfg.max_texts], held, split)


def _key(cfg: EmbedCompressConfig, digests: dict[str, str], teacher: str) -> str:
    options = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "device", "threads", "progress",
                                                                   "n_latency")}
    payload = {"options": options, "data": digests, "teacher": teacher}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def sentence_embeddings(folder: Path, texts: list[str], max_length: int, pooling: str) -> torch.Tensor:
    """L2-normalised sentence embeddings, pooled as ``pooling`` says: (N, C)."""
    m = model.load(folder, head="base")
    tok = model.Tokenizer.from_dir(folder)
    out = []
    for i in range(0, len(texts), 64):
        x, mask = collate(tok.tokenize_ids(texts[i:i + 64]), tok.pad_id, max_length)
        out.append(model.pool(m(x, mask).float(), mask, pooling, normalize=True))
    return torch.cat(out)


def agreement(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    """Mean cosine of each text's two embeddings, and how often a text's nearest other text is the same
    under both (rows L2-normalised)."""
    cos = (student * teacher).sum(-1)
    s, t = student @ student.T, teacher @ teacher.T
    s.fill_diagonal_(-2)
    t.fill_diagonal_(-2)
    top1 = (s.argmax(-1) == t.argmax(-1)).float().mean().item()
    return {"mean_cosine": cos.mean().item(), "top1_agreement": top1, "n": int(student.shape[0])}


def run_compress_embed(cfg: EmbedCompressConfig) -> dict:
    """The command: checks, the student (skipped when its inputs are unchanged), the report."""
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handlers = _open_log(out)
    try:
        corpus = read_corpus(cfg)
        teacher = Path(cfg.teacher)
        t_model = model.load(teacher, head="base")
        pooling = model.read_pooling(teacher)
        log.info("corpus: %d training texts; held out: %s (%s); pooling: %s", len(corpus.train),
                 ", ".join(f"{d} {len(xs)}" for d, xs in corpus.heldout.items()), corpus.split, pooling)
        use_threads(cfg.threads)
        seed_all(cfg.seed)
        recipe = embed_recipe(cfg, t_model.config.num_layers, out)
        digests = {"corpus": _file_digest(cfg.corpus), **({"test_file": _file_digest(cfg.test_file)}
                                                          if cfg.test_file else {})}
        key = _key(cfg, digests, model_digest(teacher))
        record, student = out / ".stages" / "student.json", out / "student"
        if record.is_file() and student.is_dir() and json.loads(record.read_text())["key"] == key:
            log.info("student: skipped, its inputs are byte for byte the finished run's (%s)", student)
            trained = json.loads(record.read_text())
        else:
            record.unlink(missing_ok=True)
            work = out / "work"
            work.mkdir(parents=True, exist_ok=True)
            (work / "corpus.txt").write_text("\n".join(x.replace("\n", " ") for x in corpus.train) + "\n")
            log.info("student: %d of the teacher's %d layers (%s), %d steps of %d", recipe.student_layers,
                     t_model.config.num_layers, recipe.layer_map, recipe.train.max_steps, recipe.train.batch_size)
            t0 = time.perf_counter()
            run_distill(recipe)
            _publish(work / "student" / "final", student)
            trained = {"key": key, "seconds": round(time.perf_counter() - t0, 1)}
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(trained) + "\n")
        report = evaluate(cfg, corpus, teacher, student, pooling, recipe, trained, digests,
                          time.perf_counter() - t_start)
        return report
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()


def _publish(export: Path, student: Path) -> None:
    """The finished export in place of any older student (whose record was already removed)."""
    shutil.rmtree(student, ignore_errors=True)
    os.replace(export, student)


def evaluate(cfg: EmbedCompressConfig, corpus: Corpus, teacher: Path, student: Path, pooling: str,
             recipe: DistillConfig, trained: dict, digests: dict[str, str], wall_s: float) -> dict:
    domains = {}
    for d, texts in corpus.heldout.items():
        domains[d] = agreement(sentence_embeddings(student, texts, cfg.max_length, pooling),
                               sentence_embeddings(teacher, texts, cfg.max_length, pooling))
        log.info("held-out %s (%d texts): mean cosine %.3f, top-1 neighbour agreement %.1f%%", d, domains[d]["n"],
                 domains[d]["mean_cosine"], 100 * domains[d]["top1_agreement"])
    lat_texts = [x for xs in corpus.heldout.values() for x in xs][: cfg.n_latency]
    tok = model.Tokenizer.from_dir(teacher)
    lat = latency_b1({"teacher": teacher, "student": student}, tok.tokenize_ids(lat_texts), None, cfg.max_length)
    sizes = {n: model.load(p, head="base") for n, p in (("teacher", teacher), ("student", student))}
    models = {n: {"path": str(p.resolve()), "layers": sizes[n].config.num_layers,
                  "parameters": sum(x.numel() for x in sizes[n].parameters()), "latency_ms_b1": lat[n]}
              for n, p in (("teacher", teacher), ("student", student))}
    models["student"]["speedup_b1"] = lat["teacher"] / lat["student"]
    worst = min(domains.items(), key=lambda kv: kv[1]["top1_agreement"])
    report = {
        "task": "embed", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "teacher": str(teacher),
        "pooling": pooling, "domains": domains, "models": models, "held_out": corpus.split,
        "data": {"training_texts": len(corpus.train), "files": digests},
        "recipe": {k: v for k, v in to_dict(recipe).items() if k not in ("teacher", "corpus", "train")},
        "budget": {"steps": recipe.train.max_steps, "batch_size": recipe.train.batch_size, "lr": recipe.train.lr,
                   "amp": recipe.train.amp, "student_seconds": trained.get("seconds")},
        "wall_time_s": round(wall_s, 1),
        "summary": (f"student ({models['student']['layers']} layers) {models['student']['speedup_b1']:.2f}x the "
                    f"teacher's batch-1 speed; lowest top-1 neighbour agreement {100 * worst[1]['top1_agreement']:.1f}%"
                    f" ({worst[0]}), mean cosine {min(d['mean_cosine'] for d in domains.values()):.3f} at worst"),
    }
    out = Path(cfg.out_dir)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    serve = {"models": [{"name": "student_embedder", "path": models["student"]["path"], "role": "student",
                         "task": "embed", "max_length": cfg.max_length},
                        {"name": "teacher_embedder", "path": models["teacher"]["path"], "role": "teacher",
                         "task": "embed", "max_length": cfg.max_length}]}
    (out / "serve.json").write_text(json.dumps(serve, indent=1) + "\n")
    plot(report, out / PLOT)
    log.info("%s; report: %s", report["summary"], out / "report.md")
    return report


def markdown(r: dict) -> str:
    s, t = r["models"]["student"], r["models"]["teacher"]
    lines = [f"# compress task=embed report ({r['created']})", "", f"**{r['summary'][0].upper()}{r['summary'][1:]}.**",
             "", f"Held out: {r['held_out']}. Pooling: {r['pooling']}.", "",
             "| domain | texts | mean cosine | top-1 neighbour agreement |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {m['n']} | {m['mean_cosine']:.3f} | {100 * m['top1_agreement']:.1f}% |"
              for d, m in r["domains"].items()]
    lines += ["", "| model | layers | parameters | batch-1 CPU ms | speed-up |", "|---|---:|---:|---:|---:|",
              f"| teacher | {t['layers']} | {t['parameters']:,} | {t['latency_ms_b1']:.2f} | 1.00x |",
              f"| student | {s['layers']} | {s['parameters']:,} | {s['latency_ms_b1']:.2f} | {s['speedup_b1']:.2f}x |",
              "", f"- recipe: {r['recipe']}", f"- budget: {r['budget']}",
              f"- data: {r['data']}", f"- wall time: {r['wall_time_s']} s", "", f"![agreement by domain]({PLOT})", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    """Top-1 neighbour agreement and mean cosine per domain (skipped without matplotlib)."""
    plt = pyplot(path)
    if plt is None:
        return
    names = list(r["domains"])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [100 * r["domains"][n]["top1_agreement"] for n in names], 0.4, label="top-1 agreement")
    ax.bar([i + 0.2 for i in x], [100 * r["domains"][n]["mean_cosine"] for n in names], 0.4, label="mean cosine x100")
    ax.set_xticks(list(x), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% (held-out text)")
    ax.set_title(f"student ({r['models']['student']['layers']} layers) vs teacher")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save(fig, path)
