"""What every emosdk command does around its work: logging, errors as exit codes, pipes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

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
