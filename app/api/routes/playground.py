"""GET / and /playground: the browser playground, one static HTML file (app/static/playground.html).

Open without an API key, and left out of the OpenAPI schema: the page holds no data; the requests it
makes (/compare, /info) carry the key the user types into it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

PAGE = Path(__file__).resolve().parents[2] / "static" / "playground.html"

router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get("/playground")
async def playground() -> Response:
    # Read per request (13 KB, from the page cache): nothing at import, and an edited page shows on reload.
    return Response(PAGE.read_bytes(), media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})
