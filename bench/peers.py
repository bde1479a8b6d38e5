"""The peer race: our service against infinity-emb and LitServe on the same all-MiniLM-L6-v2 folder, with
sentence-transformers' ONNX backend called in-process as the anchor.

    python -m bench.peers --out bench/results/peers --readme README.md      # what `make bench-peers` runs

Engines: infinity-emb 0.0.78 (its own virtual environment, PEERS_VENV) with its torch engine and its
ONNX Runtime engine on an optimum export in fp32 and in int8 (optimum's avx2 and avx512-vnni dynamic
quantization); LitServe 0.2.19 (its own virtual environment, .venv-litserve: bench/peer_litserve.py, its
dynamic batching on transformers' BertModel with mean pooling); sentence-transformers 5.7 with
``backend="onnx"`` in fp32 and its dynamic int8 export (its own virtual environment, .venv-st:
bench/peer_st.py, called without HTTP: one call on the sentences a level holds at once); ours with each
backend and precision. All servers are started first and stay up; then
blocks of the same load (the lean client of bench/loadgen.py, OpenAI-style /v1/embeddings requests) run
engine after engine, the order rotated every round, so a drift of the shared machine lands on every
engine alike. Per engine and level the result is the median of its blocks. Fidelity: each engine's
vectors for every sentence of the race against the fp32 reference, transformers' own BertModel with
mean pooling (min and mean cosine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from lab import environment as env
from lab.loadgen import Level, run_level
from lab.server import ROOT, free_port, wait_ready

from . import profiles

MODEL_NAME = "minilm"
ENDPOINT = "/v1/embeddings"
PEERS_VENV = ROOT / ".venv-peers"
LITSERVE_VENV = ROOT / ".venv-litserve"
ST_VENV = ROOT / ".venv-st"
ST_QUANTIZATION = "avx512_vnni"  # sentence-transformers' int8 export: this race's CPUs have AVX-512 VNNI


@dataclass(frozen=True)
class Engine:
    name: str
    server: str  # "ours" | "infinity" | "litserve" | "st" (sentence-transformers in-process, no HTTP)
    backend: str  # ours: torch | onnx; infinity: torch | optimum; litserve: torch; st: onnx
    precision: str  # fp32 | int8
    quantization: str = ""  # infinity and st int8: optimum's quantization config (avx2, avx512_vnni)

    @property
    def in_process(self) -> bool:
        return self.server == "st"


ENGINES = (
    Engine("ours, torch fp32", "ours", "torch", "fp32"),
    Engine("ours, torch int8", "ours", "torch", "int8"),
    Engine("ours, ONNX fp32", "ours", "onnx", "fp32"),
    Engine("ours, ONNX int8", "ours", "onnx", "int8"),
    Engine("ours, ONNX int8_mixed", "ours", "onnx", "int8_mixed"),
    Engine("infinity, torch", "infinity", "torch", "fp32"),
    Engine("infinity, ONNX fp32", "infinity", "optimum", "fp32"),
    Engine("infinity, ONNX int8 (avx2)", "infinity", "optimum", "int8", "avx2"),
    Engine("infinity, ONNX int8 (avx512-vnni)", "infinity", "optimum", "int8", "avx512_vnni"),
    Engine("LitServe, torch", "litserve", "torch", "fp32"),
    Engine("sentence-transformers ONNX fp32, in-process", "st", "onnx", "fp32"),
    Engine("sentence-transformers ONNX int8 (avx512-vnni), in-process", "st", "onnx", "int8", ST_QUANTIZATION),
)


@dataclass(frozen=True)
class RaceLevel:
    key: str
    inputs: int  # sentences per request
    concurrency: int


LEVELS = (RaceLevel("single_c1", 1, 1), RaceLevel("single_c32", 1, 32), RaceLevel("batch16_c8", 16, 8))


# -- infinity's model folders --------------------------------------------------------------------
def _peer_env(home: Path) -> dict[str, str]:
    # Offline: the folder is local, nothing may reach a hub; no usage telemetry.
    return {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}


def _run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env_vars: dict | None = None) -> None:
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env_vars).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {rc}); see {log}:\n{log.read_text()[-2000:]}")


def prepare_infinity(folder: Path, work: Path, venv: Path) -> dict[str, Path]:
    """optimum exports of ``folder`` as infinity's ONNX engine wants them (built once, kept in ``work``):
    fp32 with ``--library-name transformers`` (infinity pools itself: ``--pooling-method mean``), and its
    dynamic int8 quantizations."""
    cli = str(venv / "bin" / "optimum-cli")
    env_vars = _peer_env(work / "hf")
    out = {"plain": work / "onnx-plain", "fp32": work / "onnx-fp32"}
    # fp32 twice: plain (what optimum's quantizer takes: on the fused graph it fails to infer the fused
    # ops' types) and --optimize O2, ONNX Runtime's fusions without GELU approximation — what infinity's own
    # optimisation step asks for (level 99, no approximations). That step fails under optimum 2.1
    # (OptimizationConfig lost its optimize_with_onnxruntime_only argument) and would leave infinity on the
    # unfused graph, so the engines run with --onnx-disable-optimize on these files.
    for key, extra in (("plain", []), ("fp32", ["--optimize", "O2"])):
        if not (out[key] / "model.onnx").is_file():
            print(f"[peers] optimum export ({key}) of {folder} -> {out[key]}", file=sys.stderr)
            _run_logged([cli, "export", "onnx", "-m", str(folder), "--task", "feature-extraction",
                         "--library-name", "transformers", *extra, str(out[key])],
                        work / f"optimum-export-{key}.log", env_vars=env_vars)
    for q in ("avx2", "avx512_vnni"):
        out[q] = work / f"onnx-int8-{q}"
        if not (out[q] / "model_quantized.onnx").is_file():
            print(f"[peers] optimum dynamic int8 ({q}) -> {out[q]}", file=sys.stderr)
            _run_logged([cli, "onnxruntime", "quantize", "--onnx_model", str(out["plain"]), f"--{q}", "-o",
                         str(out[q])], work / f"optimum-quantize-{q}.log", env_vars=env_vars)
    return out


def prepare_st(folder: Path, work: Path, venv: Path) -> Path:
    """sentence-transformers' own ONNX export of ``folder`` and its dynamic int8 (built once, kept in ``work``)."""
    out = work / "st-onnx"
    if not (out / "onnx" / f"model_qint8_{ST_QUANTIZATION}.onnx").is_file():
        print(f"[peers] sentence-transformers ONNX export and int8 ({ST_QUANTIZATION}) -> {out}", file=sys.stderr)
        _run_logged([str(venv / "bin" / "python"), str(ROOT / "bench" / "peer_st.py"), "prepare", "--model",
                     str(folder), "--out", str(out), "--quantization", ST_QUANTIZATION], work / "st-prepare.log",
                    env_vars=_peer_env(work / "hf-st"))
    return out


# -- servers -------------------------------------------------------------------------------------
def launch(engine: Engine, folder: Path, port: int, work: Path, venvs: dict[str, Path],
           prepared: dict) -> subprocess.Popen:
    """Start one engine: a server on ``port``, or (in-process engines) a worker answering on its pipes."""
    log = (work / f"server-{engine.server}-{engine.backend}-{engine.precision}{engine.quantization}.log").open("w")
    if engine.in_process:
        file = f"onnx/model_qint8_{engine.quantization}.onnx" if engine.precision == "int8" else "onnx/model.onnx"
        cmd = [str(venvs["st"] / "bin" / "python"), str(ROOT / "bench" / "peer_st.py"), "serve", "--dir",
               str(prepared["st"]), "--file", file]
        proc = subprocess.Popen(cmd, cwd=work, env=_peer_env(work / "hf-st"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, text=True)
        print(f"[peers] {engine.name}: pid {proc.pid}, in-process, log {log.name}", file=sys.stderr)
        return proc
    if engine.server == "litserve":
        env_vars = _peer_env(work / "hf-litserve")
        cmd, cwd = [str(venvs["litserve"] / "bin" / "python"), str(ROOT / "bench" / "peer_litserve.py"), "--model",
                    str(folder), "--name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port)], work
    elif engine.server == "ours":
        models = [{"name": MODEL_NAME, "path": str(folder), "role": "other", "backend": engine.backend,
                   "precision": engine.precision}]
        env_vars = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_ACCESS_LOG": "false",
                    "DISTIL_LOG_LEVEL": "warning", "DISTIL_CONFIG": ""}
        cmd, cwd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)], ROOT
    else:
        tag = f"{engine.backend}-{engine.precision}{engine.quantization}"
        env_vars = _peer_env(work / f"hf-{tag}")  # infinity caches its optimised graph per model path
        cmd = [str(venvs["infinity"] / "bin" / "infinity_emb"), "v2", "--served-model-name", MODEL_NAME,
               "--device", "cpu", "--port", str(port), "--host", "127.0.0.1", "--url-prefix", "/v1",
               "--pooling-method", "mean", "--batch-size", "32", "--log-level", "warning", "--no-model-warmup"]
        if engine.backend == "torch":
            cmd += ["--engine", "torch", "--model-id", str(folder)]
            cwd = work
        else:
            # infinity 0.0.78 hands optimum 2.x the ONNX file's path as found under --model-id, and
            # optimum matches bare file names: only a model id of "." (run from inside the folder) loads.
            cwd = prepared["infinity"][engine.quantization or "fp32"]
            cmd += ["--engine", "optimum", "--model-id", ".", "--onnx-disable-optimize"]
            if engine.precision == "fp32":
                cmd += ["--onnx-do-not-prefer-quantized"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env_vars, stdout=log, stderr=subprocess.STDOUT)
    print(f"[peers] {engine.name}: pid {proc.pid}, port {port}, log {log.name}", file=sys.stderr)
    return proc


def _check_ours(url: str, engine: Engine) -> None:
    """Our /info must say the engine asked for: a race never runs under a wrong label."""
    m = httpx.get(f"{url}/info", timeout=10).json()["models"][0]
    got = (m.get("backend", "torch"), m.get("precision", "fp32"))
    if got != (engine.backend, engine.precision):
        raise SystemExit(f"{engine.name}: the service reports backend/precision {got}, not "
                         f"{(engine.backend, engine.precision)}")


def ask(proc: subprocess.Popen, **command) -> dict:
    """One command to an in-process engine's worker, its one-line JSON answer."""
    proc.stdin.write(json.dumps(command) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the in-process worker (pid {proc.pid}) exited with code {proc.wait()}; see its log")
    answer = json.loads(line)
    if "error" in answer:
        raise SystemExit(f"the in-process worker (pid {proc.pid}): {answer['error']}")
    return answer


def _wait(url: str, proc: subprocess.Popen, engine: Engine) -> None:
    if engine.in_process:  # its first line says the model is loaded
        line = proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise SystemExit(f"{engine.name}: the worker exited with code {proc.wait()} before it was ready")
        return
    wait_ready(url, proc, path="/ready" if engine.server == "ours" else "/health")  # infinity, LitServe: /health
    if engine.server == "ours":
        _check_ours(url, engine)


def stop(proc: subprocess.Popen) -> None:
    if proc.stdin is not None:  # an in-process worker ends at the end of its input
        proc.stdin.close()
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.terminate()  # by PID, the one we started
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- fidelity ------------------------------------------------------------------------------------
def reference_vectors(folder: Path, texts: list[str]):
    """fp32 reference: transformers' BertModel, mean over real tokens, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, hf = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            b = tok(texts[i:i + 32], padding=True, truncation=True, return_tensors="pt")
            h = hf(**b).last_hidden_state
            m = b["attention_mask"][:, :, None].float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


async def _embed_all(url: str, texts: list[str]) -> list[list[float]]:
    vecs: list[list[float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        for i in range(0, len(texts), 16):
            r = await c.post(ENDPOINT, json={"input": texts[i:i + 16], "model": MODEL_NAME})
            r.raise_for_status()
            vecs += [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]
    return vecs


def fidelity(url: str, texts: list[str], reference, proc: subprocess.Popen | None = None) -> dict[str, float]:
    """Against the reference: over HTTP at ``url``, or from an in-process engine's worker ``proc``."""
    import torch

    vectors = ask(proc, op="embed", texts=texts)["vectors"] if proc is not None else asyncio.run(_embed_all(url, texts))
    got = torch.tensor(vectors)
    cos = torch.nn.functional.cosine_similarity(got, reference, dim=-1)
    return {"min_cosine": cos.min().item(), "mean_cosine": cos.mean().item(), "sentences": len(texts)}


# -- CPU of everything else on the machine -------------------------------------------------------
def _busy_seconds() -> float:
    """Machine-wide busy CPU seconds (every core), from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _family(pids: list[int]) -> list[int]:
    """``pids`` and every process below them: LitServe answers from child processes (API server, worker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(pids), list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return sorted(out)


def _tree_seconds(pids: list[int]) -> float:
    """CPU seconds of our server processes and this process (ended threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        except OSError:
            pass
    return total


# -- the race ------------------------------------------------------------------------------------
def _requests(level: RaceLevel, singles: list[tuple[list[str], int]]) -> list[tuple[list[str], int]]:
    if level.inputs == 1:
        return singles
    groups = []
    for i in range(0, len(singles) - level.inputs + 1, level.inputs):
        chunk = singles[i:i + level.inputs]
        groups.append(([t for texts, _ in chunk for t in texts], sum(n for _, n in chunk)))
    return groups


def race(args: argparse.Namespace) -> dict:
    unknown = set(args.engines or ()) - {e.name for e in ENGINES}
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; the race knows {[e.name for e in ENGINES]}")
    work = Path(args.work).resolve()
    venvs = {"infinity": Path(args.venv).resolve(), "litserve": Path(args.litserve_venv).resolve(),
             "st": Path(args.st_venv).resolve()}
    engines = [e for e in ENGINES if not args.engines or e.name in args.engines]
    servers = {e.server for e in engines}
    for server in ("infinity", "litserve", "st"):
        if server in servers and not (venvs[server] / "bin" / "python").is_file():
            raise SystemExit(f"{server}'s virtual environment {venvs[server]} is missing: make bench-peers builds it")
    work.mkdir(parents=True, exist_ok=True)
    # Every engine serves one copy of the folder, so exports and caches land here, not in the asset cache.
    folder = work / "model"
    if not (folder / ".copied").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(Path(args.model), folder, ignore=shutil.ignore_patterns("onnx", ".complete"))
        (folder / ".copied").write_text(str(Path(args.model).resolve()) + "\n")
    prepared = {"infinity": prepare_infinity(folder, work, venvs["infinity"]) if "infinity" in servers else None,
                "st": prepare_st(folder, work, venvs["st"]) if "st" in servers else None}

    import model

    tok = model.Tokenizer.from_dir(folder)
    texts, source = profiles.source_texts()
    singles = profiles.build("short", texts, tok.count_tokens, n=512, seed=args.seed)
    race_texts = sorted({t for ts, _ in singles for t in ts})
    reference = reference_vectors(folder, race_texts)

    procs: dict[str, tuple[subprocess.Popen, str]] = {}
    blocks: dict[tuple[str, str], list[dict]] = {}
    out_fid: dict[str, dict] = {}
    try:
        for e in engines:  # one at a time: start-up of one does not slow another's
            port = free_port()
            proc = launch(e, folder, port, work, venvs, prepared)
            procs[e.name] = (proc, f"http://127.0.0.1:{port}")
            _wait(procs[e.name][1], proc, e)
        for e in engines:
            proc, url = procs[e.name]
            out_fid[e.name] = fidelity(url, race_texts, reference, proc if e.in_process else None)
            print(f"[peers] {e.name}: min cosine {out_fid[e.name]['min_cosine']:.4f}", file=sys.stderr)
        pids = _family([p.pid for p, _ in procs.values()])
        for r in range(args.rounds):
            order = engines[r % len(engines):] + engines[:r % len(engines)]  # rotated every round
            for lv in LEVELS:
                reqs = _requests(lv, singles)
                sentences = [t for ts, _ in singles for t in ts]  # in-process: the same sentences, in order
                for e in order:
                    proc, url = procs[e.name]
                    level = Level(MODEL_NAME, ENDPOINT, f"short x{lv.inputs}", "closed", concurrency=lv.concurrency,
                                  requests=100_000, duration_s=args.block_s, warmup_requests=5)
                    busy0, ours0, t0 = _busy_seconds(), _tree_seconds(pids), time.perf_counter()
                    if e.in_process:  # one call on what the level holds at once: c requests of k sentences
                        d = ask(proc, op="block", texts=sentences, per_call=lv.inputs * lv.concurrency,
                                duration_s=args.block_s, warmup=level.warmup_requests, seed=args.seed + r)
                    else:
                        # The per-request CPU split reads one process's threads: not LitServe's several processes.
                        pid = None if e.server == "litserve" else proc.pid
                        d = asdict(asyncio.run(run_level(url, level, reqs, seed=args.seed + r, client="lean",
                                                         server_pid=pid)))
                    busy1, ours1, wall = _busy_seconds(), _tree_seconds(pids), time.perf_counter() - t0
                    # Cores other processes (other users of the machine) used during the block.
                    d["foreign_cores"] = max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / wall)
                    d["round"] = r
                    d["load_average"] = os.getloadavg()[0]  # runnable processes, 1-minute average
                    blocks.setdefault((e.name, lv.key), []).append(d)
                    print(f"[peers] round {r + 1}/{args.rounds} {lv.key:<11} {e.name:<34} "
                          f"p50 {d['latency_ms']['p50']:7.2f} ms  {d['inputs_per_s']:7.1f} inputs/s  "
                          f"errors {d['errors'] or 0}  others {d['foreign_cores']:.2f} cores", file=sys.stderr)
        environment = env.capture()
    finally:
        for proc, _ in procs.values():
            stop(proc)
    results = []
    for e in engines:
        row = {"engine": asdict(e), "name": e.name, "fidelity": out_fid.get(e.name), "levels": {}}
        for lv in LEVELS:
            bs = blocks.get((e.name, lv.key), [])
            if not bs:
                continue
            row["levels"][lv.key] = {
                "p50_ms": statistics.median(b["latency_ms"]["p50"] for b in bs),
                "p95_ms": statistics.median(b["latency_ms"]["p95"] for b in bs),
                "inputs_per_s": statistics.median(b["inputs_per_s"] for b in bs),
                "errors": sum(sum(b["errors"].values()) for b in bs),
                "foreign_cores": statistics.median(b["foreign_cores"] for b in bs),
                "load_average": statistics.median(b.get("load_average", float("nan")) for b in bs),
                "blocks": [{k: b[k] for k in ("round", "latency_ms", "inputs_per_s", "sent", "ok", "errors",
                                              "foreign_cores", "load_average", "extra")} for b in bs],
            }
        results.append(row)
    environment["peers"] = _peer_versions(venvs["infinity"], INFINITY_PACKAGES) if "infinity" in servers else {}
    environment["litserve"] = _peer_versions(venvs["litserve"], LITSERVE_PACKAGES) if "litserve" in servers else {}
    environment["sentence_transformers"] = _peer_versions(venvs["st"], ST_PACKAGES) if "st" in servers else {}
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "model": str(folder),
            "source": (folder / ".copied").read_text().strip(), "texts": source,
            "sentences": len(race_texts), "rounds": args.rounds, "block_s": args.block_s,
            "levels": [asdict(lv) for lv in LEVELS], "environment": environment, "results": results}


INFINITY_PACKAGES = ("infinity-emb", "optimum", "optimum-onnx", "onnxruntime", "torch", "transformers")
LITSERVE_PACKAGES = ("litserve", "torch", "transformers")
ST_PACKAGES = ("sentence-transformers", "optimum", "optimum-onnx", "onnxruntime", "torch", "transformers")


def _peer_versions(venv: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            f"{list(packages)!r}}}))")
    try:
        return json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                                         text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
        return {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(Path.home() / ".cache" / "distilbert-serve" / "minilm"),
                   help="the sentence-transformers folder every engine serves (make assets)")
    p.add_argument("--venv", default=str(PEERS_VENV), help="infinity-emb's virtual environment")
    p.add_argument("--litserve-venv", default=str(LITSERVE_VENV), help="LitServe's virtual environment")
    p.add_argument("--st-venv", default=str(ST_VENV), help="sentence-transformers' virtual environment")
    p.add_argument("--work", default=str(ROOT / ".cache" / "peers"), help="exports, caches and server logs")
    p.add_argument("--engines", nargs="*", help="only these engine names")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block-s", type=float, default=4.0, help="seconds of one block (one engine, one level)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/peers")
    p.add_argument("--readme", help="write the peer-race section into this README")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from OUT/peers.json")
    args = p.parse_args(argv)
    from . import peers_report

    out = Path(args.out)
    data = json.loads((out / "peers.json").read_text()) if args.report_only else race(args)
    peers_report.write_all(data, out, Path(args.readme) if args.readme else None)


if __name__ == "__main__":
    main()
