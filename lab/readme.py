"""The one README-section writer: every generated block lives between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and is replaced whole by the command that
measured it (bench/report.py, bench/model_speed.py, experiments/, ...)."""

from __future__ import annotations

import re
from pathlib import Path


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def write_section(readme: Path, section: str, body: str) -> None:
    """Replace what is between the README's ``<!-- {section}:start/end -->`` markers with ``body``."""
    start, end = markers(section)
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    readme.write_text(re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}",
                             text, flags=re.S))
