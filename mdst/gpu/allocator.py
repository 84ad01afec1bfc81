"""GPU allocation at the bottom of the engine: every buffer is made, counted and freed here.

`GpuAllocator` makes wgpu buffers; `CountingAllocator` makes stand-ins that hold nothing, on a
device stand-in that compiles and copies nothing, so the fit prediction runs the engine's own
setup and counts the same bytes without allocating. Both count live bytes by kind and the peak,
and refuse a buffer over the adapter's max-buffer-size; code above never asks which one it has.
"""

from __future__ import annotations

from typing import Any, Callable

from . import native
from .device import GPU, DeviceProfile
from ..errors import DeviceError, OutOfMemoryError

# Fault injection (tests): called as allocation_fault(size, label) before every real GPU buffer is made;
# raising there acts as the allocation failing (OutOfMemoryError follows). Real allocation failures cannot
# be made on demand on a software adapter.
allocation_fault: Callable[[int, str], None] | None = None

USAGES = ("storage", "uniform", "map_read")


class Allocator:
    """Makes and frees GPU buffers and counts the live ones by kind; `gpu` is the device (or its stand-in)
    that pipelines, encoders and the queue come from."""

    gpu: Any

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.bytes_by_kind: dict[str, int] = {}   # live bytes per kind of buffer
        self.peak_bytes = 0
        self.live: dict[int, tuple[Any, str, int]] = {}   # id -> (buffer, kind, size)

    @property
    def total(self) -> int:
        """Live bytes of every kind."""
        return sum(self.bytes_by_kind.values())

    def create(self, size: int, label: str, kind: str, usage: str = "storage") -> Any:
        """A buffer of `size` bytes for `usage` ("storage", "uniform" or "map_read"), counted under `kind`."""
        limit = self.profile.limits.get("max-buffer-size")
        if limit and size > limit:
            raise OutOfMemoryError(f"a {size}-byte GPU buffer ({label}) exceeds the adapter's max-buffer-size of "
                                   f"{limit}; use a shorter context_length")
        buf = self._make(size, label, usage)
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + size
        self.peak_bytes = max(self.peak_bytes, self.total)
        self.live[id(buf)] = (buf, kind, size)
        return buf

    def forget(self, buf: Any) -> bool:
        """Stop counting a buffer made by create, without destroying it (another thread may still use it);
        False if it is not counted."""
        entry = self.live.pop(id(buf), None)
        if entry is None:
            return False
        self.bytes_by_kind[entry[1]] -= entry[2]
        return True

    def free(self, buf: Any) -> None:
        """Destroy a buffer made by create and stop counting it (once: later calls do nothing)."""
        if self.forget(buf):
            try:
                buf.destroy()
            except Exception:  # a lost device has destroyed everything already
                pass

    def free_all(self) -> None:
        """Free every buffer still counted."""
        for buf, _, _ in list(self.live.values()):
            self.free(buf)

    def _make(self, size: int, label: str, usage: str) -> Any:
        raise NotImplementedError

    def create_upload(self, size: int, label: str) -> Any:
        """A mappable buffer to copy host bytes to the GPU through (not counted: it lives only while loading)."""
        raise NotImplementedError

    def fill(self, buffer: Any, nbytes: int, put: Callable[[memoryview], None], timeout: float) -> None:
        """Let `put` write the first `nbytes` (whole words) of an upload buffer once the GPU is done with it
        (TimeoutError after `timeout` seconds)."""
        raise NotImplementedError

    def wait_idle(self) -> None:
        """Block until everything submitted has finished."""
        raise NotImplementedError


class GpuAllocator(Allocator):
    """wgpu buffers on a real device."""

    def __init__(self, gpu: GPU):
        super().__init__(gpu.profile)
        self.gpu = gpu

    def _make(self, size: int, label: str, usage: str) -> Any:
        import wgpu

        u = wgpu.BufferUsage
        flags = {"storage": u.STORAGE | u.COPY_DST | u.COPY_SRC, "uniform": u.UNIFORM | u.COPY_DST,
                 "map_read": u.MAP_READ | u.COPY_DST}[usage]
        try:
            if allocation_fault is not None:
                allocation_fault(size, label)
            return self.gpu.device.create_buffer(size=size, usage=flags, label=label)
        except MemoryError as e:   # wgpu's GPUOutOfMemoryError is one
            raise OutOfMemoryError(f"creating a {size}-byte GPU buffer ({label}) failed: {e}; "
                                   f"{self.total} bytes were in use") from None
        except wgpu.GPUError as e:   # a buffer within the adapter's limits fails validation on a lost device only
            raise DeviceError(f"the GPU device was lost while creating {label} ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); load the model again") from None

    def create_upload(self, size: int, label: str) -> Any:
        import wgpu

        return self.gpu.device.create_buffer(size=size, usage=wgpu.BufferUsage.MAP_WRITE | wgpu.BufferUsage.COPY_SRC,
                                             label=label)

    def fill(self, buffer: Any, nbytes: int, put: Callable[[memoryview], None], timeout: float) -> None:
        # Through wgpu-native where it can: wgpu-py's mapping waits for every submission, the other
        # upload buffer's copy included, and cannot hand out the mapped memory to read the file into.
        if native.can_map_directly():
            native.fill(self.gpu.device, buffer, nbytes, put, timeout)
            return
        import wgpu

        data = bytearray(nbytes)
        put(memoryview(data))
        buffer.map_sync(wgpu.MapMode.WRITE, 0, buffer.size)
        buffer.write_mapped(data, 0)
        buffer.unmap()

    def wait_idle(self) -> None:
        self.gpu.wait_idle()


class NullBuffer:
    """Stands in for a GPU buffer: has a size, holds nothing."""

    def __init__(self, size: int, label: str):
        self.size, self.label = size, label

    def destroy(self) -> None:
        pass


class _NullEncoder:
    def copy_buffer_to_buffer(self, *args: Any) -> None:
        pass

    def finish(self) -> None:
        return None


class _NullQueue:
    def write_buffer(self, *args: Any, **kwargs: Any) -> None:
        pass

    def submit(self, *args: Any) -> None:
        pass


class _NullPipeline:
    def get_bind_group_layout(self, index: int) -> None:
        return None


class NullDevice:
    """Stands in for a wgpu device: compiles, copies and allocates nothing."""

    def __init__(self) -> None:
        self.queue = _NullQueue()

    def create_command_encoder(self, **kwargs: Any) -> _NullEncoder:
        return _NullEncoder()

    def create_shader_module(self, **kwargs: Any) -> None:
        return None

    def create_compute_pipeline(self, **kwargs: Any) -> _NullPipeline:
        return _NullPipeline()


class CountingAllocator(Allocator):
    """Counts what a device with `profile` would be asked for, and allocates nothing (the fit prediction)."""

    def __init__(self, profile: DeviceProfile):
        super().__init__(profile)
        self.gpu = GPU(NullDevice(), profile)

    def _make(self, size: int, label: str, usage: str) -> NullBuffer:
        return NullBuffer(size, label)

    def create_upload(self, size: int, label: str) -> NullBuffer:
        return NullBuffer(size, label)

    def fill(self, buffer: Any, nbytes: int, put: Callable[[memoryview], None], timeout: float) -> None:
        pass

    def wait_idle(self) -> None:
        pass
