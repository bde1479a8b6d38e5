"""``python -m training compress`` end to end on tiny checkpoints and tiny tables: binary, multi-class with
names and ids, sentence pairs, base= (the teacher fine-tuned first), resume, every bad input refused
before training, Hugging Face loading of the outputs, the int8/ONNX variants judged by the budget, and
serve.json (the chosen variants) served by a real ``python -m app``."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

import model
from tests.fixtures import WORDS, tiny_tokenizer, write_tiny
from training.__main__ import main as train_main
from training.augment import perturb, perturbed_copies
from training.compress import run_compress
from training.config import CompressConfig, load_config
from training.tabular import dev_bucket
from training.variants import MAX_ACCURACY_LOSS

ROOT = Path(__file__).resolve().parents[2]
POS, NEG = ["great", "good", "loved", "fine"], ["bad", "terrible", "awful", "hated"]
TOPICS = {"animals": ["cat", "kitten", "dog"], "markets": ["stocks", "market", "fell", "rose"],
          "movies": ["movie", "film", "actor", "plot"]}
FILLER = [w for w in WORDS if w not in POS + NEG + sum(TOPICS.values(), [])]
QUICK = {"epochs": 1, "teacher_epochs": 1, "batch_size": 16, "max_length": 32, "n_latency": 5, "device": "cpu",
         "progress": False, "threads": 1}


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))] + [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        rows.append((" ".join(words), "positive" if label else "negative"))
    return rows


def write_tsv(path: Path, rows, header=("text", "label")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def tiny_classifier(path: Path, labels: list[str], seed: int = 1, layers: int = 4) -> Path:
    """A BERT classifier with these label names (tests.fixtures' tiny size), sharpened to be confident."""
    torch.manual_seed(seed)
    cfg = model.BertConfig(vocab_size=len(tiny_tokenizer().backend.get_vocab()), hidden_size=32, num_layers=layers,
                           num_heads=4, intermediate_size=64, max_position_embeddings=64,
                           id2label=dict(enumerate(labels)))
    m = model.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.save(m, path, tokenizer=tiny_tokenizer())
    return path


def compress(**options) -> dict:
    return run_compress(load_config(CompressConfig, None, [f"{k}={v}" for k, v in {**QUICK, **options}.items()]))


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """One binary run through the command line: teacher=, dev split cut off train_file, a test file, baseline."""
    root = tmp_path_factory.mktemp("compress")
    rows = sentiment_rows(200, 0)
    write_tsv(root / "train.tsv", rows[:160])
    write_tsv(root / "test.tsv", rows[160:])
    write_tiny(root / "teacher", "bert", "classification", seed=1, layers=4, max_pos=64, sharpen=0.3)
    out = root / "out"
    args = {**QUICK, "teacher": root / "teacher", "train_file": root / "train.tsv", "test_file": root / "test.tsv",
            "out_dir": out, "baseline": "true"}
    train_main(["compress", *[f"{k}={v}" for k, v in args.items()]])
    return root, out, rows[:160]


def test_binary_end_to_end_report_and_outputs(binary):
    root, out, train_rows = binary
    report = json.loads((out / "report.json").read_text())
    assert set(report["splits"]) == {"dev", "test"} and set(report["models"]) == {"teacher", "student", "baseline"}
    n_dev = sum(dev_bucket(t) for t, _ in train_rows)
    assert report["data"]["rows"] == {"train": 160 - n_dev, "dev": n_dev, "test": 40}
    for split in ("dev", "test"):
        s = report["splits"][split]["student"]
        assert {"accuracy", "macro_f1", "per_label", "teacher_agreement", "retention"} <= set(s)
        assert set(s["per_label"]) <= {"negative", "positive"}
        assert s["retention"] == pytest.approx(s["accuracy"] / report["splits"][split]["teacher"]["accuracy"])
    models = report["models"]
    assert models["student"]["layers"] == 2 and models["teacher"]["layers"] == 4  # half the teacher's
    assert models["student"]["parameters"] < models["teacher"]["parameters"]
    assert models["student"]["latency_ms_b1"] > 0 and models["student"]["speedup_b1"] > 0
    assert report["recipe"]["alpha"] == 1.0 and report["recipe"]["perturbed"] == 0.5
    assert report["recipe"]["alpha_embed"] == 1.0 and report["recipe"]["lr"] == 1e-4
    assert report["data"]["extra_text"]["perturbed_copies"] == round(0.5 * (160 - n_dev))
    assert report["wall_time_s"] > 0 and all(v["ran"] for v in report["stages"].values())
    for name in ("report.md", "accuracy_latency.png", "compress.log", "student/README.md"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| student |" in md and "retention" in md
    log = (out / "compress.log").read_text()
    assert "sha1(text) mod 10 == 0" in log and "student: 2 layers" in log
    serve = json.loads((out / "serve.json").read_text())
    roles = {m["name"]: (m["role"], m["task"]) for m in serve["models"]}
    assert roles == {"student": ("student", "classify"), "teacher": ("teacher", "classify"),
                     "baseline": ("other", "classify")}
    assert not (out / "teacher").exists()  # teacher= is served from where it is
    saved = json.loads((out / "student" / "training_config.json").read_text())
    assert saved["alpha"] == 1.0 and saved["alpha_embed"] == 1.0 and saved["embed_reference"]


def test_variants_are_judged_by_the_budget_and_the_chosen_one_is_served(binary):
    from app.settings import load_settings
    from model.checkpoint import file_sha256

    root, out, _ = binary
    report = json.loads((out / "report.json").read_text())
    v = report["variants"]
    assert report["stages"]["variants"]["ran"] and v["split"] == "test" and v["n"] == 40  # the headline split, whole
    assert v["budget"] == {"max_accuracy_loss": MAX_ACCURACY_LOSS} == {"max_accuracy_loss": 0.01}
    serve = {m["name"]: m for m in json.loads((out / "serve.json").read_text())["models"]}
    for name in ("teacher", "student"):
        rows = v["models"][name]
        assert list(rows) == ["torch fp32", "torch int8", "onnx fp32", "onnx int8"] and not v["skipped"][name]
        for r in rows.values():
            assert 0 <= r["agreement_with_fp32"] <= 1 and 0 <= r["accuracy"] <= 1 and r["latency_ms_b1"] > 0
        fp32 = rows["torch fp32"]
        assert fp32["agreement_with_fp32"] == 1.0 and fp32["max_abs_logit_diff"] == 0.0 and fp32["within_budget"]
        assert fp32["accuracy"] == pytest.approx(report["splits"]["test"][name]["accuracy"])  # evaluate's number
        assert rows["onnx fp32"]["max_abs_logit_diff"] <= 1e-4  # ONNX Runtime computes what torch does
        for r in rows.values():
            assert r["within_budget"] == (fp32["accuracy"] - r["accuracy"] <= MAX_ACCURACY_LOSS + 1e-12)
        chosen = rows[v["chosen"][name]]
        assert chosen["within_budget"]
        assert chosen["latency_ms_b1"] == min(r["latency_ms_b1"] for r in rows.values() if r["within_budget"])
        entry = serve[name]
        assert (entry["backend"], entry["precision"]) == (chosen["backend"], chosen["precision"])
        if chosen["backend"] == "onnx":  # the digest the service checks: the export's that was measured
            assert entry["sha256"] == chosen["sha256"] == file_sha256(Path(chosen["export"]))
        else:
            assert "sha256" not in entry
    assert "backend" not in serve["baseline"]  # not measured: served as it always was
    settings = load_settings(out / "serve.json")  # what `python -m app --config out/serve.json` loads
    assert {m.name: (m.backend, m.precision) for m in settings.models if m.name != "baseline"} == {
        n: tuple(v["chosen"][n].split()) for n in ("teacher", "student")}
    md = (out / "report.md").read_text()
    assert "## Served variants (test, 40 rows)" in md and md.count("**(served)**") == 2
    assert "variants: teacher serves" in (out / "compress.log").read_text()


def test_the_onnx_fp32_variant_computes_torch_fp32s_logits(binary):
    from training import variants

    root, out, rows = binary
    for path in (root / "teacher", out / "student"):
        found, skipped = variants.load(path, token_types=False)
        by_name = {x.name: x for x in found}
        assert not skipped and list(by_name) == ["torch fp32", "torch int8", "onnx fp32", "onnx int8"]
        tok = model.Tokenizer.from_dir(path)
        ids = tok.tokenize_ids([t for t, _ in rows[:6]])
        torch_fp32 = variants.logits(by_name["torch fp32"].forward(), ids, None, tok.pad_id, 32)
        onnx_fp32 = variants.logits(by_name["onnx fp32"].forward(), ids, None, tok.pad_id, 32)
        x, mask = tok.pad(ids, 32).input_ids, tok.pad(ids, 32).attention_mask
        with torch.no_grad():
            assert torch.allclose(torch_fp32, model.load(path)(x, mask), atol=1e-6)  # our module as it is
        assert torch_fp32.shape == (6, 2) and (onnx_fp32 - torch_fp32).abs().max() <= 1e-4


def test_outputs_load_in_transformers_with_our_logits(binary):
    import transformers

    _, out, rows = binary
    for name in ("student", "baseline"):
        ours = model.load(out / name)
        hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(out / name,
                                                                                   output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert hf.config.id2label == {0: "negative", 1: "positive"}
        tok = transformers.AutoTokenizer.from_pretrained(out / name)
        batch = tok([t for t, _ in rows[:4]], padding=True, return_tensors="pt")
        with torch.no_grad():
            theirs = hf.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            mine = ours(batch["input_ids"], batch["attention_mask"])
        assert (theirs - mine).abs().max() < 1e-5


def test_perturb_is_make_models_perturbation_byte_for_byte():
    """make models' stored runs (the ablation's) were scored on these copies: their bytes are pinned by the
    digest of the outputs the copy in experiments/datasets.py gave before the two became one."""
    texts = [f"w{i} " * (i % 17 + 1) + "the end of a sentence here" for i in range(200)]
    texts += ["a b", "one", "  spaced   out words here  "]
    h = hashlib.sha256()
    for seed in range(5):
        rng = random.Random(seed)
        for t in texts:
            h.update(perturb(t, rng).encode() + b"\n")
    assert h.hexdigest() == "2144a02b6237b378cb0435b083deec94552c136c92e4c99fd13c37d5baf67fc2"
    # make models' selection (experiments.pipeline.unlabeled_for): a seeded half, then one copy each
    rng = random.Random(7)
    picked = rng.sample(range(len(texts)), round(0.5 * len(texts)))
    assert perturbed_copies(texts, 0.5, 7)[0] == [perturb(texts[i], rng) for i in picked]


def test_multiclass_names_and_ids_with_a_budget(tmp_path):
    rng = random.Random(1)
    names = sorted(TOPICS)
    rows = []
    for i in range(150):
        label = names[i % 3]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))] + rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "topic": label})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:120]))
    # the dev file gives labels as the teacher's integer ids
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"text": r["text"], "topic": names.index(r["topic"])})
                                                + "\n" for r in rows[120:]))
    teacher = tiny_classifier(tmp_path / "teacher", names)
    report = compress(teacher=teacher, train_file=tmp_path / "train.jsonl", dev_file=tmp_path / "dev.jsonl",
                      label_column="topic", out_dir=tmp_path / "out", budget_minutes=0.0005)
    assert report["labels"] == {"0": "animals", "1": "markets", "2": "movies"}
    assert model.load(tmp_path / "out" / "student").config.id2label == dict(enumerate(names))
    assert report["splits"]["dev"]["teacher"]["n"] == 30
    budget = report["budget"]
    assert budget["scale"] < 1 and budget["steps"]["student"] >= 1 and budget["probe"]["s_per_step_student"] > 0
    assert "budget 0.0005 min" in (tmp_path / "out" / "compress.log").read_text()


def test_sentence_pairs_reach_the_teacher_with_token_types(tmp_path):
    import transformers

    rng = random.Random(2)
    rows = []
    for i in range(120):
        same = i % 2
        a = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POS)]
        b = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POS if same else NEG)]
        rows.append((" ".join(a), " ".join(b), "same" if same else "different"))
    write_tsv(tmp_path / "train.tsv", rows[:100], ("premise", "hypothesis", "label"))
    write_tsv(tmp_path / "dev.tsv", rows[100:], ("premise", "hypothesis", "label"))
    teacher = tiny_classifier(tmp_path / "teacher", ["different", "same"])
    with torch.no_grad():  # make the segment embedding matter: its rows far apart
        m = model.load(teacher)
        m.encoder.embeddings.token_type.weight[1] += 2.0
        model.save(m, teacher, tokenizer=tiny_tokenizer())
    report = compress(teacher=teacher, train_file=tmp_path / "train.tsv", dev_file=tmp_path / "dev.tsv",
                      text_column="premise", text_pair_column="hypothesis", out_dir=tmp_path / "out")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    tok = transformers.AutoTokenizer.from_pretrained(teacher)
    dev = rows[100:]
    batch = tok([a for a, _, _ in dev], [b for _, b, _ in dev], padding=True, return_tensors="pt")
    assert batch["token_type_ids"].max() == 1
    with torch.no_grad():
        pred = hf(**batch).logits.argmax(-1).tolist()
        no_types = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1).tolist()
    gold = [hf.config.label2id[y] for _, _, y in dev]
    accuracy = sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)
    assert pred != no_types  # the test can tell the two apart
    assert report["splits"]["dev"]["teacher"]["accuracy"] == pytest.approx(accuracy)
    # The service takes pairs as /classify inputs [text, text_pair] (tests/app): serve.json needs no caveat.
    assert report["data"]["sentence_pairs"] and not report["warnings"]
    # ...except on ONNX, whose graph takes no token type ids: the BERT teacher has no ONNX variant, and says
    # why; the DistilBERT student reads none, so it has all four.
    v = report["variants"]
    assert list(v["models"]["teacher"]) == ["torch fp32", "torch int8"]
    assert set(v["skipped"]["teacher"]) == {"onnx fp32", "onnx int8"}
    assert all("token type ids" in why for why in v["skipped"]["teacher"].values())
    assert list(v["models"]["student"]) == ["torch fp32", "torch int8", "onnx fp32", "onnx int8"]
    serve = {m["name"]: m for m in json.loads((tmp_path / "out" / "serve.json").read_text())["models"]}
    assert serve["teacher"]["backend"] == "torch"
    assert "teacher onnx fp32: not measured: the ONNX export takes" in (tmp_path / "out" / "report.md").read_text()


def test_a_distilbert_teacher_saved_by_transformers(tmp_path):
    import transformers

    ours = write_tiny(tmp_path / "ours", "distilbert", "classification", seed=3, layers=4, max_pos=64, sharpen=0.3)
    teacher = tmp_path / "teacher"
    transformers.AutoModelForSequenceClassification.from_pretrained(ours).save_pretrained(teacher)
    transformers.AutoTokenizer.from_pretrained(ours).save_pretrained(teacher)
    write_tsv(tmp_path / "train.tsv", sentiment_rows(100, 8))
    report = compress(teacher=teacher, train_file=tmp_path / "train.tsv", out_dir=tmp_path / "out")
    student = model.load(tmp_path / "out" / "student")
    assert student.config.family == "distilbert" and student.config.num_layers == 2
    assert report["models"]["teacher"]["family"] == "distilbert"


def test_the_command_line_prints_an_input_error_without_a_traceback(tmp_path, capsys):
    write_tsv(tmp_path / "train.tsv", sentiment_rows(20, 9), ("sentence", "label"))
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64)
    with pytest.raises(SystemExit) as e:
        train_main(["compress", f"teacher={teacher}", f"train_file={tmp_path / 'train.tsv'}",
                    f"out_dir={tmp_path / 'out'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "compress: error:" in err and "has no column 'text'" in err and "text_column=" in err
    assert "Traceback" not in err


def test_base_fine_tunes_a_teacher_first(tmp_path):
    rows = sentiment_rows(120, 4)
    with (tmp_path / "train.csv").open("w", newline="") as f:  # a comma-separated file, quoted where needed
        csv.writer(f).writerows([("text", "label"), *rows])
    base = write_tiny(tmp_path / "base", "bert", "base", seed=1, layers=4, max_pos=64, pooling="mean")
    report = compress(base=base, train_file=tmp_path / "train.csv", out_dir=tmp_path / "out", student_layers=1)
    import transformers

    teacher = model.load(tmp_path / "out" / "teacher")
    assert teacher.task == "classification" and teacher.config.id2label == {0: "negative", 1: "positive"}
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "teacher").eval()
    ids = torch.randint(5, 40, (2, 9))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - teacher(ids)).abs().max() < 1e-5
    assert report["fine_tuned_teacher"] and report["stages"]["teacher"]["ran"]
    assert model.load(tmp_path / "out" / "student").config.num_layers == 1
    assert list((tmp_path / "out" / "work" / "teacher").glob("lr*/train.log"))
    serve = json.loads((tmp_path / "out" / "serve.json").read_text())
    assert {m["name"]: m["path"] for m in serve["models"]}["teacher"] == str((tmp_path / "out" / "teacher").resolve())


def test_resume_skips_finished_stages_and_reruns_on_new_data(tmp_path):
    rows = sentiment_rows(100, 5)
    train = write_tsv(tmp_path / "train.tsv", rows)
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64, sharpen=0.3)
    args = {"teacher": teacher, "train_file": train, "out_dir": tmp_path / "out"}
    first = compress(**args)
    weights = tmp_path / "out" / "student" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = compress(**args)
    assert not any(s["ran"] for s in again["stages"].values())
    assert weights.stat().st_mtime_ns == stamp and again["splits"] == first["splits"]
    assert "student: skipped" in (tmp_path / "out" / "compress.log").read_text()
    write_tsv(train, rows + [("a new film that i loved", "positive")])  # same name, new content
    third = compress(**args)
    assert third["stages"]["student"]["ran"] and third["stages"]["evaluate"]["ran"]
    assert weights.stat().st_mtime_ns != stamp


def test_a_stage_stopped_after_its_checkpoint_continues_from_it(tmp_path, monkeypatch):
    from training import compress as compress_module

    write_tsv(tmp_path / "train.tsv", sentiment_rows(80, 10))
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64, sharpen=0.3)
    args = {"teacher": teacher, "train_file": tmp_path / "train.tsv", "out_dir": tmp_path / "out"}
    publish = compress_module.Run.publish

    def stopped(self, name):
        raise KeyboardInterrupt  # as Ctrl-C after the student's last checkpoint, before it is published

    monkeypatch.setattr(compress_module.Run, "publish", stopped)
    with pytest.raises(KeyboardInterrupt):
        compress(**args)
    assert (tmp_path / "out" / "work" / "student" / "checkpoint.pt").is_file()
    monkeypatch.setattr(compress_module.Run, "publish", publish)
    report = compress(**args)
    assert report["stages"]["student"]["ran"]
    assert "resumed from" in (tmp_path / "out" / "work" / "student" / "train.log").read_text()
    assert "continuing the stopped run" in (tmp_path / "out" / "compress.log").read_text()
    assert not (tmp_path / "out" / "work" / "student" / "checkpoint.pt").exists()  # published: no optimizer state


BAD = {
    "empty file": ({"train.tsv": "text\tlabel\n"}, {}, "has no rows"),
    "missing column": ({"train.tsv": "sentence\tlabel\nthe cat\tpositive\n"}, {}, "has no column 'text'"),
    "single label": ({"train.tsv": "text\tlabel\n" + "the cat\tpositive\nthe dog\tpositive\n"}, {},
                     "1 distinct value"),
    "dev labels the training data lacks": (
        {"dev.tsv": "text\tlabel\nthe cat\tneutral\n"}, {"dev_file": "dev.tsv"}, r"\['neutral'\] never occur"),
    "teacher without a classification head": ({}, {"teacher": "base"}, "has no classification head"),
    "labels that disagree with the teacher": (
        {"train.tsv": "text\tlabel\n" + "".join(f"the cat {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(40))},
        {}, r"\['no', 'yes'\] are not the teacher's"),
    "texts all longer than max_length": ({}, {"max_length": 4}, "all .* texts are longer than max_length=4"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_training(case, tmp_path):
    files, options, message = BAD[case]
    good = sentiment_rows(60, 6)
    write_tsv(tmp_path / "train.tsv", good)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64)
    write_tiny(tmp_path / "base", "bert", "base", seed=1, layers=2, max_pos=64)
    args = {"teacher": tmp_path / "teacher", "train_file": tmp_path / "train.tsv", "out_dir": tmp_path / "out"}
    args |= {k: tmp_path / v if k in ("teacher", "dev_file") else v for k, v in options.items()}
    with pytest.raises(ValueError, match=message):
        compress(**args)
    assert not (tmp_path / "out" / "work").exists() and not (tmp_path / "out" / ".stages").exists()
    assert "nothing trained" in (tmp_path / "out" / "compress.log").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_json_serves_teacher_and_student_side_by_side(binary, tmp_path):
    _, out, _ = binary
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTIL_")} | {"DISTIL_DEVICE": "cpu"}
    log = tmp_path / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--config", str(out / "serve.json"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in 90 s:\n" + log.read_text()[-3000:]
            time.sleep(0.1)
        r = httpx.post(f"{base}/compare", json={"inputs": ["the movie was great", "an awful plot"],
                                                "task": "classify"}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["teacher"]["model"] == "teacher" and body["student"]["model"] == "student"
        assert 0 <= body["label_agreement"] <= 1 and len(body["student"]["predictions"]) == 2
        assert {p["label"] for p in body["student"]["predictions"][0]} == {"negative", "positive"}
        chosen = json.loads((out / "report.json").read_text())["variants"]["chosen"]
        served = {m["name"]: f"{m['backend']} {m['precision']}" for m in httpx.get(f"{base}/info").json()["models"]}
        assert {n: served[n] for n in chosen} == chosen  # each as the variant the budget chose
    finally:
        proc.kill()
        proc.wait(30)


# -- hyperparameters fitted to the data -------------------------------------------------------------------
def test_class_weights_balance_rare_labels_and_keep_the_mean_weight_at_one():
    from training.compress import class_weights

    labels = [0] * 90 + [1] * 10  # 9x: unbalanced
    for mode, power in (("balanced", 1.0), ("sqrt", 0.5), ("auto", 0.5)):
        w = class_weights(labels, 2, mode)
        assert sum(w[y] for y in labels) / len(labels) == pytest.approx(1.0, abs=1e-5)
        assert w[1] / w[0] == pytest.approx(9.0 ** power, rel=1e-4)
    assert class_weights(labels, 2, "none") is None
    assert class_weights([0] * 55 + [1] * 45, 2, "auto") is None  # balanced enough: plain cross-entropy
    assert class_weights([0] * 5 + [2] * 5, 3, "balanced") == [1.0, 0.0, 1.0]  # a label with no rows: weight 0


def test_epochs_grow_on_small_data_within_bounds():
    from training.compress import fit_epochs

    assert fit_epochs(3200, 32, 300, (3, 10)) == 3  # 100 steps an epoch
    assert fit_epochs(640, 32, 300, (3, 10)) == 10  # 20 steps an epoch: capped
    assert fit_epochs(1600, 32, 300, (3, 10)) == 6
    assert fit_epochs(100_000, 32, 300, (3, 10)) == 3


def test_selection_keeps_the_best_dev_score_and_the_earliest_of_ties():
    from training.compress import eval_points, pick_best

    evals = [{"step": 10, "accuracy": 0.90, "macro_f1": 0.60}, {"step": 20, "accuracy": 0.88, "macro_f1": 0.80},
             {"step": 30, "accuracy": 0.91, "macro_f1": 0.78}, {"step": 40, "accuracy": 0.91, "macro_f1": 0.78}]
    assert pick_best(evals)["step"] == 30  # a dropped rare label (macro-F1 0.60) loses despite its accuracy
    assert eval_points(30, 10) == [10, 20, 30] and eval_points(25, 10) == [10, 20, 25] and eval_points(5, 10) == [5]


def test_the_teacher_sweep_keeps_its_best_run_and_the_baseline_gets_the_students_steps(tmp_path):
    rng = random.Random(11)
    names = sorted(TOPICS)
    rows = []
    for i in range(200):
        label = names[0] if i % 8 == 0 else names[1 + i % 2]  # animals rare (1 in 8)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))] + rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    write_tsv(tmp_path / "train.tsv", rows[:160])
    write_tsv(tmp_path / "dev.tsv", rows[160:])
    base = write_tiny(tmp_path / "base", "bert", "base", seed=1, layers=2, max_pos=64, pooling="mean")
    report = compress(base=base, train_file=tmp_path / "train.tsv", dev_file=tmp_path / "dev.tsv",
                      out_dir=tmp_path / "out", baseline="true", teacher_epochs=2, epochs=2,
                      teacher_lrs="[1e-5, 3e-3]")
    sel = report["selection"]
    t = sel["teacher"]
    assert [c["lr"] for c in t["candidates"]] == [1e-5, 3e-3]
    # successive halving: each rate's first epoch, then the best of those on to the end, every epoch on dev
    first = [c["evaluated"][0] for c in t["candidates"]]
    survivor = t["candidates"][max(range(2), key=lambda i: first[i]["accuracy"] + first[i]["macro_f1"])]
    assert sorted(len(c["evaluated"]) for c in t["candidates"]) == [1, 2] and len(survivor["evaluated"]) == 2
    best = max((c for c in t["candidates"]), key=lambda c: c["kept"]["accuracy"] + c["kept"]["macro_f1"])
    assert t["lr"] == best["lr"] and report["recipe"]["teacher_lr"] == best["lr"]
    assert report["stages"]["teacher"]["ran"] and t["steps_each"] == first[0]["step"] < t["steps_kept_run"]
    assert t["class_weights"] and t["class_weights"][0] > t["class_weights"][1]  # the rare label weighs more
    # the teacher published is the kept epoch of the kept run: its dev scores are the report's
    assert report["splits"]["dev"]["teacher"]["accuracy"] == pytest.approx(t["dev"]["accuracy"])
    # the baseline trains as many optimizer steps as the student, on fewer texts: more epochs
    assert sel["baseline"]["steps"] == sel["student"]["steps"] == sel["student"]["evaluated"][-1]["step"]
    assert sel["baseline"]["evaluated"][-1]["epoch"] > sel["student"]["evaluated"][-1]["epoch"]
    saved = json.loads((tmp_path / "out" / "baseline" / "training_config.json").read_text())
    assert saved["class_weights"] == t["class_weights"] and saved["train"]["max_steps"] == sel["student"]["steps"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Chosen on dev" in md and "| teacher (kept) |" in md
    assert not list((tmp_path / "out" / "work").glob("**/checkpoint.pt"))


def test_variants_false_measures_none_and_serves_the_service_default(tmp_path):
    write_tsv(tmp_path / "train.tsv", sentiment_rows(60, 13))
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64)
    report = compress(teacher=teacher, train_file=tmp_path / "train.tsv", out_dir=tmp_path / "out", variants="false")
    assert report["variants"] is None and "variants" not in report["stages"]
    serve = json.loads((tmp_path / "out" / "serve.json").read_text())
    assert "device" not in serve and not any("backend" in m for m in serve["models"])
    assert not (teacher / "onnx").exists() and "Served variants" not in (tmp_path / "out" / "report.md").read_text()


def test_epochs_left_to_the_data_are_filled_in(tmp_path):
    write_tsv(tmp_path / "train.tsv", sentiment_rows(100, 12))
    teacher = write_tiny(tmp_path / "teacher", "bert", "classification", seed=1, layers=2, max_pos=64, sharpen=0.3)
    report = compress(teacher=teacher, train_file=tmp_path / "train.tsv", out_dir=tmp_path / "out", epochs="none",
                      max_steps=3)
    from training.compress import STUDENT_EPOCHS

    assert report["recipe"]["epochs"] == STUDENT_EPOCHS[1]  # ~135 texts: the most epochs
    assert report["selection"]["student"]["steps"] == 3  # max_steps caps them
