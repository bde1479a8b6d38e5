"""LitServe serving all-MiniLM-L6-v2 for the peer race (bench/peers.py): run with .venv-litserve's python.

    .venv-litserve/bin/python bench/peer_litserve.py --model FOLDER --port 8000

A LitAPI with LitServe's own dynamic batching (``max_batch_size``, ``batch_timeout`` on the LitAPI, as
its docs put them since 0.2.x) and the LitServer its docs recommend on a CPU (a worker per core, ZeroMQ's
``fast_queue`` above 100 requests/s; torch's threads shared out between the workers is ours):
``decode_request`` takes an OpenAI-style ``/v1/embeddings`` body, the loop collects up to ``max_batch_size``
requests, ``predict`` runs them through transformers' BertModel with mean pooling over real tokens,
``encode_response`` answers in the OpenAI shape. The route is a custom ``api_path`` and not LitServe's
``OpenAIEmbeddingSpec``: with batching on, that spec answers 400 to a request holding more than one input,
and the race sends 16-input requests (and its fidelity check too).

Standalone on purpose: it imports neither our app nor our model code, only what its venv holds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import litserve as ls


class Embeddings(ls.LitAPI):
    def __init__(self, folder: str, name: str, threads: int | None = None, **kwargs) -> None:
        super().__init__(api_path="/v1/embeddings", **kwargs)
        self.folder, self.name, self.threads = folder, name, threads

    def setup(self, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        if self.threads:
            torch.set_num_threads(self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).to(device).eval()
        self.device = device

    def decode_request(self, request: dict) -> list[str]:
        texts = request["input"]
        return [texts] if isinstance(texts, str) else list(texts)

    def predict(self, batch: list[list[str]]) -> list[list[list[float]]]:
        """One forward for every request the loop collected; vectors split back per request."""
        torch = self.torch
        flat = [t for texts in batch for t in texts]
        enc = self.tokenizer(flat, padding=True, truncation=True, max_length=256, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            h = self.model(**enc).last_hidden_state  # (B, T, C)
            m = enc["attention_mask"][:, :, None].to(h.dtype)  # (B, T, 1)
            vecs = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).tolist()
        out, i = [], 0
        for texts in batch:
            out.append(vecs[i:i + len(texts)])
            i += len(texts)
        return out

    def encode_response(self, vectors: list[list[float]]) -> dict:
        return {"object": "list", "model": self.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}


MAIN_PID = os.getpid()


def _interrupt(signum, frame) -> None:
    if os.getpid() != MAIN_PID:  # a forked API server: end as SIGTERM would have ended it
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt  # LitServer.run stops its API servers and inference workers on it, not on SIGTERM


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the sentence-transformers folder (config.json, weights, tokenizer)")
    p.add_argument("--name", default="minilm", help="the model name its responses carry")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    # 32: the race's highest concurrency of single-sentence requests, and infinity's --batch-size.
    p.add_argument("--max-batch-size", type=int, default=32)
    # LitServe waits the whole batch_timeout for a batch that is not full (at c=1 every request pays it);
    # 0 makes its worker poll the queue without sleeping, which on a 2-core machine costs a core.
    p.add_argument("--batch-timeout", type=float, default=0.01, help="seconds")
    cores = len(os.sched_getaffinity(0))
    # LitServer's docs: on a CPU, workers_per_device = the cores; fast_queue (ZeroMQ) above 100 requests/s.
    p.add_argument("--workers", type=int, default=cores, help="inference worker processes (workers_per_device)")
    p.add_argument("--fast-queue", action=argparse.BooleanOptionalAction, default=True,
                   help="LitServer(fast_queue=...): ZeroMQ between the API servers and the workers")
    # Not in its docs, ours: the cores shared out, since torch's default (every core in every worker) makes the
    # workers and the API servers fight over them (c=1 p50 100 to 750 ms instead of 24 ms on a shared 2-core machine).
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    args = p.parse_args(argv)
    args.threads = args.threads or max(1, cores // args.workers)
    print(f"[litserve] max_batch_size={args.max_batch_size} batch_timeout={args.batch_timeout} "
          f"workers_per_device={args.workers} torch threads={args.threads} fast_queue={args.fast_queue}",
          file=sys.stderr)
    api = Embeddings(args.model, args.name, threads=args.threads, max_batch_size=args.max_batch_size,
                     batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, fast_queue=args.fast_queue)
    signal.signal(signal.SIGTERM, _interrupt)  # the race stops servers by SIGTERM
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
