"""glibc's allocator while training on a CPU: freed memory kept for the next step instead of returned at once.

Above its mmap threshold glibc hands each freed block back to the kernel, so every training step faults its
activations in again, page by page (on this project's 2-core EPYC a MiniLM step at batch 32 faulted 2 million pages
and spent a third of its CPU time in the kernel). While training, blocks up to 1 GiB come from the heap and free
heap is kept; afterwards the thresholds glibc settles on by itself are set and the kept memory is released.
Elsewhere (another C library, another system) this does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import platform
import threading

__all__ = ["freed_memory_kept"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP = 1 << 30
# afterwards: where glibc's own adjustment of the two thresholds ends in a process that has freed large blocks
# (the mmap threshold rises to at most 32 MiB on 64-bit systems, the trim threshold to twice that)
SETTLED_MMAP, SETTLED_TRIM = 32 << 20, 64 << 20


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_lock = threading.Lock()
_depth = 0   # contexts open (nested, or in other threads): the settings return when the last one closes


@contextlib.contextmanager
def freed_memory_kept():
    """Within the context, glibc keeps freed memory for reuse; on leaving the last such context, it is released."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_THRESHOLD, KEEP)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP)
                libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM)
                libc.malloc_trim(0)
