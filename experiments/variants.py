"""``make models``, last step: the ONNX Runtime and int8 variants of every served model, measured,
and the fastest one within the quality budget written into artifacts/serve.json.

For the teacher and the student classifiers and the two embedders, each variant is loaded exactly as
the service loads it (app/backends: torch fp32 — the reference —, torch int8, ONNX fp32, ONNX int8)
and measured on this machine: test accuracy per domain (in-domain and the out-of-domain sets),
agreement with its own fp32 model, cosine of its mean-pooled sentence embeddings to fp32 on held-out
news sentences, batch-1 latency and batch-32 throughput (variants take turns on every input, so the
machine's drift falls on all alike). Budget: an int8 variant loses at most 1.0 point of accuracy
(in-domain and out-of-domain mean) and keeps a mean embedding cosine of at least 0.98 to its fp32
model. Writes results.json["variants"], the README section and the backend/precision of each entry
of serve.json (with the SHA-256 of an ONNX export, which the service checks when it loads it).

    python -m experiments.variants [--artifacts artifacts] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from app.backends import Backend, OutputSpec
from app.backends.onnx import OnnxBackend
from app.backends.torch import TorchBackend
from app.settings import ModelSpec
from lab.assets import fetch
from lab.datasets import load_news, load_ood, load_sentiment
from lab.readme import markers, write_section
from training.variants import MAX_ACCURACY_LOSS  # 1.0 point, in-domain and out-of-domain mean: compress's budget

log = logging.getLogger("experiments.variants")
VARIANTS = (("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"))
CLASSIFIERS = ("teacher", "student")
EMBEDDERS = ("teacher_embedder", "student_embedder")
MIN_COSINE = 0.98  # mean cosine of the sentence embeddings to the model's own fp32
IN_DOMAIN = "movies"
START, END = markers("variants")


def _name(backend: str, precision: str) -> str:
    return f"{backend} {precision}"


def load_variant(path: Path, backend: str, precision: str, name: str) -> Backend:
    import torch

    spec = ModelSpec(name=name, path=path, backend=backend, precision=precision)
    cpu = torch.device("cpu")
    return OnnxBackend(spec, cpu, precision) if backend == "onnx" else TorchBackend.at_precision(spec, cpu, precision)


def _run(b: Backend, texts: list[str], spec: OutputSpec, batch: int = 64) -> np.ndarray:
    """One output row per text, in order; batches of similar length, so little padding is computed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: list[list[float]] = [[] for _ in texts]
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        ids = b.tokenize([texts[j] for j in idx])
        for j, row in zip(idx, b.forward(ids, [spec] * len(ids)), strict=True):
            rows[j] = row
    return np.array(rows)


def timings(models: dict[str, Backend], texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency (median forward of one sentence, tokenization excluded) and batch-32
    throughput, the variants taking turns on every input."""
    rng = random.Random(0)
    singles = [rng.choice(texts) for _ in range(rounds)]
    groups = [rng.sample(texts, 32) for _ in range(max(3, rounds // 8))]
    ids = {n: ([b.tokenize([t]) for t in singles], [b.tokenize(g) for g in groups]) for n, b in models.items()}
    for n, b in models.items():  # warm-up: first calls allocate
        for x in ids[n][0][:3] + ids[n][1][:1]:
            b.forward(x, [b.default_output] * len(x))
    b1: dict[str, list[float]] = {n: [] for n in models}
    b32: dict[str, list[float]] = {n: [] for n in models}
    for phase, store in ((0, b1), (1, b32)):
        for i in range(len(ids[next(iter(models))][phase])):
            for n, b in models.items():
                x = ids[n][phase][i]
                t0 = time.perf_counter()
                b.forward(x, [b.default_output] * len(x))
                store[n].append(time.perf_counter() - t0)
    return {n: {"latency_ms_b1": 1000 * statistics.median(b1[n]),
                "throughput_b32": 32 / statistics.median(b32[n])} for n in models}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def measure_model(path: Path, kind: str, test: dict[str, list[tuple[str, int]]], sentences: list[str],
                  speed_texts: list[str], rounds: int) -> dict[str, dict]:
    """Every variant of one model; the torch fp32 row is the reference of the others."""
    models = {_name(bk, p): load_variant(path, bk, p, path.name) for bk, p in VARIANTS}
    ref_name = _name("torch", "fp32")
    embed = OutputSpec("embed", pooling="mean", normalize=False)
    emb = {n: _run(b, sentences, embed) for n, b in models.items()}
    rows: dict[str, dict] = {n: {} for n in models}
    if kind == "classifier":
        scores = {n: {d: _run(b, [t for t, _ in rows_], OutputSpec("classify", raw_scores=True))
                      for d, rows_ in test.items()} for n, b in models.items()}
        for n in models:
            per_domain = {}
            for d, rows_ in test.items():
                pred = scores[n][d].argmax(1)
                per_domain[d] = {"accuracy": float((pred == np.array([y for _, y in rows_])).mean()),
                                 "agreement_with_fp32": float((pred == scores[ref_name][d].argmax(1)).mean()),
                                 "n": len(rows_)}
            ood = [d for d in test if d != IN_DOMAIN]
            rows[n] |= {"domains": per_domain, "accuracy": per_domain[IN_DOMAIN]["accuracy"],
                        "accuracy_ood_mean": statistics.mean(per_domain[d]["accuracy"] for d in ood) if ood else None,
                        "agreement_with_fp32": per_domain[IN_DOMAIN]["agreement_with_fp32"],
                        "max_abs_logit_diff": float(max(np.abs(scores[n][d] - scores[ref_name][d]).max()
                                                        for d in test))}
    for n in models:
        cos = _cosines(emb[n], emb[ref_name])
        rows[n] |= {"embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min()),
                    "max_abs_pooled_diff": float(np.abs(emb[n] - emb[ref_name]).max()),
                    "backend": n.split()[0], "precision": n.split()[1]}
    for n, t in timings(models, speed_texts, rounds).items():
        rows[n] |= t
    for r in rows.values():
        r["within_budget"] = within_budget(r, rows[ref_name])
    return rows


def within_budget(r: dict, ref: dict) -> bool:
    if r["embedding_cosine_mean"] < MIN_COSINE:
        return False
    for key in ("accuracy", "accuracy_ood_mean"):
        if r.get(key) is not None and ref[key] - r[key] > MAX_ACCURACY_LOSS + 1e-12:
            return False
    return True


def choose(rows: dict[str, dict]) -> str:
    """The fastest variant (batch-32 throughput) within the budget; torch fp32 always qualifies."""
    ok = {n: r for n, r in rows.items() if r["within_budget"]}
    return max(ok, key=lambda n: ok[n]["throughput_b32"])


def targets(v: dict) -> dict:
    """Issue 13's in-process targets, from the rows measured side by side."""
    out: dict = {}
    teacher, student = v["models"].get("teacher"), v["models"].get("student")
    if teacher and student:
        t, s = teacher["torch fp32"], student["onnx int8"]
        out["int8_student_throughput_vs_fp32_teacher"] = s["throughput_b32"] / t["throughput_b32"]
        out["int8_student_latency_vs_fp32_teacher"] = s["latency_ms_b1"] / t["latency_ms_b1"]
        out["throughput_ge_3.5x"] = out["int8_student_throughput_vs_fp32_teacher"] >= 3.5
        out["latency_le_0.35x"] = out["int8_student_latency_vs_fp32_teacher"] <= 0.35
    onnx = [r["onnx fp32"] for r in v["models"].values()]
    out["onnx_fp32_max_abs_logit_diff"] = max((r.get("max_abs_logit_diff", 0.0) for r in onnx), default=None)
    out["onnx_fp32_max_abs_pooled_diff"] = max(r["max_abs_pooled_diff"] for r in onnx)
    out["onnx_fp32_within_1e-4"] = out["onnx_fp32_max_abs_pooled_diff"] <= 1e-4 and (
        out["onnx_fp32_max_abs_logit_diff"] or 0.0) <= 1e-4
    for prec_key in ("onnx int8", "torch int8"):
        out[f"{prec_key.replace(' ', '_')}_within_budget"] = {m: r[prec_key]["within_budget"]
                                                             for m, r in v["models"].items()}
    return out


def http_ratio(artifacts: Path, texts: list[str], rounds: int = 3, block_s: float = 4.0) -> dict:
    """Through the service: 16-input /classify requests at concurrency 8 to the fp32 teacher (torch) and
    the int8 student (ONNX), served by one process, in alternating blocks; inputs/s per model."""
    import asyncio
    import os
    import subprocess

    from lab.loadgen import Level, run_level
    from lab.server import free_port, stop_server, wait_ready

    models = [{"name": "teacher", "path": str(artifacts / "teacher"), "role": "teacher"},
              {"name": "student", "path": str(artifacts / "student"), "role": "student", "backend": "onnx",
               "precision": "int8"}]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_CONFIG": "", "DISTIL_ACCESS_LOG": "false"}
    with (artifacts / "variants-http.log").open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    requests = [(texts[i:i + 16], 16) for i in range(0, len(texts) - 15, 16)]
    speeds: dict[str, list[float]] = {"teacher": [], "student": []}
    errors: dict[str, dict[str, int]] = {"teacher": {}, "student": {}}  # e.g. 429 while the queue is saturated
    try:
        wait_ready(url, proc)
        for _ in range(rounds):
            for name in speeds:
                level = Level(name, "/classify", "short x16", "closed", concurrency=8, requests=100_000,
                              duration_s=block_s, warmup_requests=3)
                s = asyncio.run(run_level(url, level, requests, client="lean"))
                for k, n in s.errors.items():
                    errors[name][k] = errors[name].get(k, 0) + n
                speeds[name].append(s.inputs_per_s)  # answered inputs only
    finally:
        stop_server(proc)
    med = {n: statistics.median(v) for n, v in speeds.items()}
    return {"inputs_per_s": med, "blocks": speeds, "errors": errors, "ratio": med["student"] / med["teacher"],
            "concurrency": 8, "inputs_per_request": 16, "rounds": rounds, "block_s": block_s}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def markdown(v: dict) -> str:
    m = v["machine"]
    load = m.get("load_average")
    missing = v.get("missing") or []
    lines = [
        f"Measured by `{v.get('command', 'python -m experiments.variants')}` on {v['created']} "
        f"({m['cpu']}, {m['threads']} torch threads, onnxruntime {m['onnxruntime']}"
        + (f"; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end" if load else "")
        + "); each variant loaded as the "
        f"service loads it. Budget for a variant: ≤ {100 * MAX_ACCURACY_LOSS:.1f} point accuracy loss against its own "
        f"fp32 model (in-domain and out-of-domain mean) and mean embedding cosine ≥ {MIN_COSINE} to it; the "
        "fastest variant within it (batch-32 throughput) is what `make serve` serves (artifacts/serve.json)."
        + (f" Not measured (not in the artifacts folder then): {', '.join(missing)}." if missing else "")
        + (f" {v['note']}" if v.get("note") else ""),  # how a run by hand differed from make models'

        "",
        "| model | variant | movie reviews (in-domain) | out-of-domain mean | agreement with fp32 "
        "| embedding cosine to fp32 (mean / min) | batch-1 latency (ms) | batch-32 inputs/s | within budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for model_name, rows in v["models"].items():
        for n, r in rows.items():
            chosen = " **(served)**" if v["chosen"][model_name] == n else ""
            lines.append(
                f"| {model_name} | {n}{chosen} | {_pct(r.get('accuracy'))} | {_pct(r.get('accuracy_ood_mean'))} "
                f"| {_pct(r.get('agreement_with_fp32'))} "
                f"| {r['embedding_cosine_mean']:.4f} / {r['embedding_cosine_min']:.4f} | {r['latency_ms_b1']:.2f} "
                f"| {r['throughput_b32']:.0f} | {'✅' if r['within_budget'] else '❌'} |")
    t = v["targets"]
    lines += [""]
    if "int8_student_throughput_vs_fp32_teacher" in t:
        lines.append(
            f"In-process, the int8 student (ONNX) against the fp32 teacher (torch): "
            f"**{t['int8_student_throughput_vs_fp32_teacher']:.2f}×** the throughput at batch 32 (target ≥ 3.5×: "
            f"{'✅' if t['throughput_ge_3.5x'] else '❌'}) and **{t['int8_student_latency_vs_fp32_teacher']:.2f}×** "
            f"the batch-1 latency (target ≤ 0.35×: {'✅' if t['latency_le_0.35x'] else '❌'}).")
    if "http_16_inputs_c8" in v:
        h = v["http_16_inputs_c8"]
        lines.append(
            f"Through the service (one process, 16-input /classify requests at concurrency 8, {h['rounds']} "
            f"alternating blocks of {h['block_s']:.0f} s): int8 student {h['inputs_per_s']['student']:.0f} "
            f"inputs/s, fp32 teacher {h['inputs_per_s']['teacher']:.0f}: **{h['ratio']:.2f}×** (target ≥ 3×: "
            f"{'✅' if t['http_ge_3x'] else '❌'}); refused or failed requests: "
            + ", ".join(f"{n} {dict(e) or 'none'}" for n, e in h.get("errors", {}).items()) + ".")
    lines.append(
        f"ONNX fp32 against torch fp32 on the real weights: max |Δ| {t['onnx_fp32_max_abs_logit_diff'] or 0:.1e} "
        f"on logits, {t['onnx_fp32_max_abs_pooled_diff']:.1e} on pooled embeddings (target ≤ 1e-4: "
        f"{'✅' if t['onnx_fp32_within_1e-4'] else '❌'}).")
    return "\n".join(lines)


def update_serve(serve_file: Path, chosen: dict[str, str], artifacts: Path) -> dict:
    """Each serve.json entry whose checkpoint was measured gets its chosen backend and precision, and for an
    ONNX one the SHA-256 of the export measured (artifacts/NAME/onnx/PRECISION.onnx), which the service checks
    when it loads it."""
    from model.checkpoint import file_sha256
    from model.export import export

    cfg = json.loads(serve_file.read_text())
    for entry in cfg["models"]:
        name = Path(entry["path"]).name
        if name in chosen:
            entry["backend"], entry["precision"] = chosen[name].split()
            entry.pop("sha256", None)
            if entry["backend"] == "onnx":  # the cached export, already built and checked by the measurement
                entry["sha256"] = file_sha256(export(artifacts / name, entry["precision"]).path)
    serve_file.write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def run(artifacts: Path, limit: int | None = None, rounds: int = 200, n_embed: int = 500, http: bool = True,
        http_block_s: float = 4.0) -> dict:
    import onnxruntime
    import torch

    from lab.environment import cpu_model

    sentiment = load_sentiment(fetch("sentiment"))
    test = {IN_DOMAIN: sentiment["test"], **{d: h["test"] for d, h in load_ood(fetch("sentiment_ood")).items()}}
    if limit:
        test = {d: rows[:limit] for d, rows in test.items()}
    sentences = load_news(fetch("news"))["heldout"][:n_embed]
    short = [t for t, _ in sentiment["test"] if len(t.split()) <= 20]  # short inputs, as the targets ask
    v: dict = {"created": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                           "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
               "budget": {"max_accuracy_loss": MAX_ACCURACY_LOSS, "min_embedding_cosine": MIN_COSINE},
               "models": {}, "chosen": {}}
    v["machine"]["load_average"] = [os.getloadavg()[0]]
    v["missing"] = []
    for name in CLASSIFIERS + EMBEDDERS:
        path = artifacts / name
        if not path.is_dir():
            log.warning("%s missing: skipped", path)
            v["missing"].append(name)
            continue
        t0 = time.perf_counter()
        kind = "classifier" if name in CLASSIFIERS else "embedder"
        v["models"][name] = measure_model(path, kind, test if kind == "classifier" else {}, sentences, short, rounds)
        v["chosen"][name] = choose(v["models"][name])
        print(f"[variants] {name}: {time.perf_counter() - t0:.0f} s, serving {v['chosen'][name]}", file=sys.stderr,
              flush=True)
    v["machine"]["load_average"].append(os.getloadavg()[0])
    v["targets"] = targets(v)
    if http and {"teacher", "student"} <= set(v["models"]):
        h = v["http_16_inputs_c8"] = http_ratio(artifacts, short, block_s=http_block_s)
        v["targets"]["http_int8_student_vs_fp32_teacher"] = h["ratio"]
        v["targets"]["http_ge_3x"] = h["ratio"] >= 3.0
    return v


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.variants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--readme", type=Path, help="write the variants section into this README")
    p.add_argument("--limit", type=int, help="at most this many test rows per domain (tests)")
    p.add_argument("--rounds", type=int, default=200, help="batch-1 timings per variant")
    p.add_argument("--embed-sentences", type=int, default=500)
    p.add_argument("--http-block-s", type=float, default=4.0,
                   help="seconds per block of the HTTP comparison (0: skip it)")
    p.add_argument("--json", type=Path, help="also write the measurements here (a results file kept in the repo)")
    p.add_argument("--report-only", type=Path, metavar="JSON", help="rewrite the README section from this file")
    args = p.parse_args(argv)
    if args.report_only:
        block = markdown(json.loads(args.report_only.read_text()))
        if args.readme:
            write_section(args.readme, "variants", block)
        print(block)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    for name in ("experiments.variants", "model.export"):  # ours; the quantizer logs every tensor at INFO
        logging.getLogger(name).setLevel(logging.INFO)
    t0 = time.perf_counter()
    v = run(args.artifacts, args.limit, args.rounds, args.embed_sentences, args.http_block_s > 0, args.http_block_s)
    v["seconds"] = round(time.perf_counter() - t0, 1)
    v["command"] = " ".join(["python -m experiments.variants", *(sys.argv[1:] if argv is None else argv)])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(v, indent=2) + "\n")
    results_file = args.artifacts / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["variants"] = v
    results_file.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if (args.artifacts / "serve.json").is_file():
        update_serve(args.artifacts / "serve.json", v["chosen"], args.artifacts)
    block = markdown(v)
    if args.readme:
        write_section(args.readme, "variants", block)
    print(block)


if __name__ == "__main__":
    main()
