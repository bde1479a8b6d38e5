"""Soak: a long closed-loop run with mixed traffic, watching for leaks, drift and 5xx.

    python -m bench.soak --start-server --models-dir artifacts          # what `make soak` runs
    python -m bench.soak --url http://127.0.0.1:8000 --server-pid 1234  # against a running service

``--concurrency`` clients (64) for ``--duration-s`` (600), each request drawn at random (fixed
seed): endpoint (/classify, /embed, /v1/embeddings, /compare), model, 1-8 inputs of mixed length
(a share near the model's max length), a share of bad inputs (each a known 4xx) and a share of
clients that send a request and disconnect before the answer. Meanwhile /health is probed every
second and the service's RSS read from /proc every second (``--rss-every-s``). Writes a JSON results file and,
with ``--readme``, the README line between its ``<!-- soak:start/end -->`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from lab.loadgen import LeanClient, percentile
from lab.readme import write_section

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = (("/classify", 0.40), ("/embed", 0.25), ("/v1/embeddings", 0.20), ("/compare", 0.15))


def bad_requests(model: str, max_inputs: int) -> list[tuple[str, bytes, tuple[int, ...]]]:
    """(path, body, the statuses a correct service answers): inputs a careless client sends."""
    j = json.dumps
    return [
        ("/classify", j({"inputs": []}).encode(), (422,)),
        ("/classify", j({"inputs": "  "}).encode(), (422,)),
        ("/embed", j({"inputs": [1, 2, 3]}).encode(), (422,)),
        ("/embed", b'{"inputs": "ab\\ud800cd"}', (422,)),
        ("/embed", b'{"inputs": ["a",', (422,)),
        ("/classify", j({"inputs": "x", "model": "no-such-model"}).encode(), (404,)),
        ("/embed", j({"inputs": ["x"] * (max_inputs + 1), "model": model}).encode(), (413,)),
        # over the max length: 422, or 429 first while the model is saturated (refused before tokenizing)
        ("/embed", j({"inputs": "word " * 2000, "model": model, "truncate": False}).encode(), (422, 429)),
        ("/v1/embeddings", j({"input": [[1, 2, 3]], "model": model}).encode(), (400,)),
        ("/compare", j({"inputs": "x", "task": "neither"}).encode(), (422,)),
        ("/embed", j({"inputs": "x", "bogus": True}).encode(), (422,)),
    ]


@dataclass
class Plan:
    models: list[dict]  # /info's models
    texts: list[str]
    max_inputs: int
    bad_share: float
    disconnect_share: float
    rng: random.Random

    def valid(self) -> tuple[str, bytes]:
        r = self.rng
        path = r.choices([p for p, _ in ENDPOINTS], [w for _, w in ENDPOINTS])[0]
        n = r.choice((1, 1, 1, 2, 4, 8))
        texts = []
        for _ in range(n):
            t = r.choice(self.texts)
            if r.random() < 0.1:  # near or past the max length: truncated
                t = " ".join([t] * 40)
            texts.append(t)
        classifiers = [m["name"] for m in self.models if m.get("labels")]
        if path == "/classify" and classifiers:
            body = {"inputs": texts, "model": r.choice(classifiers)}
        elif path == "/compare":
            roles = {m["role"] for m in self.models}
            if not {"teacher", "student"} <= roles:
                path, body = "/embed", {"inputs": texts, "model": r.choice(self.models)["name"]}
            else:
                body = {"inputs": texts, "task": r.choice(("classify", "embed") if classifiers else ("embed",))}
        elif path == "/v1/embeddings":
            body = {"input": texts, "model": r.choice(self.models)["name"]}
        else:
            body = {"inputs": texts, "model": r.choice(self.models)["name"]}
            if path == "/classify":
                path = "/embed"
        return path, json.dumps(body).encode()


@dataclass
class Tally:
    t0: float
    samples: list[tuple[float, float, int | str, str]] = field(default_factory=list)  # (t, latency, status, kind)
    wrong_bad: Counter = field(default_factory=Counter)

    def add(self, latency: float, status: int | str, kind: str) -> None:
        self.samples.append((time.perf_counter() - self.t0, latency, status, kind))


async def _raw(host: str, port: int, path: str, body: bytes, abort_after: float | None) -> int | str:
    """One request on its own connection; with ``abort_after``, close it that long after sending."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        if abort_after is not None:
            writer.write(head + body)
            await writer.drain()
            await asyncio.sleep(abort_after)
            return "disconnected"
        status, _ = await LeanClient._exchange((reader, writer), head + body)
        return status
    finally:
        writer.close()


async def _client(url: str, plan: Plan, tally: Tally, stop_at: float, headers: dict | None) -> None:
    lean = LeanClient(url, headers, timeout=120)
    host, port = lean.host, lean.port
    bad = bad_requests(plan.models[0]["name"], plan.max_inputs)
    try:
        while time.perf_counter() < stop_at:
            r = plan.rng.random()
            t = time.perf_counter()
            try:
                if r < plan.bad_share:
                    path, body, ok = plan.rng.choice(bad)
                    status = await _raw(host, port, path, body, None)
                    if status not in ok:
                        tally.wrong_bad[f"{path} {body[:40]!r} -> {status}"] += 1
                    tally.add(time.perf_counter() - t, status, "bad")
                elif r < plan.bad_share + plan.disconnect_share:
                    path, body = plan.valid()
                    await _raw(host, port, path, body, plan.rng.uniform(0.001, 0.05))
                    tally.add(time.perf_counter() - t, "disconnected", "disconnect")
                else:
                    path, body = plan.valid()
                    status, headers = await lean.post(path, json.loads(body))
                    tally.add(time.perf_counter() - t, status, "valid")
                    if status == 429:  # as a well-behaved client does (capped: the soak must go on)
                        await asyncio.sleep(min(float(headers.get("retry-after", 1)), 5.0))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                tally.add(time.perf_counter() - t, type(e).__name__, "valid")
    finally:
        await lean.aclose()


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _watch(url: str, pid: int | None, stop_at: float, t0: float, out: dict, rss_every_s: float) -> None:
    """/health every second, RSS every ``rss_every_s``. One RSS sample catches whatever batches are in
    flight at that instant (the service hands memory back every second): samples of one steady minute
    spread by about 7%, so a per-minute median needs many of them to show the level, not the draw."""
    async with httpx.AsyncClient(timeout=10) as c:
        last_rss = 0.0
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                ok = (await c.get(f"{url}/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            out["health"].append((t - t0, time.perf_counter() - t, ok))
            if t - last_rss >= rss_every_s - 0.05:
                out["rss"].append((t - t0, rss_mb(pid)))
                last_rss = t
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))


def dropped(metrics_text: str) -> dict[str, float]:
    out: Counter = Counter()
    for line in metrics_text.splitlines():
        if line.startswith("distil_dropped_inputs_total{"):
            reason = re.search(r'reason="([^"]+)"', line)
            out[reason.group(1) if reason else "?"] += float(line.split()[-1])
    return dict(out)


async def soak(url: str, pid: int | None, duration_s: float, concurrency: int, bad_share: float,
               disconnect_share: float, seed: int, headers: dict | None, rss_every_s: float = 1.0) -> dict:
    async with httpx.AsyncClient(timeout=30, headers=headers) as c:
        info = (await c.get(f"{url}/info")).json()
        dropped_before = dropped((await c.get(f"{url}/metrics")).text)
    from .profiles import source_texts

    texts, source = source_texts()
    plan = Plan(info["models"], texts, info["limits"]["max_client_batch_size"], bad_share, disconnect_share,
                random.Random(seed))
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    tally = Tally(t0)
    watch: dict = {"health": [], "rss": [(0.0, rss_mb(pid))]}
    clients = [_client(url, plan, tally, stop_at, headers) for _ in range(concurrency)]
    await asyncio.gather(_watch(url, pid, stop_at, t0, watch, rss_every_s), *clients)
    watch["rss"].append((time.perf_counter() - t0, rss_mb(pid)))
    async with httpx.AsyncClient(timeout=30, headers=headers) as c:
        metrics_after = (await c.get(f"{url}/metrics")).text
        info_after = (await c.get(f"{url}/info")).json()
    drop = {k: v - dropped_before.get(k, 0.0) for k, v in dropped(metrics_after).items()}
    return summarize(tally, watch, duration_s, concurrency, info, info_after, drop, source, bad_share,
                     disconnect_share, seed) | {"rss_every_s": rss_every_s}


def summarize(tally: Tally, watch: dict, duration_s: float, concurrency: int, info: dict, info_after: dict,
              drop: dict, source: str, bad_share: float, disconnect_share: float, seed: int) -> dict:
    minutes = []
    for m in range(int(duration_s // 60) + (duration_s % 60 > 0)):
        lo, hi = m * 60, (m + 1) * 60
        valid = [lat * 1000 for t, lat, st, k in tally.samples if lo <= t < hi and k == "valid" and st == 200]
        rss = [r for t, r in watch["rss"] if lo <= t < hi and r is not None]
        # The median of the minute's samples: the level a leak would raise. The service hands freed memory
        # back every second, so a single sample (or the max) also catches the batches in flight at that instant.
        minutes.append({"minute": m + 1, "ok": len(valid), "p50_ms": round(percentile(valid, 50), 2),
                        "p99_ms": round(percentile(valid, 99), 2),
                        "rss_mb": round(statistics.median(rss), 1) if rss else None,
                        "rss_max_mb": round(max(rss), 1) if rss else None})
    by_kind: dict = {}
    for kind in ("valid", "bad", "disconnect"):
        st = Counter(str(s) for _, _, s, k in tally.samples if k == kind)
        by_kind[kind] = {"requests": sum(st.values()), "by_status": dict(st),
                         "5xx": sum(v for s, v in st.items() if s.isdigit() and int(s) >= 500)}
    rss = [r for _, r in watch["rss"] if r is not None]
    health = watch["health"]
    m2, last = (minutes[1] if len(minutes) > 1 else None), (minutes[-1] if minutes else None)
    targets = {}
    if m2 and last and m2["rss_mb"] and last["rss_mb"]:
        targets["rss_growth_min2_to_end"] = round(last["rss_mb"] / m2["rss_mb"] - 1, 4)
        targets["rss_max_growth_min2_to_end"] = round(last["rss_max_mb"] / m2["rss_max_mb"] - 1, 4)
        targets["p99_end_over_min2"] = round(last["p99_ms"] / m2["p99_ms"], 3)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "duration_s": duration_s, "concurrency": concurrency, "seed": seed, "texts": source,
        "mix": {"endpoints": dict(ENDPOINTS), "bad_share": bad_share, "disconnect_share": disconnect_share},
        "models": [{k: m.get(k) for k in ("name", "role", "family", "layers", "hidden_size", "device")}
                   for m in info["models"]],
        "requests": len(tally.samples),
        "valid": by_kind["valid"], "bad": by_kind["bad"], "disconnects": by_kind["disconnect"],
        "bad_answered_wrong": dict(tally.wrong_bad),
        "minutes": minutes,
        "rss_mb": {"start": round(rss[0], 1) if rss else None, "end": round(rss[-1], 1) if rss else None},
        "rss_samples": [(round(t, 1), r) for t, r in watch["rss"]],
        "dropped_inputs": drop,
        "health": {"probes": len(health), "failures": sum(not ok for _, _, ok in health),
                   "p99_ms": round(percentile([d * 1000 for _, d, _ in health], 99), 2)},
        "restarts": int(info_after.get("started", 0) != info.get("started", 0)) if "started" in info else None,
        "status_after": info_after.get("status"),
        "targets": targets,
    }


def readme_line(r: dict, command: str) -> str:
    mins = r["minutes"]
    p99 = ", ".join(f"{m['p99_ms']:.0f}" for m in mins)
    rss = ", ".join(f"{m['rss_mb']:.0f}" for m in mins)
    valid5, st = r["valid"]["5xx"], r["valid"]["by_status"]
    models = ", ".join(f"{m['name']} ({m['role']}, {m['family']}, {m['layers']} layers)" for m in r["models"])
    return (f"`{command}` on {r['date']} against {models}: {r['requests']:,} requests in "
            f"{r['duration_s'] / 60:.0f} min at c={r['concurrency']}: {r['valid']['requests']:,} valid ("
            f"{st.get('200', 0):,} answered, {st.get('429', 0):,} refused 429 while saturated), "
            f"{r['bad']['requests']:,} bad inputs, {r['disconnects']['requests']:,} client disconnects; "
            f"5xx: {valid5} on valid input, {r['bad']['5xx']} on bad input; transport errors on valid input: "
            f"{sum(v for k, v in st.items() if not k.isdigit())}; "
            f"p99 per minute (ms): {p99}; RSS per minute (MB, median of {r.get('rss_every_s', 5):g}-s samples): "
            f"{rss}; "
            f"RSS {r['rss_mb']['start']} MB at start, {r['rss_mb']['end']} MB at end; "
            f"dropped inputs: {int(sum(r['dropped_inputs'].values()))} "
            f"({', '.join(f'{k} {int(v)}' for k, v in sorted(r['dropped_inputs'].items())) or 'none'}); "
            f"restarts: {r['restarts']}; /health failures: {r['health']['failures']} of {r['health']['probes']}"
            + (f"; from minute 2 to the last: RSS {t['rss_growth_min2_to_end']:+.1%} (per-minute peak "
               f"{t['rss_max_growth_min2_to_end']:+.1%}), p99 × {t['p99_end_over_min2']:.2f}"
               if (t := r["targets"]) else "") + ".")


def serve_env(models_dir: Path) -> dict[str, str]:
    """The service `make serve` starts: the folder's serve.json (DISTIL_CONFIG), else its student
    and teacher."""
    if (models_dir / "serve.json").is_file():
        return {"DISTIL_CONFIG": str(models_dir / "serve.json")}
    models = [{"name": "student", "path": str(models_dir / "student"), "role": "student"},
              {"name": "teacher", "path": str(models_dir / "teacher"), "role": "teacher"}]
    return {"DISTIL_MODELS": json.dumps(models)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--start-server", action="store_true", help="start `python -m app` on a free port, stop it after")
    p.add_argument("--models-dir", help="serve what `make serve` serves from this folder: its serve.json if "
                   "there is one, else its student and teacher")
    p.add_argument("--server-pid", type=int, help="PID of a running service, for its RSS")
    p.add_argument("--duration-s", type=float, default=600.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--bad-share", type=float, default=0.10)
    p.add_argument("--disconnect-share", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rss-every-s", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--api-key", default=os.environ.get("DISTIL_API_KEY"))
    p.add_argument("--out", default="bench/results/soak.json")
    p.add_argument("--readme", help="README to write the soak line into")
    p.add_argument("--command-name", default="make soak")
    p.add_argument("--report-only", action="store_true", help="measure nothing: the README line from --out")
    args = p.parse_args(argv)
    if args.report_only:
        result = json.loads(Path(args.out).read_text())
        line = readme_line(result, result.get("command", args.command_name))
        if args.readme:
            write_section(Path(args.readme), "soak", line)
        print(line)
        return
    from lab.server import free_port, stop_server, wait_ready

    proc, url, pid = None, args.url, args.server_pid
    if args.start_server:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **(serve_env(Path(args.models_dir)) if args.models_dir else {})}
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-server-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        pid = proc.pid
        print(f"[soak] service pid {pid}, log {log.name}", file=sys.stderr)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    try:
        wait_ready(url, proc)
        print(f"[soak] {args.duration_s:.0f} s at c={args.concurrency} against {url}", file=sys.stderr)
        result = asyncio.run(soak(url, pid, args.duration_s, args.concurrency, args.bad_share,
                                  args.disconnect_share, args.seed, headers, args.rss_every_s))
    finally:
        if proc is not None:
            exited = proc.poll()
            stop_server(proc)
    if proc is not None:
        result["restarts"] = int(exited is not None)  # the process died under the soak
        result["exit_code"] = proc.returncode
    result["command"] = args.command_name
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    line = readme_line(result, args.command_name)
    if args.readme:
        write_section(Path(args.readme), "soak", line)
    print(line)


if __name__ == "__main__":
    main()
