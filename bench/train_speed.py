"""Training speed: general-distillation steps (teacher forward + student forward/backward with the
triple loss of training/objective.py, the same function ``python -m training distill`` trains with,
+ AdamW step) in tokens/s, for a tiny and the paper-size student. Writes JSON and the README's
train-speed section from it.

    python -m bench.train_speed [--device auto] [--steps 3] [--batch 8] [--length 128]
        [--json bench/results/train_speed.json] [--readme README.md]
    python -m bench.train_speed --report-only   # the README section from the JSON, nothing measured
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import model
from lab.readme import write_section
from training import objective
from training.init import init_student
from training.masking import MaskingConfig, mask_tokens

SIZES = {
    "tiny": {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "intermediate_size": 128},
    "paper": {},  # BERT-base teacher -> 6-layer DistilBERT
}
WEIGHTS = objective.GeneralWeights()  # L_ce 5, L_mlm 2, L_cos 1: the paper's triple loss, the library default


def bench(size: str, device: torch.device, steps: int, batch: int, length: int, amp: bool) -> dict:
    torch.manual_seed(0)
    teacher = model.BertForMaskedLM(model.BertConfig(**SIZES[size])).to(device).eval()
    student = init_student(teacher, task="mlm").to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4)
    special = torch.tensor([0, 100, 101, 102, 103])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=g).to(device)
    mask = torch.ones_like(ids)
    dtype = torch.bfloat16 if amp else torch.float32
    times = []
    for i in range(steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x, labels = mask_tokens(ids, mask, special, 103, 30522, MaskingConfig(), g)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            with torch.no_grad():
                t_states = teacher.encoder.hidden_states(x, mask)
                t_out = objective.Outputs(t_states, teacher.logits(t_states[-1]))
            s_states = student.encoder.hidden_states(x, mask)
            s_out = objective.Outputs(s_states, student.logits(s_states[-1]))
            loss, _ = objective.general_distillation(s_out, t_out, mask, WEIGHTS, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"size": size, "device": str(device), "batch": batch, "length": length, "amp": amp,
            "step_s": round(step, 4), "tokens_per_s": round(batch * length / step, 1),
            "student_params": sum(p.numel() for p in student.parameters()),
            "teacher_params": sum(p.numel() for p in teacher.parameters())}


def markdown(res: dict) -> str:
    rows = res["rows"]
    r0 = rows[0]
    lines = [f"Measured by `make bench-train` (`python -m bench.train_speed`) on {res['device_name']}: batch "
             f"{r0['batch']} × {r0['length']} tokens, {'bf16 autocast' if r0['amp'] else 'float32'}, median of "
             f"{res['steps']} steps.", "",
             "| student | params (student / teacher) | step (s) | training tokens/s |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['student_params'] / 1e6:.1f}M / {r['teacher_params'] / 1e6:.1f}M "
                     f"| {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--json", type=Path, default=Path("bench/results/train_speed.json"))
    p.add_argument("--readme", type=Path, help="write the train-speed section of this README")
    p.add_argument("--report-only", action="store_true", help="measure nothing: the section from --json")
    args = p.parse_args(argv)
    if args.report_only:
        res = json.loads(args.json.read_text())
    else:
        device = model.resolve_device(args.device)
        amp = device.type == "cuda"
        cpu = f"CPU, {torch.get_num_threads()} threads"
        res = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu, "steps": args.steps,
               "rows": [bench(s, device, args.steps, args.batch, args.length, amp) for s in SIZES]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    block = markdown(res)
    if args.readme:
        write_section(args.readme, "train-speed", block)
    print(block)
    return res


if __name__ == "__main__":
    main()
