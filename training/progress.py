"""Progress that reads well wherever it goes: a redrawn bar on a terminal, a plain line every so often
anywhere else (CI, ``make models > log``, a Kubernetes Job's log), where a bar's carriage-return frames
would fill the file with hundreds of copies of itself."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

LINE_EVERY_S = 30.0  # seconds between lines when the output is not a terminal


class Lines:
    """tqdm's interface as used here (update, set_postfix, close), writing one line per interval: what
    is done, the rate, the time left, and the last postfix."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 every_s: float = LINE_EVERY_S, file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self.file = every_s, file or sys.stderr
        self.start = self.last = time.monotonic()
        self.start_n = initial
        self.postfix = ""
        self.closed = False

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._write(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        elapsed = now - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and rate > 0 and self.n < self.total:
            left = f", {_clock((self.total - self.n) / rate)} left"
        extra = f", {self.postfix}" if self.postfix else ""
        speed = f"{rate:.2f} {self.unit}/s"
        print(f"{self.desc}: {done} {self.unit}s{pct}, {speed}, {_clock(elapsed)} elapsed{left}{extra}", file=self.file,
              flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class _Off:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def progress(total: int | None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
             file: TextIO | None = None) -> Any:
    """A bar on a terminal, lines elsewhere, nothing when disabled."""
    if not enabled:
        return _Off()
    out = file or sys.stderr
    if out.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=out)
    return Lines(total, desc, unit, initial, file=out)
