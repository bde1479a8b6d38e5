"""Model speed: our DistilBERT vs our BERT vs transformers' DistilBertModel, same weights.

Full-size paper configs (BERT-base 12 layers, DistilBERT 6 layers), float32, inference
mode, no HTTP. Prints a Markdown table of median milliseconds and the two ratios the
model issue targets: student/teacher <= 0.55 and ours/transformers <= 1.0; with
``--readme`` also writes it, with the machine and the date, into the README's
``model-speed`` section.

    python -m bench.model_speed [--repeats 7] [--device cpu] [--json out.json] [--readme README.md]
    python -m bench.model_speed --report-only --json bench/results/model_speed.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import model
from lab.environment import cpu_model
from lab.readme import write_section

SHAPES = [(1, 128), (8, 128), (32, 128)]


def _median_ms(fn, repeats: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def markdown(result: dict) -> str:
    """The README block: what ran where, then the table (both from the results file)."""
    env = result["env"]
    when = f" on {result['created']}" if "created" in result else ""
    lines = [f"Measured by `make bench-model`{when}: {env['device']} ({env['cpu']}), {env['threads']} torch threads, "
             f"torch {env['torch']}, transformers {env['transformers']}, {env['dtype']}, median of {env['repeats']} "
             "runs, random weights in the paper's full-size configs.", "",
             "| batch × tokens | our BERT (ms) | our DistilBERT (ms) | transformers DistilBERT (ms) "
             "| student / teacher | ours / transformers |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['batch']} × {r['tokens']} | {r['ours_bert']:.1f} | {r['ours_distilbert']:.1f} "
                     f"| {r['hf_distilbert']:.1f} | {r['student_over_teacher']:.3f} "
                     f"| {r['ours_over_transformers']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.model_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--readme", type=Path, help="write the table into this README's model-speed section")
    p.add_argument("--report-only", action="store_true", help="do not measure: rewrite the README from --json")
    args = p.parse_args(argv)
    if args.report_only:
        if not (args.json and args.readme):
            p.error("--report-only needs --json (the results) and --readme")
        result = json.loads(args.json.read_text())
        write_section(args.readme, "model-speed", markdown(result))
        return result
    import transformers

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    teacher = model.BertModel(model.BertConfig()).eval()
    student = model.DistilBertModel(model.DistilBertConfig()).eval()
    with tempfile.TemporaryDirectory() as d:
        model.save(student, d)
        hf_student = transformers.DistilBertModel.from_pretrained(d).eval()
    models = {"ours_bert": teacher, "ours_distilbert": student, "hf_distilbert": hf_student}
    for m in models.values():
        m.to(device=device, dtype=dtype)

    rows = []
    g = torch.Generator().manual_seed(0)
    for B, T in SHAPES:
        ids = torch.randint(1000, 30000, (B, T), generator=g).to(device)
        mask = torch.ones_like(ids)
        row = {"batch": B, "tokens": T}
        with torch.inference_mode():
            for name, m in models.items():
                if name.startswith("hf"):
                    def fn(m=m, ids=ids, mask=mask):
                        return m(input_ids=ids, attention_mask=mask).last_hidden_state
                else:
                    def fn(m=m, ids=ids, mask=mask):
                        return m(ids, mask)
                row[name] = _median_ms(fn, args.repeats, args.warmup, sync)
        row["student_over_teacher"] = row["ours_distilbert"] / row["ours_bert"]
        row["ours_over_transformers"] = row["ours_distilbert"] / row["hf_distilbert"]
        rows.append(row)

    env = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": args.dtype,
        "repeats": args.repeats,
    }
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "env": env, "rows": rows}
    block = markdown(result)
    print(block)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.readme:
        write_section(args.readme, "model-speed", block)
    return result


if __name__ == "__main__":
    main()
