"""crossrec_core's compiled kernels: numba, compiled on first use in a process and cached on disk.

Every kernel here is a plain Python function over numpy arrays (readable, and what the tests run when they
read the code); ``compiled_kernel`` returns its machine-code twin. Only large inputs call it: numba's import and a
first compile cost ~1-2 s, which small logs would never win back.
"""

from __future__ import annotations

from typing import Callable

_COMPILED: dict[str, Callable] = {}


def compiled_kernel(fn: Callable) -> Callable:
    """Return ``fn`` compiled by numba (nopython, GIL released), compiling it at most once per process.

    numba's on-disk cache (``cache=True``) keeps the machine code between processes: in $NUMBA_CACHE_DIR when
    set, else beside the source file.
    """
    key = f"{fn.__module__}.{fn.__qualname__}"
    if key not in _COMPILED:
        import numba  # slow: ~1 s to import; only large inputs take the compiled path

        _COMPILED[key] = numba.njit(cache=True, nogil=True)(fn)
    return _COMPILED[key]
