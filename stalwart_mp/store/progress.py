"""A progress line on standard error for long store operations (copy, verify, count).

Hand-written rather than a dependency: one line, rewritten in place on a terminal
(carriage return), or printed every few seconds when standard error is a file or a pipe
(a log, a test), so an operator running a migration over ssh or under a supervisor sees the
same figures: how many keys, how fast, and how long is left when the total is known.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_SPINNER = "|/-\\"
_BAR = 24


def format_duration(seconds: float) -> str:
    """``4.2s`` under a minute (a small copy is not "0:00:00"), else ``h:mm:ss``."""
    if seconds < 60:
        return f"{max(0.0, seconds):.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Counts items (and bytes) and draws ``label count/total pct [bar] rate ETA``.

    Without a total (counting keys, say) a spinner replaces the bar and the ETA.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "keys",
        stream: TextIO | None = None,
        interval: float | None = None,
        initial: int = 0,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = initial  # already done before this run (a resumed copy): not in the rate
        self._initial = initial
        self.bytes = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval if interval is not None else (0.2 if self._tty else 5.0)
        self._start = time.monotonic()
        self._last_draw = self._start  # first figures after one interval: rates settle
        self._spin = 0
        self._width = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def advance(self, count: int, nbytes: int = 0) -> None:
        self.done += count
        self.bytes += nbytes
        now = time.monotonic()
        if now - self._last_draw >= self._interval:
            self._last_draw = now
            self._draw(now, final=False)

    def finish(self) -> None:
        """Draw the final figures and end the line."""
        self._draw(time.monotonic(), final=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._start, 1e-6)
        rate = (self.done - self._initial) / elapsed
        parts = [self.label]
        if self.total is not None:
            total = max(self.total, self.done)
            fraction = self.done / total if total else 1.0
            filled = int(fraction * _BAR)
            parts.append(f"{self.done:,}/{total:,} {self.unit}")
            parts.append(f"{fraction * 100:5.1f}% [{'#' * filled}{'.' * (_BAR - filled)}]")
        else:
            self._spin = (self._spin + 1) % len(_SPINNER)
            parts.append(f"{_SPINNER[self._spin]} {self.done:,} {self.unit}")
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if self.bytes:
            parts.append(f"{format_bytes(self.bytes / elapsed)}/s")
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"in {format_duration(elapsed)}")
        return "  ".join(parts)

    def _draw(self, now: float, *, final: bool) -> None:
        text = self.line(now)
        if self._tty:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self._stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
