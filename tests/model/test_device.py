"""One device resolver (model/device.py) for the library, the service and the benchmarks: a device that is not
there is refused with a message that says what is, never accepted and failed on later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from app.settings import Settings
from model.device import resolve_device
from training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = not torch.cuda.is_available()


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_where_there_is_none_is_refused_saying_what_is_here(name):
    with pytest.raises(ValueError, match=r"no CUDA device .*what is here: cpu"):
        resolve_device(name)


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_a_cuda_index_past_the_last_device_is_refused():
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x"])
def test_names_that_are_no_device(name):
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_the_service_and_the_trainer_refuse_it_too(tmp_path):
    with pytest.raises(ValidationError, match="no CUDA device"):
        Settings(device="cuda")
    # The trainer used to take "cuda" as given (its own resolver) and fail later, in the first .to().
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(torch.nn.Linear(2, 2), TrainConfig(device="cuda", out_dir=str(tmp_path)), lambda e: [[0]],
                lambda b: b, lambda m, b, g: (torch.zeros(()), {}))
    r = subprocess.run([sys.executable, "-m", "app", "--device", "cuda"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "no CUDA device" in r.stderr, r.stderr[-2000:]
