"""What every inference route shares: the route class that marks it, its documented errors,
and ``infer``, the steps from texts to results with the request's record kept up to date."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import StringConvertor

from ..backends import Backend, OutputSpec
from ..core.errors import ClientDisconnected
from ..core.service import Result, Service
from .deps import check_authorization, service_of
from .record import RequestRecord
from .schemas import ErrorBody

T = TypeVar("T")

ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 503, 504)}


class InferenceRoute(APIRoute):
    """Marks an inference route: refused while draining, counted in the request metrics by
    model (the middleware finds these routes by this class, not by a list of paths).

    Its handler parses the body the middleware has already read rather than reading it again
    through ``receive`` (Starlette's stream generator was a tenth of the event loop's time). It
    checks the API key itself as well: a second layer behind the middleware's check, so a request
    the middleware took for something else still cannot run a model without the key."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_read(request: Request) -> Response:
            require_key(request)
            record = RequestRecord.of(request)
            if record is not None and record.body is not None:
                request = _ReadRequest(request.scope, request.receive, record.body)
            return await handle(request)

        return handle_read


def require_key(request: Request) -> None:
    """The API key check of every inference route (Unauthorized, answered 401 by errors.py). Without a key set,
    no header is parsed: this runs on every request."""
    settings = service_of(request).settings
    if settings.api_key:
        check_authorization(request.headers.get("authorization", ""), settings)


class _ReadRequest(Request):
    """A request whose body is already in memory."""

    def __init__(self, scope, receive, body: bytes) -> None:
        super().__init__(scope, receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read

    async def json(self) -> Any:
        # orjson: a nesting past its depth limit is a JSONDecodeError (422), where json.loads raises
        # RecursionError (a 500); it also refuses NaN and lone surrogates, which no input needs.
        if not hasattr(self, "_json"):
            self._json = orjson.loads(self._read)
        return self._json


@dataclass(frozen=True)
class DirectRoute:
    """An inference route the middleware calls itself for a JSON body: the endpoint and its body
    model, without Starlette's routing, FastAPI's dependency solving and its exception stack (two
    fifths of the event loop's time per small request). The route stays registered: the OpenAPI
    schema, and any request the middleware does not take (another content type), go through FastAPI.

    An endpoint without a body model (``body`` None: V2 infer) takes the route's path parameters by
    name and reads the raw body from its request, as FastAPI would call it."""

    endpoint: Callable[..., Awaitable[Response]]
    body: type[BaseModel] | None
    path: re.Pattern[str] | None = None  # with body None: the route's regex; its named groups are the parameters

    async def __call__(self, body: bytes, scope, receive) -> Response:
        """The endpoint's answer; pydantic's ValidationError for a body its model refuses."""
        if self.body is not None:
            parsed = self.body.model_validate_json(body)
            request = Request(scope, receive)
            require_key(request)  # as InferenceRoute's handler does: the route's own layer
            return await self.endpoint(parsed, request)
        request = _ReadRequest(scope, receive, body)
        require_key(request)
        match = self.path.match(scope["path"]) if self.path is not None else None
        params = match.groupdict() if match is not None else {}
        scope["path_params"] = params  # as Starlette's route sets them (its str convertor is the identity)
        return await self.endpoint(**params, request=request)


def direct_route(route: Any) -> DirectRoute | None:
    """The DirectRoute of an inference route with POST as its one method whose endpoint is ``(body, request)``
    with a pydantic body, or ``(*path parameters, request)`` with str parameters; None for any other route."""
    if not isinstance(route, InferenceRoute) or route.methods != {"POST"}:
        return None
    names = list(inspect.signature(route.endpoint).parameters)
    if names == ["body", "request"]:
        model = get_type_hints(route.endpoint)["body"]
        if isinstance(model, type) and issubclass(model, BaseModel):
            return DirectRoute(route.endpoint, model)
        return None
    convertors = route.param_convertors
    if (convertors and names == [*convertors, "request"]
            and all(isinstance(c, StringConvertor) for c in convertors.values())
            and all(get_type_hints(route.endpoint).get(n) is str for n in convertors)):
        return DirectRoute(route.endpoint, None, route.path_regex)
    return None


def inference_router(tag: str) -> APIRouter:
    """A router for inference routes: errors documented, routes marked. The middleware checks the
    API key of every marked route before reading its body; the routes take the service from the
    request, not as a dependency: FastAPI solves each dependency level on every request."""
    return APIRouter(route_class=InferenceRoute, responses=ERROR_RESPONSES, tags=[tag])


def json_response(body: dict) -> Response:
    # orjson straight to bytes: the response_model would re-validate thousands of floats.
    return Response(orjson.dumps(body), media_type="application/json")


async def infer(request: Request, service: Service, backend: Backend, texts: list[str], truncate: bool,
                spec: OutputSpec, deadline: float | None = None, watch: bool = True) -> Result:
    """Tokenize, queue, wait: all under one deadline (a new one unless given), and, with
    ``watch``, given up as soon as the client disconnects (tokenization included)."""
    record = RequestRecord.of(request)
    assert record is not None
    record.model, record.role, record.inputs = backend.name, backend.role, len(texts)
    deadline = service.deadline() if deadline is None else deadline

    async def steps() -> Result:
        prep = await service.prepare(backend, texts, truncate, deadline)
        record.tokens = prep.tokens
        return await service.run(prep, spec, deadline)

    result = await (until_disconnect(request, steps()) if watch else steps())
    record.timings = result.timings
    return result


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (its queued inputs are then
    dropped) and raise ClientDisconnected. One watcher task that cancels this one, rather than
    a task for the work and asyncio.wait over both: half the event-loop work per request."""
    task = asyncio.current_task()
    assert task is not None
    watching, gone = True, False

    def on_disconnect(watcher: asyncio.Future) -> None:
        nonlocal gone
        if watching and not watcher.cancelled() and watcher.exception() is None:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(_wait_disconnect(request))
    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnected("the client went away") from None
        raise
    finally:
        watching = False
        watcher.cancel()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
