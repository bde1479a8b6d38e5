"""A generic training loop: it knows nothing about BERT. The task gives it a model, the
batches, and a loss function; the loop does optimisation (AdamW, warmup + linear decay,
accumulation, clipping), AMP, DDP under torchrun, logging, evaluation and checkpoints.

Resuming reproduces an uninterrupted run: batch order is a function of (seed, epoch),
masking draws come from a generator seeded by (seed, step, rank), and the checkpoint
carries the global RNG states along with model, optimizer, scheduler and scaler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from model.device import resolve_device

from .progress import progress

log = logging.getLogger("training")


@dataclass
class TrainConfig:
    out_dir: str = "runs/run"
    seed: int = 42
    epochs: int = 3
    max_steps: int | None = None  # optimizer steps; when set it replaces epochs
    batch_size: int = 32  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    adam_eps: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.98)
    max_grad_norm: float = 5.0
    # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16 | bf16-native (bf16 where the device
    # computes it natively: CUDA with bf16, a CPU with AVX512-BF16 or AMX; elsewhere off, as emulated
    # bf16 is slower than fp32)
    amp: str = "auto"
    device: str = "auto"
    threads: int | None = None
    log_every: int = 10
    eval_every: int = 0  # optimizer steps; 0: only at the end
    save_every: int = 200
    resume: bool = False
    progress: bool = True
    # Pause after this many optimizer steps of the schedule (a checkpoint, no export); a resume with it
    # unset finishes the same run. None: train to the end.
    stop_at: int | None = None

    def __post_init__(self) -> None:  # before any data is read or scored
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp={self.amp!r}: want one of {', '.join(AMP_MODES)}")


AMP_MODES = ("auto", "off", "bf16", "fp16", "bf16-native")


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor]
    tokens: int  # real tokens, for tokens/s


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    micro: int = 0  # micro-batches consumed in the current epoch (this rank)
    history: list[dict] = field(default_factory=list)


LossFn = Callable[[nn.Module, Batch, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str = "auto") -> tuple[int, int, int]:
    """Join torchrun's process group, once per process (NCCL on CUDA, gloo on the CPU); (rank, world size,
    local rank). Alone, nothing to join: (0, 1, 0)."""
    rank, world, local = distributed()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    return rank, world, local


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm parameters (as BERT and DistilBERT train)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class CheckpointRefused(RuntimeError):
    """A checkpoint that cannot be resumed safely: not plain data, or saved under another configuration."""


# How a run is carried out, not what it computes: these may change between a run and its resume.
RESUMABLE_CHANGES = ("resume", "progress", "threads", "device", "log_every", "save_every", "eval_every", "stop_at")


def check_same_config(saved: dict, current: dict, path: Path) -> None:
    """Refuse to resume into a different configuration, naming each differing key."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out |= flat(v, f"{prefix}{k}.")
            elif not (prefix.endswith("train.") and k in RESUMABLE_CHANGES):
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(saved), flat(current)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if differ:
        detail = "; ".join(f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in differ)
        raise CheckpointRefused(f"{path} was saved with a different configuration ({detail}). Resume with the "
                                "same configuration, or start in a new out_dir")


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


class Trainer:
    def __init__(self, model: nn.Module, cfg: TrainConfig, batches_for_epoch: Callable[[int], list[Any]],
                 make_batch: Callable[[Any], Batch], loss_fn: LossFn,
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 export_fn: Callable[[nn.Module], None] | None = None,
                 extra_config: dict | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world, local = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, local)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.rank)
        random.seed(cfg.seed + self.rank)
        self.model = model.to(self.device)
        self.ddp = self.world > 1
        self.wrapped = (nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=False) if self.ddp else self.model)
        self.batches_for_epoch, self.make_batch = batches_for_epoch, make_batch
        self.loss_fn, self.eval_fn, self.export_fn = loss_fn, eval_fn, export_fn
        self.extra_config = extra_config or {}
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                           betas=cfg.adam_betas, eps=cfg.adam_eps)
        n_micro = len(self._rank_batches(0))
        self.steps_per_epoch = n_micro // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise ValueError(f"not enough data for one optimizer step: {n_micro} micro-batches "
                             f"per process, grad_accum={cfg.grad_accum}")
        self.total_steps = cfg.max_steps or self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(self.total_steps, int(cfg.warmup_fraction * self.total_steps)))
        self.state = TrainState()
        self._setup_logging()

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "bf16-native":
            return torch.bfloat16 if native_bf16(self.device) else None
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "fp16":
            return torch.float16
        if amp == "bf16" or (self.device.type == "cuda" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16

    def _setup_logging(self) -> None:
        self.log_file = self.out / ("train.log" if self.rank == 0 else f"train.rank{self.rank}.log")
        self.metrics_file = self.out / "metrics.jsonl"
        handler = logging.FileHandler(self.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False

    def _rank_batches(self, epoch: int) -> list[Any]:
        batches = self.batches_for_epoch(epoch)
        usable = len(batches) - len(batches) % self.world  # equal counts so DDP steps line up
        return batches[self.rank:usable:self.world]

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _saved_config(self) -> dict:
        """The configuration a checkpoint records, as JSON (plain data, compared on resume)."""
        return json.loads(json.dumps({"train": asdict(self.cfg), "task": self.extra_config}, default=str))

    def save_checkpoint(self) -> None:
        if self.rank == 0:
            version, state, gauss = random.getstate()
            atomic_save({
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": asdict(self.state),
                # Only tensors and plain data, so loading needs no pickle of arbitrary objects.
                "rng": {"torch": torch.get_rng_state(), "python_version": version,
                        "python": torch.tensor(state, dtype=torch.int64), "python_gauss": gauss,
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "config": json.dumps(self._saved_config()),
            }, self.checkpoint_path)
            log.info("checkpoint written at step %d: %s", self.state.step, self.checkpoint_path)
        if self.ddp:
            dist.barrier()

    def load_checkpoint(self) -> bool:
        """Resume from checkpoint.pt: tensors and plain data only (``weights_only=True``: a file that
        carries code is refused, not run), and only into the configuration it was saved with."""
        if not self.checkpoint_path.is_file():
            return False
        try:
            ck = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointRefused(f"{self.checkpoint_path}: refused, it holds more than tensors and plain data "
                                    f"(weights_only load failed: {str(e).splitlines()[0]})") from None
        check_same_config(json.loads(ck["config"]), self._saved_config(), self.checkpoint_path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState(**ck["state"])
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        random.setstate((rng["python_version"], tuple(rng["python"].tolist()), rng["python_gauss"]))
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        log.info("resumed from %s at step %d", self.checkpoint_path, self.state.step)
        return True

    # -- the loop ---------------------------------------------------------------------------
    def _record(self, entry: dict) -> None:
        self.state.history.append(entry)
        if self.rank == 0:
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    def evaluate(self) -> dict[str, float]:
        if not self.eval_fn or self.rank != 0:
            return {}
        self.model.eval()
        with torch.no_grad():
            res = self.eval_fn(self.model)
        self.model.train()
        self._record({"step": self.state.step, "eval": res})
        log.info("eval at step %d: %s", self.state.step, json.dumps(res))
        return res

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        if cfg.resume:
            self.load_checkpoint()
        self.model.train()
        bar = progress(self.total_steps, Path(cfg.out_dir).name, "step", initial=self.state.step,
                       enabled=cfg.progress and self.rank == 0)
        log.info("training: %d steps (%d per epoch), world %d, device %s, amp %s, effective batch %d",
                 self.total_steps, self.steps_per_epoch, self.world, self.device, self.amp_dtype,
                 cfg.batch_size * cfg.grad_accum * self.world)
        t_last, tokens_since = time.perf_counter(), 0
        end = min(self.total_steps, cfg.stop_at or self.total_steps)
        while self.state.step < end:
            batches = self._rank_batches(self.state.epoch)
            while self.state.step < end and self.state.micro + cfg.grad_accum <= len(batches):
                sums: dict[str, float] = {}
                for k in range(cfg.grad_accum):
                    batch = self.make_batch(batches[self.state.micro + k])
                    batch.tensors = {n: t.to(self.device, non_blocking=True) for n, t in batch.tensors.items()}
                    gen = torch.Generator().manual_seed(
                        (cfg.seed * 1_000_003 + self.state.step * 1009 + k) * 17 + self.rank)
                    sync = not self.ddp or k == cfg.grad_accum - 1
                    ctx = self.wrapped.no_sync() if not sync else contextlib.nullcontext()
                    with ctx, torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                             enabled=self.amp_dtype is not None):
                        loss, parts = self.loss_fn(self.wrapped, batch, gen)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"non-finite loss {loss.item()} at step {self.state.step}, micro-batch {k}: {parts}")
                    self.scaler.scale(loss / cfg.grad_accum).backward()
                    for n, v in {"loss": loss.item(), **parts}.items():
                        sums[n] = sums.get(n, 0.0) + v / cfg.grad_accum
                    tokens_since += batch.tokens * self.world
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.state.step += 1
                self.state.micro += cfg.grad_accum
                if self.state.step % cfg.log_every == 0 or self.state.step == self.total_steps:
                    now = time.perf_counter()
                    tps = tokens_since / max(now - t_last, 1e-9)
                    entry = {"step": self.state.step, "epoch": self.state.epoch,
                             **{k: round(v, 6) for k, v in sums.items()}, "lr": self.scheduler.get_last_lr()[0],
                             "grad_norm": float(grad_norm), "tokens_per_s": round(tps, 1)}
                    self._record(entry)
                    log.info("step %d/%d %s", self.state.step, self.total_steps,
                             " ".join(f"{k}={v:.4g}" for k, v in entry.items() if k not in ("step",)))
                    bar.set_postfix(loss=f"{sums['loss']:.4f}", tok_s=f"{tps:,.0f}")
                    t_last, tokens_since = now, 0
                bar.update(1)
                if cfg.eval_every and self.state.step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.save_every and self.state.step % cfg.save_every == 0:
                    self.save_checkpoint()
            if self.state.step < end:
                self.state.epoch += 1
                self.state.micro = 0
        bar.close()
        self.save_checkpoint()
        if self.state.step < self.total_steps:  # paused at stop_at: resumed later
            log.info("paused at step %d of %d (stop_at)", self.state.step, self.total_steps)
            return {}
        final = self.evaluate()
        if self.export_fn and self.rank == 0:
            self.export_fn(self.model)
        digest = weights_digest(self.model)
        log.info("weights digest %s", digest)
        if self.ddp:
            digests: list = [None] * self.world
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"ranks ended with different weights: {digests}")
            dist.barrier()
        log.info("done at step %d", self.state.step)
        return final


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":  # torch's own probes of the instruction set (private, hence looked up)
        return any(getattr(torch.cpu, p, lambda: False)() for p in ("_is_avx512_bf16_supported",
                                                                     "_is_amx_tile_supported"))
    return False


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter's bytes: equal digests mean bitwise-equal weights."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()




def seed_all(seed: int) -> None:
    """Seed torch and Python's random at a command's start, before any model is built: a new head's
    initial weights come from the process's generator, which a worker process does not start in a fixed
    state (the Trainer seeds again, but only after the model exists)."""
    torch.manual_seed(seed)
    random.seed(seed)


def use_threads(threads: int | None) -> None:
    """The configured torch threads for this process, from the start of a command (a command scores data
    before its Trainer exists; two OpenMP threads on a busy 2-core machine run several times slower than one)."""
    if threads:
        torch.set_num_threads(threads)


__all__ = ["Batch", "CheckpointRefused", "Trainer", "TrainConfig", "TrainState", "atomic_save", "check_same_config",
           "distributed", "init_distributed", "linear_schedule", "param_groups", "seed_all", "use_threads"]
