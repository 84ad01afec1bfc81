"""wgpu-native's C entry points that wgpu-py's Python API does not reach, through wgpu-py's cffi handle.

Each helper falls back to the public API (or a neutral answer) where this wgpu build does not expose
the entry point, so mdst runs on any wgpu-py; the native path only makes it faster or more exact.
"""

from __future__ import annotations

from typing import Any


def _load() -> tuple[Any, Any] | None:
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
        return ffi, lib
    except Exception:
        return None


_handle = _load()


def dispatch_calls() -> tuple[Any, Any] | None:
    """The C library and NULL, if it has the compute-pass calls (plan encoding calls them directly)."""
    if _handle is None or not hasattr(_handle[1], "wgpuComputePassEncoderDispatchWorkgroups"):
        return None
    return _handle[1], _handle[0].NULL


def timestamp_period(queue: Any) -> float:
    """Nanoseconds per timestamp tick (wgpu-native's queue extension; 1.0 where it cannot be read)."""
    try:
        return float(_handle[1].wgpuQueueGetTimestampPeriod(queue._internal)) or 1.0
    except Exception:
        return 1.0
