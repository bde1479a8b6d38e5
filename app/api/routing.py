"""Which route will run a request, decided once, before the middleware does anything else.

Whether a request is inference (API key, body pre-check, draining refusal, request metrics) is a
property of the route that runs it, not of a string compare on the path: Starlette's route regex
(``^/classify$``) also matches ``/classify\\n``, so a path compare let ``POST /classify%0A`` run the
model without the key. Here a path with a control character is refused outright, and a path is
matched the way the router matches it (the same routes, in the same order), so the two cannot
disagree; the inference routes check the key again themselves (app/api/inference.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi.routing import iter_route_contexts

from .errors import BadPath, NoRoute
from .inference import DirectRoute, InferenceRoute, direct_route

# C0 controls and DEL, decoded or not: no route has one, and `$` in a route regex matches before "\n".
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ECHOED_PATH = 80


@dataclass(frozen=True, slots=True)
class Target:
    """What the router will run for a request."""

    path: str  # the route's path template: the metrics label, whatever the client sent
    inference: bool
    direct: DirectRoute | None  # set for a POST to an inference route the middleware can call itself
    methods: frozenset[str] | None  # None: any method


class RouteTable:
    """The app's routes in the router's order: static paths by dict, the few with parameters by regex."""

    def __init__(self, routes: Any) -> None:
        self._static: dict[str, list[tuple[int, Target]]] = {}
        self._dynamic: list[tuple[int, re.Pattern[str], Target]] = []
        for index, context in enumerate(iter_route_contexts(routes)):
            route = context.original_route
            path = context.path
            regex = getattr(route, "path_regex", None)
            if path is None or regex is None:
                continue  # not a path route (a mount or host route: none are registered)
            methods = getattr(route, "methods", None)
            inference = isinstance(route, InferenceRoute)
            target = Target(path, inference, direct_route(route) if inference else None,
                            frozenset(methods) if methods else None)
            if getattr(route, "param_convertors", None):
                self._dynamic.append((index, regex, target))
            else:
                self._static.setdefault(path, []).append((index, target))
        # A static path's candidates with the routes with parameters that also match it, in the router's order,
        # worked out once: a request for a static path then costs one dict lookup, no regex.
        for path, static in self._static.items():
            also = [(i, t) for i, regex, t in self._dynamic if regex.match(path)]
            self._static[path] = sorted([*static, *also], key=lambda c: c[0])

    def resolve(self, method: str, path: str) -> Target:
        """The target the router runs for ``method`` and ``path``: the first route that matches path
        and method, else the first that matches the path (the router's 405); BadPath or NoRoute."""
        if _CONTROL.search(path):
            raise BadPath("the request path holds a control character (CR, LF, NUL, TAB, ...); "
                          "send the route's path as documented")
        candidates = self._static.get(path)
        if candidates is None:
            candidates = [(i, t) for i, regex, t in self._dynamic if regex.match(path)]
        if not candidates:
            shown = path if len(path) <= MAX_ECHOED_PATH else path[:MAX_ECHOED_PATH] + "..."
            raise NoRoute(f"no route matches {shown!r} exactly; the routes are listed at /docs "
                          "(no trailing slash, case as documented)")
        for _, target in candidates:
            if target.methods is None or method in target.methods:
                return target
        return candidates[0][1]
