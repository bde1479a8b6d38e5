"""Where a request's event-loop time goes, by layer: the service's main thread (its event loop) under
cProfile while the lean client sends single-sentence requests at concurrency 32, each function's own time
summed into the layer its file belongs to (HTTP parsing, the connection deadlines, the middleware and
routing, validation, the endpoint and serialization, the hand-off to the batcher, asyncio itself).

    python -m bench.loop_profile --model-dir ~/.cache/distilbert-serve/minilm \
        --out bench/results/loop_profile.json --readme README.md

cProfile slows every Python call alike, so the absolute milliseconds are larger than `bench.loop_cost`'s;
the shares are what to read. Only the main thread's CPU time is counted (the profiler's clock is
``time.thread_time``): tokenization threads, the compute thread, the batchers and the idle wait in select()
are not the loop's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

from lab import environment as env
from lab.loadgen import Level, run_level
from lab.readme import write_section
from lab.server import ROOT, free_port, stop_server, wait_ready

SENTENCES = ["the movie was great", "stocks fell sharply today after the report",
             "a quiet film about two brothers", "the kitten slept on the warm windowsill all afternoon"]
# (layer, substrings of a function's file name), first match wins; the order puts our files before libraries.
LAYERS = (
    ("connection deadlines (app/connections.py)", ("app/connections.py",)),
    ("middleware and routing (app/api/middleware.py, routing.py, record.py)",
     ("app/api/middleware.py", "app/api/routing.py", "app/api/record.py")),
    ("validation (pydantic, app/api/schemas.py)", ("pydantic", "app/api/schemas.py")),
    ("endpoint and response (app/api/routes, inference.py, errors.py; orjson; starlette responses)",
     ("app/api/routes/", "app/api/inference.py", "app/api/errors.py", "app/api/deps.py", "orjson",
      "starlette/responses.py", "starlette/requests.py", "starlette/datastructures.py")),
    ("hand-off to the batcher and back (app/core)", ("app/core/",)),
    ("tokenization on the loop (app/backends, model/tokenizer.py, tokenizers)",
     ("app/backends/", "model/tokenizer.py", "tokenizers")),
    ("FastAPI and Starlette (app entry, body limit, exceptions)", ("fastapi/", "starlette/")),
    ("metrics and access log (prometheus_client, logging)", ("prometheus_client", "logging/")),
    ("HTTP parsing and protocol (uvicorn, httptools, h11)", ("uvicorn/", "httptools", "h11/")),
    ("asyncio and sockets", ("asyncio/", "selectors.py", "socket.py", "<built-in method select", "ssl.py")),
)
OTHER = "other"


def layer_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for layer, needles in LAYERS:
        if any(n in where for n in needles):
            return layer
    return OTHER


def serve(args: argparse.Namespace) -> None:
    """The service in this process, its main thread under cProfile from the first request on."""
    from app.__main__ import Server, configure_logging, uvicorn_config
    from app.main import create_app
    from app.settings import load_settings

    settings = load_settings(None, port=args.port)
    configure_logging(settings.log_level)
    app = create_app(settings)
    server = Server(uvicorn_config(app, settings), app.state.service.drain)
    profiler = cProfile.Profile(time.thread_time)  # this thread's CPU: a wait in select() costs nothing
    Path(args.ready_file).unlink(missing_ok=True)

    async def start_when_told() -> None:  # profile the load, not the start-up and warm-up
        while not Path(args.ready_file).exists():
            await asyncio.sleep(0.05)
        profiler.enable()

    async def main() -> None:
        task = asyncio.ensure_future(start_when_told())
        await server.serve()
        task.cancel()

    # The event loop `python -m app` runs (uvicorn's choice: uvloop where installed), not asyncio's default.
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(main())
    profiler.disable()
    profiler.dump_stats(args.stats)


def summarize(stats_file: Path, requests: int) -> dict:
    """Each function's own time to its file's layer; a built-in's (a C function: file "~") to its callers'
    layers, in the share each caller spent in it."""
    stats = pstats.Stats(str(stats_file))
    by_layer: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~" and callers:
            for (c_file, _c_line, c_name), caller in callers.items():
                layer = layer_of(c_file, c_name)
                by_layer[layer] = by_layer.get(layer, 0.0) + caller[2]
            continue
        layer = layer_of(filename, name)
        by_layer[layer] = by_layer.get(layer, 0.0) + tottime
    total = sum(by_layer.values())
    rows = [{"layer": k, "ms_per_request": 1000 * v / requests, "share": v / total}
            for k, v in sorted(by_layer.items(), key=lambda kv: -kv[1])]
    return {"requests": requests, "total_ms_per_request": 1000 * total / requests, "layers": rows}


def markdown(out: dict) -> str:
    s = out["summary"]
    lines = [f"Measured by `python -m bench.loop_profile` on {out['created']} ({out['environment']['cpu']}, "
             f"load average {out['load_average']:.1f}): {s['requests']} single-sentence `{out['endpoint']}` requests "
             f"at concurrency {out['concurrency']}, the event loop's own time per request under cProfile "
             f"({s['total_ms_per_request']:.3f} ms with the profiler's cost; `bench.loop_cost` measures without it).",
             "", "| layer | ms per request (profiled) | share |", "|---|---:|---:|"]
    lines += [f"| {r['layer']} | {r['ms_per_request']:.3f} | {100 * r['share']:.1f}% |" for r in s["layers"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="checkpoint folder the service serves (required unless --report-only)")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--endpoint", default="/v1/embeddings", choices=["/v1/embeddings", "/embed"])
    p.add_argument("--out", default="bench/results/loop_profile.json")
    p.add_argument("--readme", help="write the loop-profile section from the results")
    p.add_argument("--report-only", action="store_true", help="measure nothing: the section from --out")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the profiled service
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args)
        return {}
    if args.report_only:
        out = json.loads(Path(args.out).read_text())
    else:
        if not args.model_dir:
            p.error("--model-dir is required")
        out = measure(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.readme:
        write_section(Path(args.readme), "loop-profile", markdown(out))
    print(markdown(out))
    return out


def measure(args: argparse.Namespace) -> dict:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"loop-profile-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    stats, ready = work / "loop.pstats", work / "profile-now"
    port = free_port()
    models = [{"name": "student", "path": str(Path(args.model_dir).expanduser().resolve()), "role": "student"}]
    env_vars = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_DEVICE": "cpu"}
    env_vars.pop("DISTIL_CONFIG", None)
    with open(work / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.loop_profile", "--serve", "--port", str(port),
                                 "--stats", str(stats), "--ready-file", str(ready)], cwd=ROOT, env=env_vars,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    load = os.getloadavg()[0]
    try:
        wait_ready(url, proc)
        inputs = [([s], 0) for s in SENTENCES]
        warm = Level("student", args.endpoint, "short", "closed", concurrency=args.concurrency, requests=300,
                     duration_s=60.0)
        asyncio.run(run_level(url, warm, inputs, client="lean"))
        ready.touch()
        time.sleep(0.3)
        level = Level("student", args.endpoint, "short", "closed", concurrency=args.concurrency,
                      requests=args.requests, duration_s=120.0)
        result = asyncio.run(run_level(url, level, inputs, client="lean"))
    finally:
        stop_server(proc)
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "endpoint": args.endpoint,
            "concurrency": args.concurrency, "load_average": load, "environment": env.capture(),
            "ok": result.ok, "summary": summarize(stats, result.ok)}


if __name__ == "__main__":
    main()
