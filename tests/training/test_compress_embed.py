"""``python -m training compress task=embed`` on a tiny sentence-embedding teacher: the student is
distilled, loads in ``transformers``, is measured per domain on held-out text the run never trained on,
reruns only when its inputs change, refuses bad input before training, and its serve.json serves
teacher and student side by side in a real ``python -m app``."""

from __future__ import annotations

import csv
import json
import random

import httpx
import pytest
import torch

import model
from tests.app.hardening_support import serve_process
from tests.fixtures import WORDS, write_tiny
from training.__main__ import main as train_main
from training.compress_embed import EmbedCompressConfig, agreement, layer_map, read_corpus, run_compress_embed
from training.tabular import InputError, dev_bucket

QUICK = {"steps": 6, "batch_size": 8, "max_length": 24, "n_latency": 3, "device": "cpu", "progress": False,
         "threads": 1, "amp": "off"}


def sentences(n: int, seed: int, words: tuple[str, ...] = tuple(WORDS)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("t") / "embedder", "bert", "base", seed=3, layers=3, pooling="mean",
                      sharpen=0.05)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A table of two domains (different halves of the vocabulary)."""
    words = list(WORDS)
    path = tmp_path_factory.mktemp("c") / "corpus.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "source"])
        for d, half in (("news", tuple(words[: len(words) // 2])), ("reviews", tuple(words[len(words) // 2:]))):
            for s in dict.fromkeys(sentences(240, {"news": 1, "reviews": 2}[d], half)):
                w.writerow([s, d])
    return path


def test_layer_map_keeps_the_first_and_last_layers():
    assert layer_map(6, 5) == [0, 2, 3, 4, 5]  # make models' embedder
    assert layer_map(6, 6) == list(range(6))
    for teacher_layers, n in ((6, 3), (12, 6), (12, 10), (4, 2), (3, 2)):
        kept = layer_map(teacher_layers, n)
        assert len(kept) == n and kept == sorted(set(kept)), kept
        assert kept[0] == 0 and kept[-1] == teacher_layers - 1, kept
    assert layer_map(6, 1) == [5]
    with pytest.raises(InputError, match="student_layers=7"):
        layer_map(6, 7)


def test_agreement_counts_shared_nearest_neighbours():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    same = agreement(a, a)
    assert same["top1_agreement"] == 1.0 and abs(same["mean_cosine"] - 1) < 1e-6
    shuffled = agreement(a, a[torch.randperm(50)])
    assert shuffled["top1_agreement"] < 0.3 and shuffled["mean_cosine"] < 0.5


def test_embed_end_to_end_per_domain_resume_and_serving(teacher, corpus, tmp_path):
    out = tmp_path / "out"
    train_main(["compress", "task=embed", f"teacher={teacher}", f"corpus={corpus}", f"out_dir={out}",
                "domain_column=source", *(f"{k}={v}" for k, v in QUICK.items())])
    report = json.loads((out / "report.json").read_text())
    assert set(report["domains"]) == {"news", "reviews"}
    rows = list(csv.DictReader(corpus.open()))
    for d, m in report["domains"].items():
        held = [r["text"] for r in rows if r["source"] == d and dev_bucket(r["text"])]
        assert m["n"] == len(held) > 2, (d, m)
        assert 0 <= m["top1_agreement"] <= 1 and -1 <= m["mean_cosine"] <= 1
    # No held-out text was trained on.
    trained = set((out / "work" / "corpus.txt").read_text().splitlines())
    assert not trained & {r["text"] for r in rows if dev_bucket(r["text"])}
    assert report["models"]["student"]["layers"] == 2 == round(3 * 5 / 6)
    assert (out / "report.md").read_text().count("| news |") == 1 and (out / "agreement.png").is_file()
    # The student is a Hugging Face model with the teacher's pooling config, and equals ours.
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModel.from_pretrained(out / "student").eval()
    ours = model.load(out / "student", head="base")
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        diff = (hf(input_ids=ids).last_hidden_state - ours(ids, torch.ones_like(ids))).abs().max().item()
    assert diff < 1e-5, diff
    assert json.loads((out / "student" / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    # Its own numbers, recomputed here from the two folders.
    news = [r["text"] for r in rows if r["source"] == "news" and dev_bucket(r["text"])]

    def emb(folder):
        m, tok = model.load(folder, head="base"), model.Tokenizer.from_dir(folder)
        from training.data import collate

        x, mask = collate(tok.tokenize_ids(news), tok.pad_id, QUICK["max_length"])
        with torch.no_grad():
            return torch.nn.functional.normalize(model.mean_pool(m(x, mask), mask), dim=-1)

    s, t = emb(out / "student"), emb(teacher)
    assert abs((s * t).sum(-1).mean().item() - report["domains"]["news"]["mean_cosine"]) < 1e-4
    # A rerun on the same bytes skips the student; new bytes retrain it.
    weights = (out / "student" / "model.safetensors").stat().st_mtime_ns
    run_compress_embed(EmbedCompressConfig(teacher=str(teacher), corpus=str(corpus), out_dir=str(out),
                                           domain_column="source", **QUICK))
    assert (out / "student" / "model.safetensors").stat().st_mtime_ns == weights
    assert "student: skipped" in (out / "compress.log").read_text()
    changed = tmp_path / "corpus2.csv"
    changed.write_text(corpus.read_text() + "the movie was fine,news\n")
    run_compress_embed(EmbedCompressConfig(teacher=str(teacher), corpus=str(changed), out_dir=str(out),
                                           domain_column="source", **QUICK))
    assert (out / "student" / "model.safetensors").stat().st_mtime_ns != weights
    # serve.json: both embedders side by side, /compare task=embed answers.
    models = json.loads((out / "serve.json").read_text())["models"]
    with serve_process(tmp_path, models) as p:
        r = httpx.post(f"{p.base}/compare", json={"inputs": ["the movie was great", "stocks fell"], "task": "embed"},
                       timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["student"]["model"] == "student_embedder" and body["teacher"]["model"] == "teacher_embedder"
        assert len(body["cosine"]) == 2


def test_a_text_file_and_a_test_file(teacher, tmp_path):
    lines = sentences(200, 7)
    corpus, test = tmp_path / "c.txt", tmp_path / "t.txt"
    corpus.write_text("\n".join(lines) + "\n")
    test.write_text("\n".join(lines[:30] + sentences(20, 8)) + "\n")
    cfg = EmbedCompressConfig(teacher=str(teacher), corpus=str(corpus), test_file=str(test),
                              out_dir=str(tmp_path / "o"), **QUICK)
    c = read_corpus(cfg)
    assert set(c.heldout) == {"all"} and len(c.heldout["all"]) == 50
    assert not set(c.train) & set(lines[:30]) and len(c.train) == len(set(lines) - set(lines[:30]))
    report = run_compress_embed(cfg)
    assert report["domains"]["all"]["n"] == 50


@pytest.mark.parametrize(("change", "message"), [
    ({"corpus": "missing.txt"}, "corpus=.*no such file"),
    ({"corpus": "empty.txt"}, "has no text"),
    ({"domain_column": "source"}, "domain_column= needs a .csv"),
    ({"corpus": "tiny.txt"}, "fewer than 2 texts"),
    ({"teacher": "."}, "not a Hugging Face model folder"),
    ({"student_layers": 9}, "student_layers=9"),
])
def test_bad_input_is_refused_before_training(teacher, tmp_path, change, message):
    (tmp_path / "c.txt").write_text("\n".join(sentences(60, 1)) + "\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "tiny.txt").write_text("one text only\n")
    values = {"teacher": str(teacher), "corpus": "c.txt", "out_dir": str(tmp_path / "o"), **QUICK, **change}
    values = {k: (str(tmp_path / v) if k == "corpus" else v) for k, v in values.items()}
    with pytest.raises(InputError, match=message):
        run_compress_embed(EmbedCompressConfig(**values))
    assert not (tmp_path / "o" / "student").exists()
