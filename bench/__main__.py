"""Teacher vs student through the real service: ``python -m bench`` / ``distilbert-bench``.

    python -m bench sweep --start-server --models-dir artifacts   # what `make bench` runs
    python -m bench sweep --url http://127.0.0.1:8000              # against a running service
    python -m bench load --url http://127.0.0.1:8000 --model student --endpoint /classify --concurrency 8
    python -m bench load --url ... --model teacher --rate 20        # open loop, Poisson arrivals
    python -m bench report --results bench/results/bench.json --readme README.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from lab import environment as env
from lab.loadgen import CLIENTS, V2_INFER, Level, run_level
from lab.server import free_port, start_server, stop_server, wait_ready
from training.progress import progress

from . import paired, profiles
from .inprocess import measure, spec_of


def _counter(info: dict):
    """Token counts with a served model's tokenizer when its files are local, else words × 1.3."""
    for m in info.get("models", []):
        if m.get("path") and Path(m["path"]).is_dir():
            import model

            tok = model.Tokenizer.from_dir(m["path"])
            return tok.count_tokens
    return lambda texts: [int(len(t.split()) * 1.3) + 2 for t in texts]


def padding_from_metrics(text: str) -> dict[str, float]:
    sums, counts = {}, {}
    for line in text.splitlines():
        for kind, store in (("distil_padding_ratio_sum{", sums), ("distil_padding_ratio_count{", counts)):
            if line.startswith(kind):
                labels, value = line[len(kind):].split("} ")
                name = dict(p.split("=") for p in labels.split(","))["model"].strip('"')
                store[name] = float(value)
    return {k: sums[k] / counts[k] for k in sums if counts.get(k)}


SWEEPS = {
    # (profiles, concurrencies) per endpoint; open-loop rates as fractions of closed-loop capacity
    # V2_INFER: the Open Inference Protocol's infer (JSON, probabilities) beside /classify, same profiles and loads.
    "default": {"closed": [("/classify", ("short", "mixed", "long"), (1, 8, 32)),
                           (V2_INFER, ("short", "mixed"), (1, 32)),
                           ("/embed", ("short", "mixed"), (1, 32))],
                "open": [("/classify", "mixed", (0.5, 0.9))],
                "requests": 3000, "duration_s": 5.0, "inprocess_s": 5.0, "paired": (10, 20)},
    # Paper-size models (bench/paper_models.py): single sentences only, longer levels for slower models.
    "paper": {"closed": [("/classify", ("short",), (1, 8, 32))], "open": [],
              "requests": 3000, "duration_s": 8.0, "inprocess_s": 8.0, "paired": (6, 20)},
    "quick": {"closed": [("/classify", ("short",), (1, 4)), (V2_INFER, ("short",), (1,)), ("/embed", ("mixed",), (1,))],
              "open": [("/classify", "short", (0.5,))],
              "requests": 40, "duration_s": 0.5, "inprocess_s": 0.5, "paired": (2, 4)},
}


def _inprocess(models: list[dict], levels: list[Level], inputs: dict, plan: dict, device: str) -> list[dict]:
    """The same models and inputs without HTTP, at each (model, profile, concurrency) of the sweep."""
    out = []
    for m in models:
        spec = spec_of(m)
        endpoints = {lv.endpoint for lv in levels if lv.model == m["name"]}
        for prof in sorted({lv.profile for lv in levels if lv.model == m["name"]}):
            for c in sorted({lv.concurrency for lv in levels if lv.model == m["name"] and lv.profile == prof}):
                r = measure(spec, device, inputs[prof], c, max_seconds=plan["inprocess_s"])
                r.update(profile=prof, endpoints=sorted(endpoints))
                out.append(r)
    return out


def _faster(a: list[dict], b: list[dict]) -> list[dict]:
    """Per level, the run with the lower batch p50 (both kept under ``runs``)."""
    merged = []
    for x, y in zip(a, b, strict=True):
        best = dict(min(x, y, key=lambda r: r["batch_p50_ms"]))
        best["inputs_per_s"] = max(x["inputs_per_s"], y["inputs_per_s"])
        best["runs"] = [{k: r[k] for k in ("batch_p50_ms", "inputs_per_s", "batches")} for r in (x, y)]
        merged.append(best)
    return merged


def sweep(args: argparse.Namespace) -> dict:
    proc = None
    url = args.url
    if args.start_server:
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(Path(args.models_dir), port, config=Path(args.serve_config) if args.serve_config else None)
    pid = proc.pid if proc is not None else args.server_pid
    try:
        wait_ready(url, proc)
        info = httpx.get(f"{url}/info", timeout=10).json()
        plan = SWEEPS[args.sweep]
        texts, source = profiles.source_texts()
        count = _counter(info)
        inputs = {p: profiles.build(p, texts, count, n=512, seed=args.seed) for p in profiles.PROFILES}
        models = [m for m in info["models"] if not args.models or m["name"] in args.models]
        # Models interleaved level by level: the teacher and the student at one load are measured
        # seconds apart, so a slow drift of the machine does not land on one of them.
        levels = []
        for endpoint, profs, concs in plan["closed"]:
            for prof in profs:
                for c in concs:
                    for m in models:
                        if endpoint in ("/classify", V2_INFER) and not m["labels"]:
                            continue
                        levels.append(Level(m["name"], endpoint, prof, "closed", concurrency=c,
                                            requests=plan["requests"], duration_s=plan["duration_s"]))
        # In-process before the load (the service idles) and again after it stopped; the faster of the
        # two runs is the raw model cost, so a noisy moment cannot flatter the service.
        first = _inprocess(models, levels, inputs, plan, info["models"][0]["device"])
        results = []
        bar = progress(len(levels) + len(models) * sum(len(r) for _, _, r in plan["open"]), "bench", "level")
        for lv in levels:
            s = asyncio.run(run_level(url, lv, inputs[lv.profile], seed=args.seed, client=args.client,
                                      server_pid=pid))
            results.append(asdict(s))
            bar.set_postfix(model=lv.model, c=lv.concurrency, p50=f"{s.latency_ms['p50']:.1f}ms")
            bar.update(1)
        # Open loop at fractions of each model's measured closed-loop capacity.
        for m in models:
            for endpoint, prof, fractions in plan["open"]:
                cap = max((r["requests_per_s"] for r in results if r["level"]["model"] == m["name"]
                           and r["level"]["endpoint"] == endpoint and r["level"]["profile"] == prof), default=0)
                if not cap:
                    bar.update(len(fractions))
                    continue
                for f in fractions:
                    lv = Level(m["name"], endpoint, prof, "open", concurrency=0, rate=round(cap * f, 2),
                               requests=plan["requests"], duration_s=plan["duration_s"])
                    s = asyncio.run(run_level(url, lv, inputs[prof], seed=args.seed, client=args.client,
                                              server_pid=pid))
                    results.append(asdict(s))
                    bar.update(1)
        bar.close()
        # Overhead at concurrency 1: service and in-process in alternating blocks (bench/paired.py).
        rounds, block = plan["paired"]
        overhead_bar, pairs = progress(len(models), "overhead at c=1", "model"), []
        for m in models:
            pairs.append(asyncio.run(paired.overhead(url, spec_of(m), m["device"], inputs["short"], rounds, block,
                                                     args.client)))
            overhead_bar.update(1)
        overhead_bar.close()
        metrics_text = httpx.get(f"{url}/metrics", timeout=10).text
        environment = env.capture(info)
    finally:
        if proc is not None:
            stop_server(proc)
    inproc = _faster(first, _inprocess(models, levels, inputs, plan, info["models"][0]["device"]))
    out = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "url": url, "sweep": args.sweep, "texts": source,
           "environment": environment, "results": results, "inprocess": inproc, "paired": pairs,
           "padding_ratio": padding_from_metrics(metrics_text)}
    from . import report

    report.write_all(out, Path(args.out), readme=Path(args.readme) if args.readme else None,
                     accuracy=Path(args.accuracy) if args.accuracy else None, section_name=args.section,
                     command=args.command_name)
    return out


def load(args: argparse.Namespace) -> None:
    info = httpx.get(f"{args.url}/info", timeout=10).json()
    texts, _ = profiles.source_texts()
    inputs = profiles.build(args.profile, texts, _counter(info), n=512, seed=args.seed)
    lv = Level(args.model, args.endpoint, args.profile, "open" if args.rate else "closed",
               concurrency=args.concurrency, rate=args.rate, requests=args.requests, duration_s=args.duration)
    s = asyncio.run(run_level(args.url, lv, inputs, seed=args.seed, client=args.client,
                              server_pid=args.server_pid))
    print(json.dumps(asdict(s), indent=2))


CLIENT_HELP = ("HTTP client of the load generator: lean (default; plain http://, about a tenth of httpx's "
               "CPU per request, which matters when it shares the cores with the service) or httpx")


PID_HELP = "the service's PID on this machine: adds the CPU time per request, client vs service"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="distilbert-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="teacher vs student across loads, with report and plots")
    sw.add_argument("--url", default="http://127.0.0.1:8000")
    sw.add_argument("--start-server", action="store_true", help="start the service on 127.0.0.1, stop it by PID")
    sw.add_argument("--models-dir", default="artifacts")
    sw.add_argument("--serve-config", help="serve this serve.json (each model's backend and precision, as make serve "
                    "serves them) instead of the fp32 student and teacher of --models-dir")
    sw.add_argument("--port", type=int)
    sw.add_argument("--models", nargs="*", help="only these model names")
    sw.add_argument("--sweep", choices=sorted(SWEEPS), default="default")
    sw.add_argument("--out", default="bench/results")
    sw.add_argument("--readme", help="write the 'Teacher vs student' section into this README")
    sw.add_argument("--accuracy", default="artifacts/results.json", help="real-distillation results, if present")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--section", default="bench", help="README markers <!-- SECTION:start/end --> to fill")
    sw.add_argument("--command-name", default="make bench", help="the command the report says produced it")
    ld = sub.add_parser("load", help="one load level")
    ld.add_argument("--url", default="http://127.0.0.1:8000")
    ld.add_argument("--model", required=True)
    ld.add_argument("--endpoint", default="/classify", choices=["/classify", "/embed", "/v1/embeddings"])
    ld.add_argument("--profile", default="short", choices=profiles.PROFILES)
    ld.add_argument("--concurrency", type=int, default=1)
    ld.add_argument("--rate", type=float, help="open loop: requests/s with Poisson arrivals")
    ld.add_argument("--requests", type=int, default=200)
    ld.add_argument("--duration", type=float, default=10.0)
    ld.add_argument("--seed", type=int, default=0)
    for cmd in (sw, ld):
        cmd.add_argument("--client", choices=CLIENTS, default="lean", help=CLIENT_HELP)
        cmd.add_argument("--server-pid", type=int, help=PID_HELP)
    rp = sub.add_parser("report", help="rewrite the Markdown, plots and README section from a JSON file")
    rp.add_argument("--results", default="bench/results/bench.json")
    rp.add_argument("--out", default="bench/results")
    rp.add_argument("--readme")
    rp.add_argument("--accuracy", default="artifacts/results.json")
    rp.add_argument("--section", default="bench")
    rp.add_argument("--command-name", default="make bench")
    args = p.parse_args(argv)
    if args.command == "sweep":
        sweep(args)
    elif args.command == "load":
        load(args)
    else:
        from . import report

        data = json.loads(Path(args.results).read_text())
        report.write_all(data, Path(args.out), readme=Path(args.readme) if args.readme else None,
                         accuracy=Path(args.accuracy) if args.accuracy else None, section_name=args.section,
                         command=args.command_name)


if __name__ == "__main__":
    main()
