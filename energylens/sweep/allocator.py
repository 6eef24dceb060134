"""Freed memory kept for the next NumPy temporaries while a sweep runs (glibc's malloc settings).

A sweep evaluates its grid through NumPy temporaries of 0.1 to a few MB each, freed and allocated again
at every step. Under glibc's defaults such blocks come from fresh mappings (``mmap`` above a threshold that
follows the sizes freed so far) or from a heap whose free top is handed back to the system past a small
trim threshold, so every new temporary faults its pages in again (the kernel zeroes each one). Measured on
the grids of ``benchmarks/bench_speed.py`` (one core, CPU time, medians of five sweeps): layout-heavy 5.2-5.4
-> 7.4-8.2 M configurations/s, length-heavy 2.0-2.1 -> 3.5-3.7 M, the same numbers; the 1.7 M slice of the
95 M grid (``stream_chunk_*``) streams as fast, its peak RSS 663 -> 691 MB with 250 k chunks, and the 95 M
stream itself 60 -> 56 s of CPU, 889 -> 906 MB.

:func:`keep_freed_memory` sets, once per process, the ``mmap`` threshold to ``MMAP_THRESHOLD_BYTES`` (blocks
below it come from the heap) and the trim threshold to ``TRIM_THRESHOLD_BYTES`` (up to that much freed memory
at the top of the heap stays mapped for the next temporaries): a process-wide trade of at most 64 MB of
memory kept for speed. Nothing is changed off glibc, where the user set any ``MALLOC_*`` variable (their
settings stand), or with ``ENERGYLENS_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import os

MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest (64-bit): sweep temporaries stay below it
TRIM_THRESHOLD_BYTES = 64 << 20  # freed memory kept (measured: 64, 128 and 256 MB sweep alike)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
OPT_OUT = "ENERGYLENS_KEEP_FREED_MEMORY"

_state: dict[str, bool] = {}


def keep_freed_memory(environ: dict | None = None) -> bool:
    """Apply the settings above once per process; True where they are in force (set now or before)."""
    if "applied" not in _state:
        _state["applied"] = _apply(os.environ if environ is None else environ)
    return _state["applied"]


def _apply(environ) -> bool:
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(k.startswith("MALLOC_") for k in environ) or "GLIBC_TUNABLES" in environ:
        return False  # the user tuned the allocator
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):  # not glibc, or no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # the mmap threshold first: setting either fixes both (glibc stops adapting them to the sizes freed)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES))
