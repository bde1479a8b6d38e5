"""The README's image line, from the results file `make test-image` writes.

    python -m deploy.report --results deploy/results/image.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from lab.readme import write_section

SECTION = "image"


def line(r: dict) -> str:
    s = r["sigterm"]
    return (f"`{r['command']}` on {r['date']} ({r['machine']}, {r['engine']}): the CPU image is "
            f"**{r['size_bytes'] / 1e9:.2f} GB** (target ≤ {r['size_target_bytes'] / 1e9:.1f} GB); cold start to "
            f"`/ready` **{r['cold_start_seconds']:.1f} s** serving {', '.join(r['cold_start_models'])} (the same "
            f"models on the host, started right after: {r['host_cold_start_seconds']:.1f} s; a second container "
            f"from the same image: {r['second_start_seconds']:.1f} s); SIGTERM with "
            f"{s['in_flight']} requests in flight: {s['answered_200']}/{s['in_flight']} answered, exit code "
            f"{s['exit_code']} after {s['drain_seconds']:.1f} s (grace {s['grace_seconds']:.0f} s); compose `api` "
            f"ready through its published port in {r['compose_ready_seconds']:.1f} s; the distillation Job's command, "
            f"killed after its first checkpoint, resumed at step {r['job_resumed_at_step']} and finished. "
            f"Results: `{r['path']}`.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("deploy/results/image.json"))
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args(argv)
    text = textwrap.fill(line({**json.loads(args.results.read_text()), "path": args.results.as_posix()}), width=115,
                         break_on_hyphens=False, break_long_words=False)
    write_section(args.readme, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
