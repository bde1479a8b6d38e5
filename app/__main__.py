"""Start the service: ``python -m app`` or ``distilbert-serve``.

One process per device, batching inside it. Not ``--workers N``: each worker would
hold its own copy of every model and batch alone, so batches get smaller and memory
N times larger; scale out with replicas instead (README, "Deployment").
"""

from __future__ import annotations

import argparse
import atexit
import logging
import logging.handlers
import os
import queue
import signal
import sys

import orjson
import uvicorn

from .connections import OPS_LIMIT_CONCURRENCY, ops_app, protocol_class
from .main import create_app
from .settings import Settings, load_settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access record's ``fields`` become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        body = dict(fields) if isinstance(fields, dict) else {"message": record.getMessage()}
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, **body}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered by HandOff before the record crossed threads
            out["exception"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class HandOff(logging.handlers.QueueHandler):
    """Queues the record itself: the listener thread formats it, off the event loop (the JSON
    line was built on the loop once per request). A traceback is rendered here, while its
    frames are still alive."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record.exc_text = self.formatter.formatException(record.exc_info) if self.formatter else None
            record.exc_info = None
        return record


def configure_logging(level: str) -> logging.handlers.QueueListener:
    """Lines are formatted and written by a listener thread: a write to stderr took 0.14 ms on
    the README's machine, on the event loop once per request."""
    # What a record gathers that no line prints (JsonFormatter writes the time, level, logger and fields):
    # the caller's file and line (a walk of the stack), the thread's and the process's names. Each cost the
    # event loop on every request's access line (logging's own switches for it).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    records: queue.SimpleQueue = queue.SimpleQueue()
    to_queue = HandOff(records)
    to_queue.setFormatter(JsonFormatter())
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, to_stderr)
    listener.start()
    atexit.register(listener.stop)  # flushes what is queued
    root = logging.getLogger()
    root.handlers[:] = [to_queue]
    root.setLevel(level.upper())
    return listener


class Server(uvicorn.Server):
    """uvicorn's server, telling the service it is draining the moment SIGTERM arrives; a second
    SIGTERM ends the process at once with exit code 1 (an operator who means it).

    ``ops``: the ops port's server, in the same event loop. It listens before the API port (a port
    taken fails the start before the models load) and stops after the API port's drain, so the
    probes and Prometheus see the drain through it."""

    def __init__(self, config: uvicorn.Config, on_exit, before_hard_exit=None,
                 ops: uvicorn.Config | None = None) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._before_hard_exit = before_hard_exit
        self._terminating = False
        self.ops = uvicorn.Server(ops) if ops is not None else None

    async def startup(self, sockets=None) -> None:
        if self.ops is not None:
            self.ops.config.load()
            self.ops.lifespan = self.ops.config.lifespan_class(self.ops.config)  # "off": the API's lifespan runs once
            await self.ops.startup()
        await super().startup(sockets)

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if self.ops is not None:  # its own main loop does not run: the Date header comes from this one
            self.ops.server_state.default_headers = self.server_state.default_headers
        return should_exit

    async def shutdown(self, sockets=None) -> None:
        await super().shutdown(sockets)
        if self.ops is not None and self.ops.started:
            await self.ops.shutdown()

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGTERM and self._terminating:
            logging.getLogger("app").warning("second SIGTERM: exiting now, the drain cut short")
            if self._before_hard_exit:
                self._before_hard_exit()
            os._exit(1)
        self._terminating = self._terminating or sig == signal.SIGTERM
        self._on_exit()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown; a completed SIGTERM drain is a
        # clean stop, so the process exits 0 (what orchestrators expect).
        if sig == signal.SIGTERM:
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="distilbert-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML/JSON settings file (also DISTIL_CONFIG)")
    p.add_argument("--host", help="bind address (DISTIL_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (DISTIL_PORT; default 8000)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (DISTIL_DEVICE)")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("device", args.device)) if v}
    settings = load_settings(args.config, **overrides)
    listener = configure_logging(settings.log_level)
    app = create_app(settings)
    service = app.state.service
    Server(uvicorn_config(app, settings), service.drain, listener.stop, ops=ops_config(app, settings)).run()
    if not service.idle:
        # A load or forward the bounded shutdown did not wait for is still inside torch: the
        # interpreter's exit would abort in it ("terminate called without an active exception").
        listener.stop()
        os._exit(0)


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    """uvicorn with the settings' connection limits and head deadlines (app/connections.py). The
    graceful timeout as given (a float; uvicorn waits that long for requests, the lifespan then has
    what is left of the same budget)."""
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        http=protocol_class(settings.http, settings.header_timeout_s, settings.max_header_bytes),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def ops_config(app, settings: Settings) -> uvicorn.Config | None:
    """The ops port (None when ``ops_port`` is unset): /health, /ready and /metrics of the same app,
    its own connection limit, the same deadlines, no lifespan of its own."""
    if settings.ops_port is None:
        return None
    return uvicorn.Config(
        ops_app(app), host=settings.host, port=settings.ops_port, log_config=None, access_log=False,
        lifespan="off", limit_concurrency=OPS_LIMIT_CONCURRENCY,
        timeout_graceful_shutdown=1,  # the probes' requests are short; the API's drain came before
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        http=protocol_class(settings.http, settings.header_timeout_s, settings.max_header_bytes),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


if __name__ == "__main__":
    main()
