"""Paper-size checkpoints for latency benchmarks: a BERT-base teacher (12 layers, 768 wide,
110M parameters) and its DistilBERT student (6 layers, initialised one layer in two), both with
a two-label classifier and random weights.

The default models of `make models` are small (a 6-layer, 384-wide teacher), so on a CPU the
fixed cost of an HTTP request is a large share of their forward. These are the paper's shapes:
what a user distilling BERT-base would serve. Their outputs mean nothing — only their speed is
measured (`make bench-paper`).

    python -m bench.paper_models --out artifacts/paper --tokenizer artifacts/teacher
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import model
from training.init import init_student


def build(out: Path, tokenizer_dir: Path, seed: int = 0) -> dict[str, Path]:
    torch.manual_seed(seed)
    tok = model.Tokenizer.from_dir(tokenizer_dir)
    cfg = model.BertConfig(vocab_size=tok.vocab_size, id2label={0: "negative", 1: "positive"})
    teacher = model.BertForSequenceClassification(cfg).eval()
    student = init_student(teacher, task="classification").eval()
    paths = {"teacher": out / "teacher", "student": out / "student"}
    model.save(teacher, paths["teacher"], tok)
    model.save(student, paths["student"], tok)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="artifacts/paper")
    p.add_argument("--tokenizer", default="artifacts/teacher", help="a checkpoint folder with tokenizer files")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for role, path in build(Path(args.out), Path(args.tokenizer), args.seed).items():
        m = model.load(path)
        print(f"{role}: {path} ({m.config.num_layers} layers, {sum(x.numel() for x in m.parameters()) / 1e6:.1f}M)")


if __name__ == "__main__":
    main()
