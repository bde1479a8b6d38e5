"""Every router, gathered in one place: a new route module adds its ``router`` here.

create_app includes each into the app directly: a router included in a router is one more
level FastAPI walks when matching every request.
"""

from fastapi import APIRouter

from . import compare, native, openai, ops, playground, v2

routers: list[APIRouter] = [native.router, openai.router, compare.router, v2.router, v2.meta_router, ops.router,
                            playground.router]
