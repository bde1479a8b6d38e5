"""The one writer of generated sections: every generated block lives between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, in the README or in one of the pages of docs/ beside it, and is replaced whole by
the command that measured it (bench/report.py, bench/model_speed.py, experiments/, ...). A section moves
between pages by moving its markers; the commands keep naming the README."""

from __future__ import annotations

import os
import re
from pathlib import Path


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def page_of(readme: Path, section: str) -> Path:
    """The page holding ``section``'s markers: the README itself, else a page of docs/ beside it."""
    start, end = markers(section)
    readme = Path(readme)
    for page in [readme, *sorted((readme.parent / "docs").glob("*.md"))]:
        text = page.read_text() if page.is_file() else ""
        if start in text and end in text:
            return page
    raise SystemExit(f"neither {readme} nor {readme.parent / 'docs'}/*.md has the {start} ... {end} markers")


_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")


def rebase(body: str, base: Path, page_dir: Path) -> str:
    """Markdown links and images written relative to ``base`` made relative to ``page_dir``."""
    def fix(m: re.Match) -> str:
        target, _, anchor = m.group(1).partition("#")
        moved = os.path.relpath(base / target, page_dir)
        return f"]({moved}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, body)


def write_section(readme: Path, section: str, body: str) -> None:
    """Replace what is between the ``<!-- {section}:start/end -->`` markers with ``body``, in the README or
    the docs page that holds them."""
    start, end = markers(section)
    page = page_of(readme, section)
    if page.parent != Path(readme).parent:  # the commands write links relative to the README
        body = rebase(body, Path(readme).parent, page.parent)
    text = page.read_text()
    page.write_text(re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}",
                           text, flags=re.S))
