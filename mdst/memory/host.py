"""Host memory: giving the C heap's free pages back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

_trim: Any = None   # glibc's malloc_trim, looked up on first use (False: there is none)


def trim() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).

    A closed device's driver (lavapipe and LLVM) frees tens of MB scattered through the heap, and
    glibc keeps free pages that are not at the heap's top, so without this they stay resident.
    """
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            except (OSError, AttributeError):   # not glibc (musl has no malloc_trim)
                pass
    if _trim:
        _trim(0)
