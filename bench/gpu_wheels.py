"""The wheels a lent GPU machine lacks, for ``bench/gpu_check.sh``: ``make gpu-wheels``.

The device tool's GPU image (its KINDS.md, read 2026-11-17) is Python 3.12 with torch 2.11 (CUDA), transformers,
tokenizers, safetensors, numpy, onnxruntime (the CPU build: no CUDAExecutionProvider), pytest and httpx, but no
FastAPI, Starlette, uvicorn or pydantic, and nothing there can reach a registry. This downloads, here, the cp312
manylinux x86_64 wheel of each package in ``WHEELS`` at the version of requirements/*.lock, with ``--no-deps``
(``WHEELS`` is the closure itself: tests/bench/test_gpu_wheels.py checks it against every import gpu_check.sh
reaches and every requirement of every wheel), into ``.whl/`` (ignored), and the real WordPiece tokenizer files
(bert-base-uncased's vocabulary, from the pinned minilm asset) into ``.whl/tokenizer/`` for the paper-size
models. Fails when the folder is over what the device tool carries.

    python -m bench.gpu_wheels [--out .whl]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = (ROOT / "requirements" / "serve.lock", ROOT / "requirements" / "dev.lock")  # serve.lock's pin wins
LIMIT_MIB = 64  # the device tool carries 64 MiB of working tree a call, the wheels included

# KINDS.md's "Python packages already there" for nvidia-h100-x1 and nvidia-h200 (the image 'cuda'), verbatim.
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())

# What travels: the packages the image lacks, and (marked "pin") a few it has whose version our code was tested
# at and depends on (a carried wheel shadows the image's copy: PYTHONPATH=/tmp/site comes first).
WHEELS = {
    "fastapi": "the service",
    "starlette": "fastapi",
    "pydantic": "schemas, settings",
    "pydantic-core": "pydantic",
    "pydantic-settings": "app/settings.py",
    "python-dotenv": "pydantic-settings",
    "typing-inspection": "pydantic, fastapi",
    "annotated-types": "pydantic",
    "opentelemetry-api": "fastapi 0.165",
    "uvicorn": "python -m app",
    "httptools": "uvicorn's parser when installed (http=auto), as `make serve` runs",
    "orjson": "responses",
    "httpx2": "starlette's TestClient (httpx is its deprecated fallback)",
    "httpcore2": "httpx2",
    "truststore": "httpx2, httpcore2",
    "asgi-lifespan": "tests/app/test_batching.py (imported by the GPU backend tests)",
    "sniffio": "asgi-lifespan",
    "typing-extensions": "pin: pydantic 2.14 needs >= 4.16",
    "anyio": "pin: starlette, fastapi, asgi-lifespan",
    "h11": "pin: app/connections.py subclasses uvicorn's h11 protocol",
    "click": "pin: uvicorn",
    "annotated-doc": "pin: fastapi",
    "prometheus-client": "pin: the metrics' text format the tests read",
    "httpx": "pin: the load generator",
    "httpcore": "pin: httpx",
}

# pip download's flags for the image (the device tool's README): CPython 3.12 on x86-64 Linux, binary only.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(locks: tuple[Path, ...] = LOCKS) -> dict[str, str]:
    """name -> version of every ``name==version`` line of the lock files (the first lock that pins it wins)."""
    out: dict[str, str] = {}
    for lock in locks:
        for line in lock.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
            if m:
                out.setdefault(canonical(m.group(1)), m.group(2))
    return out


def requirements() -> list[str]:
    versions = pins()
    missing = [n for n in WHEELS if n not in versions]
    if missing:
        raise SystemExit(f"no pin in {', '.join(p.name for p in LOCKS)} for {missing}: run tools/lock.py")
    return [f"{n}=={versions[n]}" for n in WHEELS]


def wheel_key(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel's file name."""
    name, version = filename.split("-")[:2]
    return canonical(name), version


def download(out: Path) -> list[Path]:
    reqs = requirements()
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(out),
           *reqs]
    subprocess.run(cmd, check=True)
    wanted = {(canonical(r.split("==")[0]), r.split("==")[1]) for r in reqs}
    wheels = sorted(out.glob("*.whl"))
    for w in wheels:  # one version of each: two stop the whole install there
        if wheel_key(w.name) not in wanted:
            print(f"removing {w.name}: not a pin of {LOCKS[0].parent.name}/*.lock")
            w.unlink()
    return sorted(out.glob("*.whl"))


def copy_tokenizer(out: Path) -> Path:
    """bert-base-uncased's WordPiece files (all-MiniLM-L6-v2 shares them), for bench/paper_models.py there."""
    from lab import assets

    src = assets.fetch("minilm")
    dst = out / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copy2(src / f, dst / f)
    return dst


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def tree_mib(*flags: str) -> float:
    """The size of what else travels: git ls-files FLAGS (the tracked files; --others --exclude-standard: the
    untracked ones that git does not ignore, which travel too)."""
    files = subprocess.run(["git", "ls-files", "-z", *flags], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / f.decode() for f in files.split(b"\0") if f]
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_wheels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / ".whl")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wheels = download(args.out)
    copy_tokenizer(args.out)
    size, tree, loose = size_mib(args.out), tree_mib(), tree_mib("--others", "--exclude-standard")
    print(f"{args.out}: {len(wheels)} wheels and tokenizer/, {size:.1f} MiB; with the tracked tree "
          f"({tree:.1f} MiB) {size + tree:.1f} MiB of the {LIMIT_MIB} MiB the device tool carries")
    if size + tree > LIMIT_MIB:
        raise SystemExit(f"{args.out} ({size:.1f} MiB) and the tree ({tree:.1f} MiB): over {LIMIT_MIB} MiB")
    if size + tree + loose > LIMIT_MIB:
        print(f"warning: untracked files that git does not ignore ({loose:.1f} MiB; git status) travel too and "
              f"take it over {LIMIT_MIB} MiB: ignore or remove them before a device run", file=sys.stderr)

if __name__ == "__main__":
    main()
