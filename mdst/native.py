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


def can_pipeline_reads() -> bool:
    """Whether submissions can be indexed and their readbacks mapped and awaited without wgpu-py's poller."""
    return _handle is not None and all(hasattr(_handle[1], f) for f in (
        "wgpuQueueSubmitForIndex", "wgpuDevicePoll", "wgpuBufferMapAsync", "wgpuBufferGetConstMappedRange"))


def submit(queue: Any, command_buffers: list[Any]) -> int:
    """Submit; returns the submission's index (needs can_pipeline_reads())."""
    ffi, lib = _handle
    ids = ffi.new("WGPUCommandBuffer[]", [cb._internal for cb in command_buffers])
    return int(lib.wgpuQueueSubmitForIndex(queue._internal, len(command_buffers), ids))


_pending: set = set()   # Readbacks whose map callback has not run yet: wgpu may call it after an abandoned wait
_on_mapped: Any = None  # the one C callback every Readback's mapping reports to (made on first use)


def _mapped(status: int, message: Any, userdata1: Any, userdata2: Any) -> None:
    readback = _handle[0].from_handle(userdata1)
    readback.status = int(status)
    _pending.discard(readback)


class Readback:
    """The first `nbytes` of a MAP_READ buffer, mapped through wgpu-native directly.

    wgpu-py's mapping wakes its poll thread, which waits for every submission so far while holding
    the device's fence, so a submission made meanwhile blocks until all of them are done: a decode
    step queued behind the one being read would only be accepted once that one had finished. Here
    the wait is for one submission index only, on the caller's thread, and nothing else polls.
    The buffer must not be mapped through wgpu-py as well.
    """

    def __init__(self, buffer: Any, nbytes: int):
        global _on_mapped
        ffi, lib = _handle
        if _on_mapped is None:   # one closure for all: a decode step should not allocate one
            _on_mapped = ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)", _mapped)
        self.buffer, self.nbytes, self.status = buffer, nbytes, None
        self.size = max(4, -(-nbytes // 4) * 4)
        self._self = ffi.new_handle(self)   # userdata1: alive while the Readback is (kept in _pending)
        _pending.add(self)
        info = ffi.new("WGPUBufferMapCallbackInfo *")
        info.mode = lib.WGPUCallbackMode_AllowProcessEvents
        info.callback = _on_mapped
        info.userdata1 = self._self
        lib.wgpuBufferMapAsync(buffer._internal, lib.WGPUMapMode_Read, 0, self.size, info[0])

    def wait(self, device: Any, index: int) -> bytes:
        """Block until submission `index` (which wrote the buffer) is done; the bytes, buffer unmapped."""
        ffi, lib = _handle
        lib.wgpuDevicePoll(device._internal, True, ffi.new("WGPUSubmissionIndex *", index))
        if self.status != lib.WGPUMapAsyncStatus_Success:
            raise RuntimeError(f"mapping a readback buffer failed (status {self.status})")
        ptr = lib.wgpuBufferGetConstMappedRange(self.buffer._internal, 0, self.size)
        data = bytes(ffi.buffer(ptr, self.nbytes))
        lib.wgpuBufferUnmap(self.buffer._internal)
        return data
