"""``python -m training compress`` under torchrun: two CPU processes (gloo) train every stage with DDP,
rank 0 alone writes the records, the models, the report and serve.json, and the same command again skips
every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import write_tiny
from tests.training.test_compress import QUICK, ROOT, sentiment_rows, write_tsv


def torchrun_compress(options: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "training", "compress", *[f"{k}={v}" for k, v in options.items()]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_compress_trains_with_ddp_and_rank_0_writes(tmp_path):
    import transformers

    rows = sentiment_rows(120, 3)
    write_tsv(tmp_path / "train.tsv", rows[:80])
    write_tsv(tmp_path / "dev.tsv", rows[80:100])
    write_tsv(tmp_path / "test.tsv", rows[100:])
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64, sharpen=0.3)
    out = tmp_path / "out"
    options = {**QUICK, "teacher": teacher, "train_file": tmp_path / "train.tsv", "dev_file": tmp_path / "dev.tsv",
               "test_file": tmp_path / "test.tsv", "out_dir": out, "baseline": "true", "variants": "false",
               "max_steps": 4, "n_latency": 3}
    r = torchrun_compress(options)
    assert r.returncode == 0, r.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert report["distributed"] == {"world_size": 2, "ddp": True, "backend": "gloo", "batch_per_process": 8}
    assert report["command"].startswith("torchrun --nproc_per_node=2 -m training compress ")
    assert all(report["stages"][s]["ran"] for s in ("student", "baseline", "evaluate"))
    assert {p.name for p in (out / ".stages").iterdir()} == {"student.json", "baseline.json", "evaluate.json"}
    for name in ("student", "baseline"):
        work = out / "work" / name
        for f in (work / "train.log", work / "train.rank1.log"):  # both ranks trained the stage, as one DDP run
            assert "world 2" in f.read_text() and "effective batch 16" in f.read_text()
        digests = [[ln for ln in (work / f).read_text().splitlines() if "weights digest" in ln][-1].split()[-1]
                   for f in ("train.log", "train.rank1.log")]
        assert digests[0] == digests[1]
        assert not list(work.glob("**/checkpoint.pt"))  # published by rank 0
        hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(out / name,
                                                                                   output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert hf.config.id2label == {0: "negative", 1: "positive"}
    serve = json.loads((out / "serve.json").read_text())
    assert {m["name"] for m in serve["models"]} == {"teacher", "student", "baseline"}
    log = (out / "compress.log").read_text()
    assert log.count("compress: torchrun") == 1  # one writer: rank 0
    assert "torchrun: 2 processes (DDP, gloo)" in log
    assert not list(out.glob("*.rank1*"))

    stamp = (out / "student" / "model.safetensors").stat().st_mtime_ns
    again = torchrun_compress(options)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not any(s["ran"] for s in report["stages"].values())
    log = (out / "compress.log").read_text().split("compress: torchrun")[-1]  # the second run's block
    for name in ("student", "baseline", "evaluate"):
        assert f"{name}: skipped" in log
    assert (out / "student" / "model.safetensors").stat().st_mtime_ns == stamp
