"""Progress on a terminal is a bar; anywhere else (a log file, CI, a Job's log) it is a line per interval
with no carriage-return frames."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from tqdm.auto import tqdm

from tests.fixtures import WORDS, write_tiny
from training.progress import Lines, progress

ROOT = Path(__file__).resolve().parents[2]


def test_lines_when_the_output_is_not_a_terminal():
    out = io.StringIO()
    bar = progress(10, "distil", "step", file=out)
    assert isinstance(bar, Lines)
    bar.every_s = 0.0  # a line per update, for the test
    for _ in range(4):
        bar.set_postfix(loss="0.5")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5, lines
    assert lines[0].startswith("distil: 1/10 steps (10%)") and "left" in lines[0] and lines[0].endswith("loss=0.5")
    assert lines[-1].startswith("distil: 4/10 steps (40%)")


def test_a_line_only_once_per_interval():
    out = io.StringIO()
    bar = Lines(1000, "x", file=out, every_s=3600)
    for _ in range(1000):
        bar.update(1)
    assert out.getvalue() == ""  # nothing until the interval passes or the bar closes
    bar.close()
    bar.close()
    assert out.getvalue().count("\n") == 1 and "1000/1000" in out.getvalue()


def test_a_bar_on_a_terminal_and_nothing_when_disabled():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert isinstance(progress(5, file=tty), tqdm)
    os.close(master)
    quiet = progress(5, enabled=False)
    quiet.update(3)
    quiet.close()


def test_a_training_run_logged_to_a_file_has_no_redrawn_frames(tmp_path):
    """The library's trainer with its output captured to a file, as `make models > log` captures it."""
    teacher = write_tiny(tmp_path / "teacher", "bert", "base", seed=1, layers=2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:i + 9]) for i in range(len(WORDS) - 9)) + "\n")
    with open(tmp_path / "log", "w") as log:
        r = subprocess.run([sys.executable, "-m", "training", "distill", f"teacher={teacher}", f"corpus={corpus}",
                            "loss.ce=0", "loss.mlm=0", "max_length=16", "train.max_steps=3", "train.batch_size=4",
                            "train.device=cpu", f"train.out_dir={tmp_path / 'run'}", "train.progress=true"],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=120)
    text = (tmp_path / "log").read_text()
    assert r.returncode == 0, text[-2000:]
    assert "\r" not in text, "carriage-return frames in a captured log"
    assert "run: 3/3 steps (100%)" in text, text[-2000:]
