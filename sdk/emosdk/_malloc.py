"""Keep glibc from returning the front ends' working memory to the OS after every window.

The audio front ends and the face preprocessing allocate numpy temporaries of 0.1-2 MB per
window (frames x FFT bins in float64 and complex128). glibc's malloc serves blocks above
``M_MMAP_THRESHOLD`` (128 KB at start) with a fresh ``mmap`` and gives them back on free, and
trims the heap top above ``M_TRIM_THRESHOLD`` (128 KB): either way every window page-faults
its memory in again. glibc raises both thresholds by itself once a large mmapped block is freed
(creating some ONNX Runtime sessions does it, others do not), so the same front end took
1.4 ms or 4-6 ms per 3 s window depending on which graphs the process happened to load first
(Whisper's front end: 1.9 or 4.0 ms), measured on one core. Setting both thresholds once makes
the fast case the only case: blocks up to 16 MB come from the heap and up to 32 MB of free heap
is kept.

Process-wide and glibc only (musl and macOS have no ``mallopt`` of these parameters: nothing is
done). Not done when the process already chose (the ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` environment variables are set) or opted out with
``EMOSDK_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger("emosdk")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 16 << 20
TRIM_THRESHOLD_BYTES = 32 << 20

_done: bool | None = None


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when they were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("EMOSDK_MALLOC_TUNING", "1") == "0":
        logger.debug("malloc tuning: off (EMOSDK_MALLOC_TUNING=0)")
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        logger.debug("malloc tuning: the environment sets glibc's thresholds; left as they are")
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt ignores these parameters
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    logger.debug("malloc tuning: mmap threshold 16 MB, trim threshold 32 MB: %s", ok)
    _done = ok
    return ok
