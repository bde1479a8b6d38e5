"""The commands end to end on tiny models: distillation helps, resume is exact, DDP agrees,
exports load in our code and in transformers."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model
from tests.fixtures import WORDS, write_tiny
from training import distill_task
from training.__main__ import main as train_main
from training.config import DistillConfig, load_config
from training.distill import run_distill
from training.trainer import CheckpointRefused

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(400)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    pos, neg = ["great", "good", "loved", "fine"], ["bad", "terrible", "awful", "hated"]
    rows = []
    for i in range(240):
        label = i % 2
        filler = [w for w in WORDS if w not in pos + neg]
        words = [rng.choice(filler) for _ in range(rng.randint(3, 12))] + [rng.choice(pos if label else neg)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)}\t{'positive' if label else 'negative'}")
    (root / "train.tsv").write_text("text\tlabel\n" + "\n".join(rows[:200]) + "\n")
    (root / "dev.tsv").write_text("text\tlabel\n" + "\n".join(rows[200:]) + "\n")
    write_tiny(root / "teacher_mlm", "bert", "mlm", seed=1, layers=4, max_pos=64, sharpen=0.3)
    write_tiny(root / "teacher_base", "bert", "base", seed=1, layers=4, max_pos=64, pooling="mean")
    return root


def _distill_args(a: Path, out: Path, **extra) -> list[str]:
    args = {"teacher": a / "teacher_mlm", "corpus": a / "corpus.txt", "max_length": 32,
            "train.out_dir": out, "train.batch_size": 16, "train.max_steps": 30, "train.lr": 3e-3,
            "train.log_every": 5, "train.save_every": 10, "train.progress": "false", "train.device": "cpu",
            "train.warmup_fraction": 0.0}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items()]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_distill_lowers_losses_and_moves_student_toward_teacher(assets, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(DistillConfig, None, _distill_args(assets, out, **{"train.max_steps": 60}))
    from training.distill import distill_agreement
    from training.init import init_student

    teacher = model.load(assets / "teacher_mlm")
    tok = model.Tokenizer.from_dir(assets / "teacher_mlm")
    held = [tok.tokenize_ids([ln])[0] for ln in (assets / "corpus.txt").read_text().splitlines()[:64]]
    before = distill_agreement(init_student(teacher, "mlm"), teacher, held, 0, 32, 16)
    run_distill(cfg)
    hist = [m for m in _metrics(out) if "loss" in m]
    first, last = hist[0], hist[-1]
    assert last["loss_ce"] < first["loss_ce"] and last["loss_cos"] < first["loss_cos"]
    after = distill_agreement(model.load(out / "final"), teacher, held, 0, 32, 16)
    assert after["token_cosine"] > before["token_cosine"]
    assert "token_cosine" in [m for m in _metrics(out) if "eval" in m][-1]["eval"]
    log = (out / "train.log").read_text()
    assert "step 60/60" in log and "eval at step 60" in log
    assert (out / "checkpoint.pt").is_file()


def test_export_loads_in_our_code_and_transformers(assets, tmp_path):
    import transformers

    out = tmp_path / "run"
    train_main(["distill", *_distill_args(assets, out, **{"train.max_steps": 4})])
    final = out / "final"
    ours = model.load(final)
    assert type(ours).__name__ == "DistilBertForMaskedLM"
    hf, info = transformers.AutoModelForMaskedLM.from_pretrained(final, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.randint(5, 60, (2, 10))
    with torch.no_grad():
        assert (hf.eval()(input_ids=ids).logits - ours(ids)).abs().max() < 1e-5
    tok = transformers.AutoTokenizer.from_pretrained(final)
    assert tok("the cat")["input_ids"] == model.Tokenizer.from_dir(final).tokenize_ids(["the cat"])[0]
    saved = json.loads((final / "training_config.json").read_text())
    assert saved["loss"]["ce"] == 5.0 and saved["loss"]["temperature"] == 2.0


def test_teacher_without_mlm_head_rejects_ce_and_mlm(assets, tmp_path):
    cfg = load_config(DistillConfig, None, _distill_args(assets, tmp_path, teacher=assets / "teacher_base"))
    with pytest.raises(ValueError, match="loss.ce=5.0 needs a teacher with an MLM head"):
        run_distill(cfg)
    cfg = load_config(DistillConfig, None, _distill_args(
        assets, tmp_path / "ok", teacher=assets / "teacher_base",
        **{"loss.ce": 0, "loss.mlm": 0, "loss.pooled_mse": 1, "train.max_steps": 3}))
    run_distill(cfg)
    assert type(model.load(tmp_path / "ok" / "final")).__name__ == "DistilBertModel"
    assert model.read_pooling(tmp_path / "ok" / "final") == "mean"


def test_kill_and_resume_equals_uninterrupted(assets, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = _distill_args(assets, tmp_path / "full", **{"train.max_steps": 40, "train.save_every": 2,
                                                       "train.threads": 1})
    cmd = [sys.executable, "-m", "training", "distill"]
    subprocess.run([*cmd, *args], cwd=ROOT, env=env, check=True, capture_output=True)

    cut = tmp_path / "cut"
    args_cut = [a.replace(str(tmp_path / "full"), str(cut)) for a in args]
    proc = subprocess.Popen([*cmd, *args_cut], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (cut / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
    proc.wait()
    killed_at = torch.load(cut / "checkpoint.pt", weights_only=True)["state"]["step"]
    assert killed_at < 40, "the run finished before it could be killed"
    assert not (cut / "final").exists()
    subprocess.run([*cmd, *args_cut, "train.resume=true"], cwd=ROOT, env=env, check=True, capture_output=True)
    a, b = load_file(tmp_path / "full" / "final" / "model.safetensors"), load_file(cut / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert f"resumed from {cut / 'checkpoint.pt'} at step {killed_at}" in (cut / "train.log").read_text()


def _checkpointed_run(assets, out: Path) -> tuple[DistillConfig, Path]:
    cfg = load_config(DistillConfig, None, _distill_args(assets, out, **{"train.max_steps": 4, "train.save_every": 2}))
    run_distill(cfg)
    return cfg, out / "checkpoint.pt"


def test_resume_refuses_a_checkpoint_that_carries_code(assets, tmp_path):
    cfg, ck = _checkpointed_run(assets, tmp_path / "run")
    saved = torch.load(ck, weights_only=True)
    marker = tmp_path / "payload-ran"

    class Payload:  # what a tampered checkpoint smuggles in: code that runs when unpickled
        def __reduce__(self):
            return (Path.touch, (marker,))

    saved["state"]["history"].append(Payload())
    torch.save(saved, ck)
    with pytest.raises(CheckpointRefused, match="holds more than tensors and plain data"):
        run_distill(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True)))
    assert not marker.exists()


def test_resume_refuses_another_configuration_naming_the_keys(assets, tmp_path):
    cfg, ck = _checkpointed_run(assets, tmp_path / "run")
    changed = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, cos=2.0),
                                  train=dataclasses.replace(cfg.train, resume=True, lr=1e-4, threads=1, progress=False))
    with pytest.raises(CheckpointRefused) as err:
        run_distill(changed)
    msg = str(err.value)
    assert "task.loss.cos: saved 1.0, now 2.0" in msg and "train.lr: saved 0.003, now 0.0001" in msg
    assert "task.train.lr: saved 0.003, now 0.0001" in msg
    assert "threads" not in msg and "progress" not in msg  # how a run is carried out may change
    # The same configuration (threads and progress aside) resumes from the saved step.
    same = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True, threads=1))
    run_distill(same)
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()


def test_python_and_torch_rng_states_survive_the_plain_data_checkpoint(tmp_path):
    import random as pyrandom

    from training.trainer import Batch, TrainConfig, Trainer

    m = torch.nn.Linear(2, 1)
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=1, progress=False)
    trainer = Trainer(m, cfg, lambda e: [[0]], lambda i: Batch({"x": torch.ones(1, 2)}, 1),
                      lambda mod, b, g: (mod(b.tensors["x"]).sum(), {}))
    pyrandom.seed(7)
    torch.manual_seed(7)
    trainer.save_checkpoint()
    want = (pyrandom.random(), torch.rand(3))
    pyrandom.seed(0)
    torch.manual_seed(0)
    assert trainer.load_checkpoint()
    got = (pyrandom.random(), torch.rand(3))
    assert want[0] == got[0] and torch.equal(want[1], got[1])


@pytest.mark.slow
def test_torchrun_ddp_two_processes(assets, tmp_path):
    out = tmp_path / "ddp"
    args = _distill_args(assets, out, **{"train.max_steps": 6, "train.grad_accum": 2, "train.save_every": 3})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                        "-m", "training", "distill", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    digests = []
    for f in (out / "train.log", out / "train.rank1.log"):
        line = [ln for ln in f.read_text().splitlines() if "weights digest" in ln][-1]
        digests.append(line.split()[-1])
        assert "world 2" in f.read_text()
    assert digests[0] == digests[1]
    assert model.load(out / "final") is not None


def test_finetune_distill_task_evaluate(assets, tmp_path):
    common = ["train_file=" + str(assets / "train.tsv"), "dev_file=" + str(assets / "dev.tsv"), "max_length=32",
              "train.batch_size=16", "train.progress=false", "train.device=cpu", "train.log_every=5"]
    train_main(["finetune", f"model={assets / 'teacher_base'}", f"train.out_dir={tmp_path / 'ft'}",
                "train.epochs=6", "train.lr=3e-3", *common])
    teacher = tmp_path / "ft" / "final"
    t = model.load(teacher)
    assert t.task == "classification" and t.config.id2label == {0: "negative", 1: "positive"}
    train_main(["distill-task", f"teacher={teacher}", f"train.out_dir={tmp_path / 'kd'}", "train.epochs=6",
                "train.lr=3e-3", f"unlabeled_file={assets / 'corpus.txt'}", "max_unlabeled=50",
                f"embed_reference={assets / 'teacher_base'}", "alpha_embed=0.5", *common])
    out = tmp_path / "eval.json"
    train_main(["evaluate", f"model={tmp_path / 'kd' / 'final'}", f"data_file={assets / 'dev.tsv'}",
                f"teacher={teacher}", f"output={out}"])
    res = json.loads(out.read_text())
    assert set(res) >= {"accuracy", "macro_f1", "teacher_agreement", "n"} and res["n"] == 40
    teacher_acc = json.loads(subprocess.run(
        [sys.executable, "-m", "training", "evaluate", f"model={teacher}", f"data_file={assets / 'dev.tsv'}"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)["accuracy"]
    assert teacher_acc > 0.75  # the keyword task is learnable: the pipeline really trains
    assert res["accuracy"] > 0.6
    evals = [m["eval"] for m in _metrics(tmp_path / "kd") if "eval" in m]
    assert "teacher_agreement" in evals[-1]
    assert any("loss_embed" in m for m in _metrics(tmp_path / "kd"))


def test_bad_override_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        train_main(["distill", "nonsense_key=1"])
    assert "unknown DistillConfig option(s) ['nonsense_key']" in capsys.readouterr().err


def test_the_old_flat_loss_weights_are_refused_naming_their_nested_keys(capsys):
    with pytest.raises(SystemExit):
        train_main(["distill", "alpha_ce=0", "alpha_pooled_cos=1", "temperature=4"])
    err = capsys.readouterr().err
    assert "alpha_ce=0 is now loss.ce=0" in err and "alpha_pooled_cos=1 is now loss.pooled_cos=1" in err
    assert "temperature=4 is now loss.temperature=4" in err
    cfg = load_config(DistillConfig, None, ["loss.ce=0", "loss.pooled_cos=1", "loss.temperature=4"])
    assert (cfg.loss.ce, cfg.loss.mlm, cfg.loss.pooled_cos, cfg.loss.temperature) == (0.0, 2.0, 1.0, 4.0)


def test_a_run_does_not_depend_on_the_generator_state_it_starts_in(assets, tmp_path):
    """The same configuration gives the same weights whatever the process did before (a worker of a
    process pool does not start in a fixed state): the new classifier head is drawn after seeding."""
    common = [f"teacher={assets / 'teacher_base'}", "train_file=" + str(assets / "train.tsv"), "max_length=32",
              "train.batch_size=16", "train.progress=false", "train.device=cpu", "train.max_steps=3"]
    train_main(["finetune", f"model={assets / 'teacher_base'}", f"train.out_dir={tmp_path / 't'}",
                *[c for c in common if not c.startswith("teacher=")]])
    weights = []
    for i, draws in enumerate((1, 1000)):
        torch.rand(draws)
        random.random()
        out = tmp_path / f"kd{i}"
        train_main(["distill-task", f"teacher={tmp_path / 't' / 'final'}", f"train.out_dir={out}",
                    *[c for c in common if not c.startswith("teacher=")]])
        weights.append(load_file(str(out / "final" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_labels_alone_skip_the_teacher_pass_and_train_what_the_objective_at_alpha_0_trains(assets, tmp_path):
    """alpha 0 without unlabeled text (the label-only baseline): the soft targets would be weighted 0, so
    the teacher scores nothing and the loss is the plain CE; a vanishing alpha takes the scored path."""
    common = [f"train_file={assets / 'train.tsv'}", "max_length=32", "train.batch_size=16", "train.progress=false",
              "train.device=cpu", "train.max_steps=4", "train.log_every=1", "train.lr=3e-3"]
    train_main(["finetune", f"model={assets / 'teacher_base'}", f"train.out_dir={tmp_path / 't'}", *common])
    weights = {}
    for alpha in ("0", "1e-12"):
        out = tmp_path / f"kd{alpha}"
        train_main(["distill-task", f"teacher={tmp_path / 't' / 'final'}", f"train.out_dir={out}", f"alpha={alpha}",
                    *common])
        weights[alpha] = load_file(str(out / "final" / "model.safetensors"))
        losses = {k for m in _metrics(out) for k in m if k.startswith("loss_")}
        assert losses == ({"loss_ce"} if alpha == "0" else {"loss_task"})
    for k in weights["0"]:
        assert torch.allclose(weights["0"][k], weights["1e-12"][k], atol=1e-6), k


def test_a_representation_loss_toward_the_teacher_scores_it_once_with_the_same_result(assets, tmp_path, monkeypatch):
    """With embed_reference the teacher itself, its logits and pooled embeddings come from one forward
    (training.scoring.logits_and_pooled_of); a copy of the teacher in another folder takes the two-pass
    path. Both must train the same weights."""
    import shutil

    common = ["train_file=" + str(assets / "train.tsv"), "max_length=32", "train.batch_size=16",
              "train.progress=false", "train.device=cpu", "train.max_steps=4", "alpha_embed=1.0"]
    train_main(["finetune", f"model={assets / 'teacher_base'}", f"train.out_dir={tmp_path / 't'}",
                *[c for c in common if c != "alpha_embed=1.0"]])
    teacher = tmp_path / "t" / "final"
    shutil.copytree(teacher, tmp_path / "copy")
    one_pass = []
    real = distill_task.logits_and_pooled_of
    monkeypatch.setattr(distill_task, "logits_and_pooled_of", lambda *a: one_pass.append(1) or real(*a))
    monkeypatch.chdir(tmp_path)
    weights = []
    # The same folder named two ways (relative reference, absolute teacher) is still the teacher itself.
    for name, reference, passes in (("one", "t/./final", True), ("two", tmp_path / "copy", False)):
        out = tmp_path / name
        one_pass.clear()
        train_main(["distill-task", f"teacher={teacher}", f"embed_reference={reference}", f"train.out_dir={out}",
                    *common])
        assert bool(one_pass) == passes
        assert any("loss_embed" in m for m in _metrics(out))
        weights.append(load_file(str(out / "final" / "model.safetensors")))
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6, msg=k)


def _layer_cosines(student: torch.nn.Module, teacher: torch.nn.Module, seqs, pairs) -> list[float]:
    """Mean per-token cosine of each student layer's output and its paired teacher layer's."""
    from training.data import collate

    ids, mask = collate(seqs, 0, 32)
    with torch.no_grad():
        s, t = student.encoder.hidden_states(ids, mask), teacher.encoder.hidden_states(ids, mask)
    real = mask.bool()
    return [torch.nn.functional.cosine_similarity(s[i + 1][real], t[k + 1][real], dim=-1).mean().item()
            for i, k in enumerate(pairs)]


def test_teacher_states_are_cached_once_per_text_as_the_teacher_computes_them(assets):
    """training.scoring.teacher_targets: one forward per batch gives the logits, the pooled last layer and
    the per-token outputs of the chosen layers; each text's cached rows equal the teacher run on that text
    alone (no padding leaks in), to half precision, and come back zero-padded to a batch's length."""
    from model.pooling import mean_pool
    from training.checkpoints import classifier_from
    from training.scoring import score, teacher_targets

    torch.manual_seed(0)
    teacher = classifier_from(assets / "teacher_base", {0: "negative", 1: "positive"}).eval()
    tok = model.Tokenizer.from_dir(assets / "teacher_base")
    seqs = tok.tokenize_ids((assets / "corpus.txt").read_text().splitlines()[:70])  # two scoring batches
    both, states = teacher_targets(teacher, seqs, tok.pad_id, 32, [0, 3], batch_size=64)
    c = teacher.config.hidden_size
    assert both.shape == (70, 2 + c)
    torch.testing.assert_close(both[:, :2], score(teacher, seqs, tok.pad_id, 32), rtol=1e-4, atol=1e-5)
    assert len(states) == 70 and states.lengths == [min(len(s), 32) for s in seqs]
    for i in (0, 5, 69):
        ids = torch.tensor([seqs[i][:32]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            hidden = teacher.encoder.hidden_states(ids, mask)
        want = torch.stack([hidden[1][0], hidden[4][0]], dim=1)  # (T, 2, C)
        torch.testing.assert_close(states[i], want, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(both[i, 2:], mean_pool(hidden[-1], mask)[0], rtol=1e-4, atol=1e-5)
    batch = states.padded([0, 1], 40)
    assert batch.shape == (2, 40, 2, c)
    assert batch[0, states.lengths[0]:].abs().sum() == 0
    torch.testing.assert_close(batch[1, :states.lengths[1]], states[1])


def test_the_hidden_state_loss_pulls_each_student_layer_toward_its_teacher_layer(assets, tmp_path):
    """distill-task with alpha_hidden: the loss is logged and falls, and the student's layers end closer
    (per-token cosine) to the teacher layers they were copied from than the same run without it."""
    from training.init import layer_map

    common = ["train_file=" + str(assets / "train.tsv"), "max_length=32", "train.batch_size=16",
              "train.progress=false", "train.device=cpu", "train.log_every=2", "train.lr=3e-3",
              "train.warmup_fraction=0.0", "student_layers=2", "train.max_steps=24"]
    train_main(["finetune", f"model={assets / 'teacher_base'}", f"train.out_dir={tmp_path / 't'}",
                *[c for c in common if "student_layers" not in c]])
    teacher_dir = tmp_path / "t" / "final"
    teacher = model.load(teacher_dir).eval()
    held = model.Tokenizer.from_dir(teacher_dir).tokenize_ids(
        (assets / "corpus.txt").read_text().splitlines()[-64:])
    pairs = layer_map(teacher.config.num_layers, 2)
    cos = {}
    for alpha in (0.0, 1.0):
        out = tmp_path / f"kd{alpha}"
        train_main(["distill-task", f"teacher={teacher_dir}", f"train.out_dir={out}", f"alpha_hidden={alpha}",
                    f"unlabeled_file={assets / 'corpus.txt'}", "max_unlabeled=100", *common])
        hist = [m for m in _metrics(out) if "loss" in m]
        assert ("loss_hidden" in hist[0]) == (alpha > 0)
        if alpha:
            assert hist[-1]["loss_hidden"] < hist[0]["loss_hidden"]
        cos[alpha] = _layer_cosines(model.load(out / "final").eval(), teacher, held, pairs)
    assert all(with_loss > without for with_loss, without in zip(cos[1.0], cos[0.0], strict=True)), cos


def test_bf16_native_autocasts_where_the_cpu_flags_list_bf16_and_an_unknown_amp_is_refused(assets, tmp_path):
    """make models' embedder trains with amp=bf16-native: bf16 where the CPU computes it in hardware (its
    /proc/cpuinfo flags list AVX512-BF16 or AMX-BF16), fp32 elsewhere, where emulated bf16 would be slower."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    native = bool(flags & {"avx512_bf16", "amx_tile"})  # what torch's probes (native_bf16) look for
    out = tmp_path / "run"
    run_distill(load_config(DistillConfig, None, _distill_args(assets, out, **{
        "train.max_steps": 2, "train.amp": "bf16-native", "loss.ce": 0, "loss.mlm": 0, "loss.pooled_cos": 1})))
    assert f"amp {'torch.bfloat16' if native else 'None'}," in (out / "train.log").read_text()
    with pytest.raises(ValueError, match="amp='bf17'"):
        run_distill(load_config(DistillConfig, None, _distill_args(assets, tmp_path / "bad", **{"train.amp": "bf17"})))


def test_a_run_paused_at_stop_at_and_resumed_equals_the_uninterrupted_run(assets, tmp_path):
    """compress's teacher sweep trains each learning rate's first epoch, then resumes the best one."""
    whole = load_config(DistillConfig, None, _distill_args(assets, tmp_path / "whole", **{"train.max_steps": 4}))
    run_distill(whole)
    cut = load_config(DistillConfig, None, _distill_args(assets, tmp_path / "cut", **{"train.max_steps": 4,
                                                                                       "train.stop_at": 2}))
    run_distill(cut)
    log = (tmp_path / "cut" / "train.log").read_text()
    assert "paused at step 2 of 4" in log and not (tmp_path / "cut" / "final").exists()
    run_distill(dataclasses.replace(cut, train=dataclasses.replace(cut.train, stop_at=None, resume=True)))

    def digest(out: Path) -> str:
        lines = [line for line in (out / "train.log").read_text().splitlines() if "weights digest" in line]
        return lines[-1].split()[-1]

    assert digest(tmp_path / "cut") == digest(tmp_path / "whole")
