"""The HTTP layer: routes, dependencies, the middleware, error mapping, request/response schemas."""
