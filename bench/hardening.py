"""Issue 14's targets, measured on running services: a 1.98 MB body of integers (answered 422), a 2 MB
string with truncate=true, /health's latency while each is in flight, and the service's RSS.

    python -m bench.hardening --model ~/.cache/distilbert-serve/minilm --baseline 45360d6 \\
        --out bench/results/hardening.json --readme README.md

With ``--baseline REV`` the code of that commit is served too (from ``git archive``, same model and
settings) and both are measured in alternating rounds, so machine drift falls on both alike.
Medians over the rounds; /health's worst probe over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import httpx

from lab.readme import write_section
from lab.server import free_port, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"int_body_s": 0.2, "int_body_bytes": 4096, "health_max_ms": 50.0, "rss_growth_mb": 50.0,
           "string_s": 0.3}


def int_body() -> bytes:
    return b'{"inputs": [' + b"1," * 989_999 + b"1]}"


def string_body() -> bytes:
    return json.dumps({"inputs": "a " * 999_000}).encode()


def proc_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class Service:
    """`python -m app` from a source tree (this checkout, or a commit exported by git archive)."""

    def __init__(self, label: str, src: Path, model: Path) -> None:
        self.label, self.port = label, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DISTIL_MODELS": json.dumps([{"name": "m", "path": str(model), "role": "student"}]),
               "DISTIL_DEVICE": "cpu", "PYTHONPATH": str(src)}
        env.pop("DISTIL_CONFIG", None)
        self.log = open(Path(tempfile.gettempdir()) / f"hardening-{label}-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(self.port)], cwd=src, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.samples: dict[str, list[float]] = {"int_body_s": [], "string_s": [], "health_ms": [],
                                                 "string_tokenization_ms": [], "string_inference_ms": []}
        self.statuses: dict[str, set[int]] = {"int_body": set(), "string": set()}
        self.int_body_bytes = 0

    def post(self, body: bytes, probe: list[float]) -> httpx.Response:
        """POST /embed while another thread probes /health every 10 ms."""
        done = threading.Event()

        def health() -> None:
            with httpx.Client(timeout=60) as c:
                while not done.is_set():
                    t = time.perf_counter()
                    c.get(f"{self.url}/health")
                    probe.append((time.perf_counter() - t) * 1000)
                    time.sleep(0.01)

        prober = threading.Thread(target=health)
        prober.start()
        try:
            return httpx.post(f"{self.url}/embed", content=body, timeout=120,
                              headers={"content-type": "application/json"})
        finally:
            done.set()
            prober.join()

    def round(self, ints: bytes, text: bytes) -> None:
        for key, body in (("int_body", ints), ("string", text)):
            t = time.perf_counter()
            r = self.post(body, self.samples["health_ms"])
            self.samples[f"{key}_s"].append(time.perf_counter() - t)
            self.statuses[key].add(r.status_code)
            if key == "int_body":
                self.int_body_bytes = max(self.int_body_bytes, len(r.content))
            else:  # the server's split: the forward of a max-length input is work any answer needs
                for part in ("tokenization", "inference"):
                    if f"x-{part}-time" in r.headers:
                        self.samples[f"string_{part}_ms"].append(float(r.headers[f"x-{part}-time"]))

    def summary(self, rss_start: float) -> dict:
        rss_end = proc_mb(self.proc.pid, "VmRSS")
        return {
            "int_body_s": round(statistics.median(self.samples["int_body_s"]), 4),
            "int_body_status": sorted(self.statuses["int_body"]), "int_body_bytes": self.int_body_bytes,
            "string_s": round(statistics.median(self.samples["string_s"]), 4),
            "string_status": sorted(self.statuses["string"]),
            **{f"string_{p}_ms": round(statistics.median(self.samples[f"string_{p}_ms"]), 2)
               for p in ("tokenization", "inference") if self.samples[f"string_{p}_ms"]},
            "health_max_ms": round(max(self.samples["health_ms"]), 2),
            "health_p50_ms": round(statistics.median(self.samples["health_ms"]), 2),
            "health_probes": len(self.samples["health_ms"]),
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
            "rss_peak_mb": round(proc_mb(self.proc.pid, "VmHWM"), 1),
            "rss_growth_mb": round(rss_end - rss_start, 1),
            "runs": {k: [round(x, 4) for x in v] for k, v in self.samples.items() if k != "health_ms"},
            "load_average_after": round(os.getloadavg()[0], 2),
        }


def export(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(model: Path, baseline: str | None, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        services = [Service("after", ROOT, model)]
        if baseline:
            services.append(Service("before", export(baseline, Path(tmp)), model))
        try:
            for s in services:
                wait_ready(s.url, s.proc)
            rss = {s.label: proc_mb(s.proc.pid, "VmRSS") for s in services}
            print(f"[hardening] load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", file=sys.stderr)
            ints, text = int_body(), string_body()
            for i in range(rounds):
                for s in services if i % 2 == 0 else services[::-1]:
                    print(f"[hardening] round {i + 1}/{rounds}: {s.label}", file=sys.stderr)
                    s.round(ints, text)
            return {s.label: s.summary(rss[s.label]) for s in services}
        finally:
            for s in services:
                stop_server(s.proc)
                s.log.close()


def readme_line(r: dict) -> str:
    a, b = r["services"]["after"], r["services"].get("before")

    def was(text: str) -> str:
        return f" (before: {text.format(**b)})" if b else ""

    missed = [k for k, ok in r["targets_met"].items() if not ok]
    return (f"`python -m bench.hardening` on {r['date']} ({r['machine']}; model `{r['model']}`; medians of "
            f"{r['rounds']} rounds{', alternating with the code of ' + r['baseline'] if b else ''}): the 1.98 MB "
            f"body of integers answered {a['int_body_status']} in {a['int_body_s']:.3f} s"
            f"{was('{int_body_s:.3f} s, {int_body_status}')} with {a['int_body_bytes']} bytes; the 2 MB string "
            f"(truncate=true) in {a['string_s']:.3f} s{was('{string_s:.3f} s')}, of which tokenization "
            f"{a.get('string_tokenization_ms', float('nan')):.1f} ms and the forward of what it keeps (max length) "
            f"{a.get('string_inference_ms', float('nan')):.0f} ms; /health meanwhile at worst "
            f"{a['health_max_ms']:.1f} ms{was('{health_max_ms:.1f} ms')}; RSS {a['rss_start_mb']:.0f} → "
            f"{a['rss_end_mb']:.0f} MB, peak {a['rss_peak_mb']:.0f} MB"
            f"{was('{rss_start_mb:.0f} → {rss_end_mb:.0f} MB, peak {rss_peak_mb:.0f} MB')}. "
            f"Issue 14's targets: {'all met' if not missed else 'missed ' + ', '.join(missed)}, "
            f"with a load average of {a['load_average_after']:.0f} on {r['machine'].split(', ')[-1]} "
            f"(other jobs on the machine).")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hardening", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a checkpoint folder to serve (required unless --report-only)")
    p.add_argument("--baseline", help="a commit to measure beside this checkout")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results/hardening.json")
    p.add_argument("--readme")
    p.add_argument("--report-only", action="store_true", help="measure nothing: the README line from --out")
    args = p.parse_args(argv)
    if args.report_only:
        line = readme_line(json.loads(Path(args.out).read_text()))
        if args.readme:
            write_section(Path(args.readme), "hardening", line)
        print(line)
        return
    if not args.model:
        p.error("--model is required to measure")
    from lab.environment import cpu_model

    services = measure(Path(args.model).expanduser().resolve(), args.baseline, args.rounds)
    after = services["after"]
    met = {k: after[k] <= limit for k, limit in TARGETS.items()}
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores",
              "model": Path(args.model).name, "baseline": args.baseline, "rounds": args.rounds,
              "targets": TARGETS, "targets_met": met, "services": services}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    line = readme_line(result)
    if args.readme:
        write_section(Path(args.readme), "hardening", line)
    print(line)


if __name__ == "__main__":
    main()
