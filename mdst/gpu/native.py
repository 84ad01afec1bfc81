"""wgpu-native's C entry points that wgpu-py's Python API does not reach, through wgpu-py's cffi handle.

Each helper falls back to the public API (or a neutral answer) where this wgpu build does not expose
the entry point, so mdst runs on any wgpu-py; the native path only makes it faster or more exact.
"""

from __future__ import annotations

import time
from typing import Any, Callable


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


def shader_module(device: Any, label: str, code: str, checks: bool = True) -> Any:
    """A WGSL module; with `checks` False, compiled trusted (wgpu-native's wgpuDeviceCreateShaderModuleTrusted):
    without naga's runtime checks, the index clamps and the loop counters it adds to every access and loop."""
    try:
        from wgpu.backends.wgpu_native._api import GPUShaderModule, libf, new_struct_p, to_c_string_view
    except ImportError:
        checks = True
    if (checks or _handle is None or not hasattr(_handle[1], "wgpuDeviceCreateShaderModuleTrusted")
            or not hasattr(device, "_internal")):   # not a wgpu-native device (the fit prediction's stand-in)
        return device.create_shader_module(label=label, code=code)

    ffi, lib = _handle
    src = new_struct_p("WGPUShaderSourceWGSL *", code=to_c_string_view(code))
    src[0].chain.next = ffi.NULL
    src[0].chain.sType = lib.WGPUSType_ShaderSourceWGSL
    desc = new_struct_p("WGPUShaderModuleDescriptor *", nextInChain=ffi.cast("WGPUChainedStruct *", src),
                        label=to_c_string_view(label))
    handle = libf.wgpuDeviceCreateShaderModuleTrusted(device._internal, desc, lib.WGPUShaderRuntimeChecks_None)
    if handle == ffi.NULL:
        raise RuntimeError(f"shader module {label}: creation failed")
    return GPUShaderModule(label, handle, device)


def can_map_directly() -> bool:
    """Whether submissions can be indexed and buffers mapped and awaited without wgpu-py's poller."""
    return _handle is not None and all(hasattr(_handle[1], f) for f in (
        "wgpuQueueSubmitForIndex", "wgpuDevicePoll", "wgpuBufferMapAsync", "wgpuBufferGetConstMappedRange",
        "wgpuBufferGetMappedRange"))


def submit(queue: Any, command_buffers: list[Any]) -> int:
    """Submit; returns the submission's index (needs can_map_directly())."""
    ffi, lib = _handle
    ids = ffi.new("WGPUCommandBuffer[]", [cb._internal for cb in command_buffers])
    return int(lib.wgpuQueueSubmitForIndex(queue._internal, len(command_buffers), ids))


_pending: set = set()   # Mappings whose callback has not run yet: wgpu may call it after an abandoned wait
_on_mapped: Any = None  # the one C callback every Mapping reports to (made on first use)


def _mapped(status: int, message: Any, userdata1: Any, userdata2: Any) -> None:
    mapping = _handle[0].from_handle(userdata1)
    mapping.status = int(status)
    _pending.discard(mapping)


class Mapping:
    """The first `nbytes` of a MAP_READ (or MAP_WRITE) buffer, being mapped through wgpu-native directly.

    wgpu-py's mapping wakes its poll thread, which waits for every submission so far while holding
    the device's fence, so a submission made meanwhile blocks until all of them are done: a decode
    step queued behind the one being read would only be accepted once that one had finished, and an
    upload staging buffer could not be filled while the other one's copy runs. Here the wait is for
    this buffer alone (one submission index, or its own mapping), on the caller's thread, and
    nothing else polls. The buffer must not be mapped through wgpu-py as well.
    """

    def __init__(self, buffer: Any, nbytes: int, write: bool = False):
        global _on_mapped
        ffi, lib = _handle
        if _on_mapped is None:   # one closure for all: a decode step should not allocate one
            _on_mapped = ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)", _mapped)
        self.buffer, self.nbytes, self.status = buffer, nbytes, None
        self.size = max(4, -(-nbytes // 4) * 4)
        self._self = ffi.new_handle(self)   # userdata1: alive while the Mapping is (kept in _pending)
        _pending.add(self)
        info = ffi.new("WGPUBufferMapCallbackInfo *")
        info.mode = lib.WGPUCallbackMode_AllowProcessEvents
        info.callback = _on_mapped
        info.userdata1 = self._self
        mode = lib.WGPUMapMode_Write if write else lib.WGPUMapMode_Read
        lib.wgpuBufferMapAsync(buffer._internal, mode, 0, self.size, info[0])

    def _settle(self, device: Any, index: int | None, timeout: float | None) -> None:
        """Until the mapping is done: one blocking poll for submission `index` (the buffer's last
        user), or else polls without blocking, TimeoutError after `timeout` seconds (a blocking poll
        cannot be given a deadline)."""
        ffi, lib = _handle
        if index is not None:
            lib.wgpuDevicePoll(device._internal, True, ffi.new("WGPUSubmissionIndex *", index))
        else:
            end = time.monotonic() + timeout
            while self.status is None:
                lib.wgpuDevicePoll(device._internal, False, ffi.NULL)
                if self.status is None:
                    if time.monotonic() > end:
                        raise TimeoutError
                    time.sleep(20e-6)
        if self.status != lib.WGPUMapAsyncStatus_Success:
            raise RuntimeError(f"mapping a staging buffer failed (status {self.status})")


class Readback(Mapping):
    """A MAP_READ buffer's first `nbytes`, read once the submission that writes them is done."""

    def wait(self, device: Any, index: int) -> bytes:
        """Block until submission `index` (which wrote the buffer) is done; the bytes, buffer unmapped."""
        ffi, lib = _handle
        self._settle(device, index, None)
        ptr = lib.wgpuBufferGetConstMappedRange(self.buffer._internal, 0, self.size)
        data = bytes(ffi.buffer(ptr, self.nbytes))
        lib.wgpuBufferUnmap(self.buffer._internal)
        return data


def fill(device: Any, buffer: Any, nbytes: int, put: Callable[[memoryview], None], timeout: float) -> None:
    """Let `put` write the first `nbytes` (whole words) of MAP_WRITE `buffer` once the GPU is done with
    it (TimeoutError after `timeout` seconds; the buffer then stays pending)."""
    ffi, lib = _handle
    Mapping(buffer, nbytes, write=True)._settle(device, None, timeout)
    try:
        put(memoryview(ffi.buffer(lib.wgpuBufferGetMappedRange(buffer._internal, 0, nbytes), nbytes)))
    finally:   # a failed put (a truncated file) leaves the buffer usable
        lib.wgpuBufferUnmap(buffer._internal)
