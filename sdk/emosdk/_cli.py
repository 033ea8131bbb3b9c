"""What every emosdk command does around its work: logging, errors as exit codes, pipes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .errors import EmosdkError


def run_command(prog: str, verbose: bool, work: Callable[[], int]) -> int:
    """Run ``work`` with logging set up; an EmosdkError is printed and exits 2, a closed pipe
    (e.g. output piped into ``head``) exits 0."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return work()
    except EmosdkError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()
        return 0


class ProgressLine:
    """Progress of long work on stderr: ``decoding 120/899 files (13%), 15.2/s, 0:52 left``.

    On a terminal it rewrites one line (at most 5 times a second); elsewhere it prints a line
    every 10 %. Called as ``progress(what, done, total)``; :meth:`close` ends the line.
    """

    def __init__(self, stream: TextIO | None = None, unit: str = "files") -> None:
        self.stream = stream or sys.stderr
        self.unit = unit
        self.tty = self.stream.isatty()
        self._what: str | None = None
        self._t0 = self._last = 0.0
        self._step = -1

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if what != self._what:
            self.close()
            self._what, self._t0, self._last, self._step = what, now, 0.0, -1
        step = 10 * done // max(total, 1)
        if self.tty:
            if now - self._last < 0.2 and done < total:
                return
        elif step == self._step and done < total:
            return
        self._last, self._step = now, step
        rate = done / (now - self._t0) if now > self._t0 and done else 0.0
        left = f", {_clock((total - done) / rate)} left" if rate and done < total else ""
        line = (
            f"{what} {done}/{total} {self.unit} ({100 * done // max(total, 1)}%), "
            f"{rate:.1f}/s{left}"
        )
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._what is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._what = None


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
