"""Every router, gathered in one place."""

from fastapi import APIRouter

from . import compare, inference, openai, ops

api_router = APIRouter()
api_router.include_router(inference.router)
api_router.include_router(openai.router)
api_router.include_router(compare.router)
api_router.include_router(ops.router)
