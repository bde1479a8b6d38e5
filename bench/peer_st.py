"""sentence-transformers' ONNX backend, in-process, for the peer race (bench/peers.py): run with .venv-st's python.

    .venv-st/bin/python bench/peer_st.py prepare --model FOLDER --out DIR --quantization avx512_vnni
    .venv-st/bin/python bench/peer_st.py serve --dir DIR --file onnx/model.onnx

``prepare``: ``SentenceTransformer(FOLDER, backend="onnx")`` exports the folder with optimum, saved in DIR
(``onnx/model.onnx``, fp32), then ``export_dynamic_quantized_onnx_model`` writes its dynamic int8
(``onnx/model_qint8_<config>.onnx``). ``serve``: loads one of those files and answers JSON lines on stdin,
one line each on stdout, so the race drives it between the HTTP engines' blocks without HTTP:

    {"op": "embed", "texts": [...]}                      -> {"vectors": [[...], ...]}
    {"op": "block", "texts": [...], "per_call": 32,      -> {"latency_ms": {...}, "inputs_per_s": ..., "sent": ...,
     "duration_s": 4, "warmup": 5, "seed": 0}               "ok": ..., "errors": {}, "extra": {...}}

A block calls ``model.encode`` on ``per_call`` sentences at a time (the texts in order, from an offset the seed
picks) for ``duration_s``: latency is one call's, throughput the sentences per second.

Standalone on purpose: it imports neither our app nor our model code, only what its venv holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def prepare(args: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    model = SentenceTransformer(args.model, backend="onnx", device="cpu")  # optimum's export of the folder
    model.save_pretrained(args.out)
    export_dynamic_quantized_onnx_model(model, args.quantization, args.out)
    print(json.dumps({"files": sorted(os.listdir(os.path.join(args.out, "onnx")))}))


def _summary(latencies: list[float], sentences: int, elapsed: float, per_call: int) -> dict:
    import numpy as np

    ms = np.asarray(latencies) * 1000
    pct = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)}
    return {"latency_ms": {**pct, "max": float(ms.max()), "mean": float(ms.mean())},
            "inputs_per_s": sentences / elapsed, "sent": len(latencies), "ok": len(latencies), "errors": {},
            "extra": {"in_process": True, "sentences_per_call": per_call}}


def block(model, texts: list[str], per_call: int, duration_s: float, warmup: int, seed: int) -> dict:
    i = (seed * 7919) % len(texts)

    def take() -> list[str]:
        nonlocal i
        out = [texts[(i + k) % len(texts)] for k in range(per_call)]
        i = (i + per_call) % len(texts)
        return out

    for _ in range(warmup):
        model.encode(take(), batch_size=per_call)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < duration_s:
        batch = take()
        t0 = time.perf_counter()
        model.encode(batch, batch_size=per_call)
        latencies.append(time.perf_counter() - t0)
    return _summary(latencies, len(latencies) * per_call, time.perf_counter() - start, per_call)


def serve(args: argparse.Namespace) -> None:
    # The protocol owns the real stdout; whatever a library prints goes to stderr (the race's log).
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.dir, backend="onnx", device="cpu", model_kwargs={"file_name": args.file})
    model.encode(["warm up"])

    def answer(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    answer({"ready": True, "file": args.file})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "embed":
            answer({"vectors": model.encode(cmd["texts"], batch_size=32).tolist()})
        elif cmd["op"] == "block":
            answer(block(model, cmd["texts"], cmd["per_call"], cmd["duration_s"], cmd.get("warmup", 5),
                         cmd.get("seed", 0)))
        else:
            answer({"error": f"unknown op {cmd['op']!r}"})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="export the folder to ONNX fp32 and its dynamic int8")
    pp.add_argument("--model", required=True, help="the sentence-transformers folder")
    pp.add_argument("--out", required=True)
    pp.add_argument("--quantization", default="avx512_vnni", choices=["arm64", "avx2", "avx512", "avx512_vnni"],
                    help="optimum's dynamic quantization config (what the CPU supports)")
    ps = sub.add_parser("serve", help="answer embed/block commands on stdin")
    ps.add_argument("--dir", required=True, help="the folder prepare wrote")
    ps.add_argument("--file", default="onnx/model.onnx", help="the ONNX file under it")
    args = p.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()
