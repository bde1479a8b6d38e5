"""Command line: ``python -m training <command> [--config FILE] [key=value ...]``.

Commands: distill (general distillation, triple loss), finetune, distill-task, evaluate, and compress
(your teacher and data in, a distilled student, its report and a serve.json out: training/compress.py).
Under ``torchrun --nproc_per_node=N`` the same commands train with DDP.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .compress import run_compress
from .compress_embed import EmbedCompressConfig, run_compress_embed
from .config import CompressConfig, DistillConfig, EvaluateConfig, FinetuneConfig, TaskDistillConfig, load_config
from .distill import run_distill
from .distill_task import run_distill_task
from .evaluate import run_evaluate
from .finetune import run_finetune
from .tabular import InputError

COMMANDS = {
    "distill": (DistillConfig, run_distill),
    "finetune": (FinetuneConfig, run_finetune),
    "distill-task": (TaskDistillConfig, run_distill_task),
    "evaluate": (EvaluateConfig, run_evaluate),
    "compress": (CompressConfig, run_compress),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="distilbert-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("--config", help="YAML or JSON file with the command's options")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. teacher=path train.lr=1e-4")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    cls, run = COMMANDS[args.command]
    if args.command == "compress":
        task = _task(args.config, args.overrides)
        if task == "embed":
            cls, run = EmbedCompressConfig, run_compress_embed
        elif task == "classify":  # the default: the classifier's config has no task= of its own
            args.overrides = [o for o in args.overrides if not o.startswith("task=")]
        else:
            p.error(f"task={task}: compress makes a classifier (task=classify, the default) or a sentence "
                    "embedder (task=embed)")
    try:
        cfg = load_config(cls, args.config, args.overrides)
    except (ValueError, TypeError) as e:
        p.error(str(e))
    try:
        run(cfg)
    except InputError as e:  # what to fix in the options or the data, found before any training
        p.exit(2, f"{p.prog} {args.command}: error: {e}\n")


def _task(config: str | None, overrides: list[str]) -> str:
    """compress's task= (classify unless the overrides or the config file say embed)."""
    for o in overrides:
        if o.startswith("task="):
            return o.partition("=")[2]
    if config:
        text = Path(config).read_text()
        if config.endswith((".yaml", ".yml")):
            import yaml

            return str((yaml.safe_load(text) or {}).get("task", "classify"))
        return str(json.loads(text).get("task", "classify"))
    return "classify"


if __name__ == "__main__":
    main()
