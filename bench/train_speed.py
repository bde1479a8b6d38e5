"""Training speed: general-distillation steps (teacher forward + student forward/backward with
the triple loss + AdamW step) in tokens/s, for a tiny and the paper-size student.

    python bench/train_speed.py [--device auto] [--steps 3] [--batch 8] [--length 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model  # noqa: E402
from training import losses  # noqa: E402
from training.init import init_student  # noqa: E402
from training.masking import MaskingConfig, mask_tokens  # noqa: E402

SIZES = {
    "tiny": {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "intermediate_size": 128},
    "paper": {},  # BERT-base teacher -> 6-layer DistilBERT
}


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
                t_logits = teacher.logits(t_states[-1])
            s_states = student.encoder.hidden_states(x, mask)
            s_logits = student.logits(s_states[-1])
            loss = (5.0 * losses.soft_target_kl(s_logits, t_logits, 2.0, mask)
                    + 2.0 * losses.masked_lm(s_logits, labels)
                    + losses.hidden_cosine(s_states[-1], t_states[-1], mask))
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


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    amp = device.type == "cuda"
    rows = [bench(s, device, args.steps, args.batch, args.length, amp) for s in SIZES]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"general distillation step, {name}, batch {args.batch} x {args.length} tokens, "
          f"{'bf16 autocast' if amp else 'float32'}, median of {args.steps}\n")
    print("| student | params (student / teacher) | step (s) | training tokens/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['student_params'] / 1e6:.1f}M / {r['teacher_params'] / 1e6:.1f}M "
              f"| {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
