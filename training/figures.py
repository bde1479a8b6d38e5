"""Plots for the commands' reports: matplotlib when it is installed (the plot is skipped, and the log says so,
when it is not), written atomically so a report never links a half-written image."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("compress")


def pyplot(path: Path) -> Any:
    """matplotlib's pyplot on the Agg backend, or None (logged: no ``path``) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no %s", path.name)
        return None
    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
