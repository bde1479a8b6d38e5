"""GET / and /playground: the browser playground, one static HTML file (app/static/playground.html).

Open without an API key, and left out of the OpenAPI schema: the page holds no data; the requests it
makes (/compare, /info) carry the key the user types into it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Response

PAGE = Path(__file__).resolve().parents[2] / "static" / "playground.html"

router = APIRouter(include_in_schema=False)


_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


@lru_cache(maxsize=4)
def content_security_policy(page: bytes) -> str:
    """The page's policy: its own inline script and style by hash, requests to this origin only, no
    framing (clickjacking), no plugins, forms or base-URL changes. Anything injected runs nowhere."""
    sources = {b"script": "", b"style": ""}
    for kind, body in _INLINE.findall(page):
        sources[kind] += f" 'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
    script, style = (sources[k].strip() or "'none'" for k in (b"script", b"style"))
    return (f"default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@router.get("/")
@router.get("/playground")
async def playground() -> Response:
    # Read per request (13 KB, from the page cache): nothing at import, and an edited page shows on reload.
    page = PAGE.read_bytes()
    return Response(page, media_type="text/html; charset=utf-8", headers={
        "cache-control": "no-cache", "content-security-policy": content_security_policy(page),
        "x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"})
