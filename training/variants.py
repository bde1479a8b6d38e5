"""The ways a classifier can be served, measured side by side and judged by one quality budget: what
``compress``'s ``variants`` stage runs on the teacher and the student (training/compress.py).

Variants, as the service runs them (app/backends), built from ``model`` alone (training never imports the
service): torch fp32 (the reference), torch int8 (``model.quantize``), ONNX Runtime fp32 and int8
(``model.export``: the export the service loads and whose SHA-256 it checks). Budget: a variant keeps its
place when it loses at most ``MAX_ACCURACY_LOSS`` of accuracy against its own model's fp32 on the whole
split; the fastest of those at batch 1 (one CPU thread, the variants taking turns on every input) is the
one to serve. ``make models`` judges its served models the same way, on more sets (experiments/variants.py).

The ONNX graph takes ``input_ids`` and ``attention_mask`` only: a BERT-family model reading sentence pairs'
token type ids has no ONNX variant (the service refuses such pairs on ONNX too), and neither has a model
where onnxruntime is not installed or its export cannot be written; ``load`` says why for each.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

import model
from model.quantize import quantize_int8

from .data import collate
from .scoring import logits_of

MAX_ACCURACY_LOSS = 0.01  # 1.0 point of accuracy below the model's own fp32 (make models' budget)
VARIANTS = (("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"))
REFERENCE = "torch fp32"
# logits of a batch: (ids (B, T), attention mask (B, T), token type ids (B, T) or None) -> (B, labels)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
X = TypeVar("X")


def name(backend: str, precision: str) -> str:
    return f"{backend} {precision}"


@dataclass
class Variant:
    """One way to run a checkpoint: a torch module, or an ONNX export (run by a session per ``forward``)."""

    backend: str
    precision: str
    module: nn.Module | None = None
    export: object | None = None  # model.export.Export
    sha256: str | None = None  # of the ONNX file: what serve.json records and the service checks
    sessions: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return name(self.backend, self.precision)

    def forward(self, threads: int | None = None) -> Forward:
        """Logits of a batch. ONNX: a session on ``threads`` intra-op threads (None: ONNX Runtime's default);
        torch runs on torch's own thread setting, which the caller sets."""
        if self.module is not None:
            m = self.module

            @torch.inference_mode()
            def run_torch(ids, mask, types):
                return logits_of(m, ids, mask, types)

            return run_torch
        from model.export import session

        if threads not in self.sessions:
            self.sessions = {threads: session(self.export, threads)}  # one at a time: they hold the weights
        sess = self.sessions[threads]

        def run_onnx(ids, mask, types):
            if types is not None:
                raise ValueError("the ONNX export takes no token type ids")
            feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            return torch.from_numpy(sess.run(["logits"], feeds)[0])

        return run_onnx


def exporter_versions() -> str:
    """What an ONNX variant depends on besides the checkpoint (a stage reruns when it changes)."""
    try:
        from model.export import versions

        return ",".join(f"{k}={v}" for k, v in sorted(versions().items()))
    except ImportError as e:
        return f"absent ({e.name or e})"


def load(path: Path, token_types: bool) -> tuple[list[Variant], dict[str, str]]:
    """The variants of the checkpoint at ``path`` on the CPU, and why any is missing (name -> reason).
    ``token_types``: the model reads sentence pairs' token type ids (a BERT family pair task)."""
    variants: list[Variant] = []
    skipped: dict[str, str] = {}
    for backend, precision in VARIANTS:
        if backend == "torch":
            m = model.load(path).eval()
            variants.append(Variant(backend, precision, module=quantize_int8(m) if precision == "int8" else m))
            continue
        if token_types:
            skipped[name(backend, precision)] = (
                "the ONNX export takes input_ids and attention_mask only, so a BERT model's sentence pairs "
                "would lose their token type ids (the service refuses BERT pairs on ONNX for the same reason)")
            continue
        try:
            from model.checkpoint import file_sha256
            from model.export import ExportError, export

            exp = export(path, precision)
        except ImportError as e:
            skipped[name(backend, precision)] = f"{e.name or e} is not installed (pip install '.[serve]')"
            continue
        except ExportError as e:
            skipped[name(backend, precision)] = f"no export: {e}"
            continue
        variants.append(Variant(backend, precision, export=exp, sha256=file_sha256(exp.path)))
    return variants, skipped


def logits(forward: Forward, seqs: list[list[int]], types: list[list[int]] | None, pad_id: int, max_length: int,
           batch_size: int = 64) -> torch.Tensor:
    """(N, labels) for every sequence, in input order, in batches of similar length (``scoring.score``'s
    batches, for any forward)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    rows: list[torch.Tensor | None] = [None] * len(seqs)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = collate([seqs[j] for j in idx], pad_id, max_length)
        t = collate([types[j] for j in idx], 0, max_length)[0] if types is not None else None
        for j, r in zip(idx, forward(ids, mask, t).float(), strict=True):
            rows[j] = r
    return torch.stack(rows) if rows else torch.empty(0)


def take_turns(calls: dict[str, Callable[[X], object]], inputs: Sequence[X], warmup: int = 3) -> dict[str, float]:
    """Median ms of each call on every input, the calls taking turns on each input, so background load
    falls on all of them alike; each first called on ``warmup`` inputs (first calls allocate). The one
    batch-1 loop of ``compress`` (``compress.latency_b1`` and the variants stage)."""
    for call in calls.values():
        for x in inputs[:warmup]:
            call(x)
    times: dict[str, list[float]] = {n: [] for n in calls}
    for x in inputs:
        for n, call in calls.items():
            t0 = time.perf_counter()
            call(x)
            times[n].append((time.perf_counter() - t0) * 1000)
    return {n: statistics.median(ts) if ts else float("nan") for n, ts in times.items()}


def batches_b1(ids: list[list[int]], types: list[list[int]] | None, pad_id: int, max_length: int) -> list[tuple]:
    """(ids, mask, token types or None) of each sequence alone: the inputs of a batch-1 timing."""
    return [(*collate([x], pad_id, max_length), collate([types[i]], 0, max_length)[0] if types is not None else None)
            for i, x in enumerate(ids)]


def time_b1(calls: dict[str, Callable[[tuple], object]], batches: list[tuple]) -> dict[str, float]:
    """``take_turns`` on one CPU thread (a served model's per-request cost), the thread count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return take_turns(calls, batches)
    finally:
        torch.set_num_threads(threads)


def latency_b1(variants: list[Variant], ids: list[list[int]], types: list[list[int]] | None, pad_id: int,
               max_length: int) -> dict[str, float]:
    """Median forward ms at batch 1 on one CPU thread, tokenization excluded, the variants taking turns."""
    calls = {v.name: (lambda b, f=v.forward(threads=1): f(*b)) for v in variants}
    return time_b1(calls, batches_b1(ids, types, pad_id, max_length))


def within_budget(accuracy: float, reference: float) -> bool:
    return reference - accuracy <= MAX_ACCURACY_LOSS + 1e-12


def choose(rows: dict[str, dict]) -> str:
    """The fastest variant at batch 1 within the budget; the reference always is."""
    ok = {n: r for n, r in rows.items() if r["within_budget"]}
    return min(ok, key=lambda n: ok[n]["latency_ms_b1"])


def serve_entry(backend: str, precision: str, checkpoint: Path) -> dict:
    """serve.json's fields for a chosen variant (app/settings.py ModelSpec: backend, precision, and for ONNX
    the SHA-256 of the export the service loads, CHECKPOINT/onnx/PRECISION.onnx). The export is looked up
    again (built if it has gone since it was measured), so the digest is the file's that the service finds."""
    entry = {"backend": backend, "precision": precision}
    if backend == "onnx":
        from model.checkpoint import file_sha256
        from model.export import export

        entry["sha256"] = file_sha256(export(checkpoint, precision).path)
    return entry


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(v: dict) -> list[str]:
    """report.md's section: every variant of each model, the one served marked."""
    lines = [f"## Served variants ({v['split']}, {v['n']} rows)", "",
             "Each model as the service can run it: torch fp32 (the reference), torch int8 (dynamic quantization, "
             "model/quantize.py), ONNX Runtime fp32 and int8 (model/export.py). Budget: at most "
             f"{100 * v['budget']['max_accuracy_loss']:.1f} point of accuracy below the model's own fp32 on "
             f"{v['split']}; the fastest within it at batch 1 ({v['latency']}) is what serve.json serves.", "",
             "| model | variant | accuracy | macro-F1 | agreement with its fp32 | max abs logit diff | "
             "batch-1 CPU ms | speed-up | within budget |", "|---|---|---|---|---|---|---|---|---|"]
    for model_name, rows in v["models"].items():
        for n, r in rows.items():
            served = " **(served)**" if v["chosen"][model_name] == n else ""
            lines.append(f"| {model_name} | {n}{served} | {_pct(r['accuracy'])} | {r['macro_f1']:.3f} | "
                         f"{_pct(r['agreement_with_fp32'])} | {r['max_abs_logit_diff']:.1e} | "
                         f"{r['latency_ms_b1']:.2f} | {r['speedup_b1']:.2f}x | "
                         f"{'yes' if r['within_budget'] else 'no'} |")
    missing = [f"- {model_name} {n}: not measured: {why}" for model_name, reasons in v["skipped"].items()
               for n, why in reasons.items()]
    return [*lines, *([""] + missing if missing else []), ""]
