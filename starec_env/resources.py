"""This process's resident memory: its peak, resetting the peak, and handing
freed heap back to the operating system.

Peaks are what a user sizes a machine by, so runs and benchmarks report
them; :func:`reset_peak_rss` lets a long run measure each of its stages on
its own (Linux), and :func:`trim_heap` keeps memory freed by one stage (a
finished trainer's weights and optimizer state) from staying resident in
glibc's heap under the next one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from pathlib import Path
from typing import Callable

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process since it started, or since the
    last successful :func:`reset_peak_rss`, in MiB; None where unknown."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):  # "VmHWM:   123456 kB", the high-water mark reset_peak_rss resets
                return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Restart the peak at the current resident size (Linux: ``5`` to
    ``/proc/self/clear_refs``). False where the kernel does not allow it:
    peaks then run from the start of the process."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def trim_heap() -> bool:
    """Return the free pages of glibc's heap to the OS (``malloc_trim(0)``).
    Without it, memory freed by a finished stage stays in this process's
    resident size. False where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, looked up once (training calls
    :func:`trim_heap` after every step); None where there is none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
