"""The one ASGI middleware: request id, refusal while draining, body limit, timing headers,
request metrics and the access log, around a typed per-request record (app/api/record.py).

One pure-ASGI class rather than a stack of middlewares: each layer is a call and a wrapped
``send`` per request on the event loop, and BaseHTTPMiddleware would add a task and hide the
client-disconnect signal from the routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
import uuid

from fastapi import FastAPI
from pydantic import ValidationError

from ..core.errors import ClientDisconnected, ServiceError, TooManyInputs, Unavailable
from ..core.metrics import ModelMetrics
from ..core.service import Service, Status
from .deps import check_authorization
from .errors import HeadersTooLarge, SlowBody, render_exception, render_unexpected, render_validation
from .inference import DirectRoute
from .record import SCOPE_KEY, RequestRecord
from .routing import MAX_ECHOED_PATH, RouteTable
from .schemas import precheck_body

access_log = logging.getLogger("app.access")

# Kept as the request id when a client sends one like it; else a new one is drawn.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
QUIET_PATHS = frozenset(("/health", "/ready", "/metrics"))  # logged only when they fail
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class RequestContext:
    def __init__(self, app, service: Service, fastapi_app: FastAPI) -> None:
        self.app = app
        self.service = service
        self.fastapi_app = fastapi_app
        self._routes: RouteTable | None = None
        self._unrouted = service.metrics.bind("none", "none")  # refused before a model was chosen
        # uuid4's os.urandom cost 0.33 ms per call on the README's machine; an id only has to be
        # unique, so a generator seeded once from the OS draws them.
        self._rng = random.Random(os.urandom(16))

    @property
    def routes(self) -> RouteTable:
        """The app's routes as the router matches them (read once, after every router is included)."""
        if self._routes is None:
            self._routes = RouteTable(self.fastapi_app.routes)
        return self._routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid, length, authorization, content_type, json_length = b"", None, b"", b"", b""
        header_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        for k, v in scope["headers"]:
            header_bytes += len(k) + len(v) + 4
            if k == b"x-request-id":
                rid = v
            elif k == b"content-length":
                length = v
            elif k == b"authorization":
                authorization = v
            elif k == b"content-type":
                content_type = v
            elif k == b"inference-header-content-length":  # the Open Inference Protocol's binary tensors
                json_length = v
        # A client's id is echoed in a header and written to the log: only a short, plain one is kept.
        rid = rid.decode("ascii") if rid and REQUEST_ID.fullmatch(rid) else self._new_id()
        record = RequestRecord(rid, start)
        scope[SCOPE_KEY] = record
        status = 500

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", record.request_id.encode())]
                if (t := record.timings) is not None:
                    headers += [
                        (b"x-queue-time", b"%.3f" % (t.queue_s * 1000)),
                        (b"x-tokenization-time", b"%.3f" % (t.tokenization_s * 1000)),
                        (b"x-inference-time", b"%.3f" % (t.inference_s * 1000)),
                    ]
                headers.append((b"x-total-time", b"%.3f" % ((time.perf_counter() - start) * 1000)))
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                # The route decides before anything else: a path no route matches exactly is refused here.
                target = self.routes.resolve(scope["method"], scope["path"])
                record.inference, record.route = target.inference, target.path
                if header_bytes > self.service.settings.max_header_bytes:
                    raise HeadersTooLarge(f"the request line and headers take {header_bytes:,} bytes, over the "
                                          f"{self.service.settings.max_header_bytes:,}-byte limit")
                if record.inference:
                    # The key before the body: an unauthenticated client costs no buffering or parsing.
                    check_authorization(authorization.decode("latin-1"), self.service.settings)
                    if self.service.status == Status.DRAINING:
                        raise Unavailable("the service is shutting down; retry on another replica")
                body = await self._read_body(scope, receive, length)
                if record.inference and body:
                    # A body of binary tensors is JSON only up to this length: the rest is not scanned as JSON.
                    json_part = body[:int(json_length)] if json_length.isdigit() and len(json_length) <= 12 else body
                    precheck_body(json_part, self.service.settings.max_client_batch_size)
            except ServiceError as e:
                response = render_exception(e, record)
                if isinstance(e, SlowBody | HeadersTooLarge):  # the rest of its body may still come: do not read on
                    response.headers["connection"] = "close"
                await response(scope, receive, send_with_headers)
                return
            if body is None:  # the client left while sending: not a server error
                status, record.error_type = 499, "cancelled"
                return
            if (body and target.direct is not None and scope["method"] == "POST"
                    and content_type == b"application/json"):
                response = await self._call_direct(target.direct, scope, receive, body, record)
                await response(scope, receive, send_with_headers)
                return
            record.body = body
            await self.app(scope, _replay(body, receive), send_with_headers)
        except ClientDisconnected:
            status = 499  # nginx's code for "client closed request"
            record.error_type = "cancelled"
        finally:
            self._finish(scope, record, status, time.perf_counter() - start)

    @staticmethod
    async def _call_direct(route: DirectRoute, scope, receive, body: bytes, record: RequestRecord):
        """The route's endpoint on the body parsed and validated in one pass (pydantic-core's JSON
        parser), or on the raw body (V2 infer), its errors answered as FastAPI's handlers answer them
        (app/api/errors.py)."""
        try:
            return await route(body, scope, receive)
        except ValidationError as e:
            return render_validation(e.errors(include_url=False, include_context=False, include_input=False),
                                     record)
        except ServiceError as e:
            return render_exception(e, record)
        except (ClientDisconnected, asyncio.CancelledError):
            raise
        except Exception:
            return render_unexpected(record)

    async def _read_body(self, scope, receive, length: bytes | None) -> bytes | None:
        """The whole body, at most ``max_body_bytes`` (chunked uploads too) within
        ``body_timeout_s``, read here so both limits hold before any parsing; b"" for methods
        without one, None if the client went away."""
        settings = self.service.settings
        limit = settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooManyInputs(f"request body of {int(length)} bytes exceeds the {limit}-byte limit")
        if scope["method"] not in BODY_METHODS:
            return b""
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + settings.body_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise SlowBody(f"the request body did not arrive within {settings.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooManyInputs(f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _new_id(self) -> str:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4).hex

    def _finish(self, scope, record: RequestRecord, status: int, elapsed: float) -> None:
        path = record.route or scope["path"][:MAX_ECHOED_PATH]  # a label and a log field of bounded size
        if record.inference:
            engine = self.service.engine
            if record.model and engine is not None:
                m: ModelMetrics = engine.metrics[record.model]
                m.requests(path, status).inc()
                if status < 400:
                    m.request_duration(path).observe(elapsed)
                    if record.live_latency:
                        engine.record_latency(record.model, elapsed)
                else:
                    m.errors(path, record.error_type or "internal").inc()
            else:  # refused before a model was chosen (auth, validation, size, draining)
                self._unrouted.errors(path, record.error_type or "validation").inc()
        if (path in QUIET_PATHS and status < 400) or not access_log.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": record.request_id, "method": scope["method"], "path": path, "status": status,
            "model": record.model, "inputs": record.inputs, "tokens": record.tokens,
            "total_ms": round(elapsed * 1000, 3),
        }
        if (t := record.timings) is not None:
            fields.update(tokenization_ms=round(t.tokenization_s * 1000, 3), queue_ms=round(t.queue_s * 1000, 3),
                          inference_ms=round(t.inference_s * 1000, 3))
        if status >= 400:
            fields["error_type"] = record.error_type
        access_log.info("%s %s %s", scope["method"], path, status, extra={"fields": fields})


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then the real one's messages
    (the disconnect the routes watch for)."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
