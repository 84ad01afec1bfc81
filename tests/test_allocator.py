"""The allocators: the counting one counts what the real one allocates, and both refuse the same buffers."""

from __future__ import annotations

import pytest

import mdst
from mdst.gpu import allocator as allocator_mod
from mdst.gpu.allocator import CountingAllocator, GpuAllocator
from mdst.gpu.device import DeviceProfile

REQUESTS = [(1024, "w.a", "weights", "storage"), (256, "params", "params", "uniform"),
            (4096, "staging", "staging", "map_read"), (512, "w.b", "weights", "storage")]


def profile(max_buffer: int) -> DeviceProfile:
    return DeviceProfile("test", "", "", "CPU", "", frozenset(), {"max-buffer-size": max_buffer}, 1 << 20)


def run(alloc) -> list[tuple[dict[str, int], int]]:
    """Make the REQUESTS, free the first, forget the third; the counts after each step."""
    bufs, seen = [], []
    for size, label, kind, usage in REQUESTS:
        bufs.append(alloc.create(size, label, kind, usage))
        seen.append((dict(alloc.bytes_by_kind), alloc.peak_bytes))
    alloc.free(bufs[0])
    alloc.free(bufs[0])   # once only
    seen.append((dict(alloc.bytes_by_kind), alloc.peak_bytes))
    assert alloc.forget(bufs[2]) and not alloc.forget(bufs[2])
    seen.append((dict(alloc.bytes_by_kind), alloc.peak_bytes))
    alloc.free_all()
    assert not alloc.live and alloc.total == 0
    return seen


def test_counting_allocator_counts_live_bytes_by_kind_and_the_peak():
    seen = run(CountingAllocator(profile(1 << 20)))
    assert seen[3] == ({"weights": 1536, "params": 256, "staging": 4096}, 5888)
    assert seen[4] == ({"weights": 512, "params": 256, "staging": 4096}, 5888)
    assert seen[5] == ({"weights": 512, "params": 256, "staging": 0}, 5888)


def test_a_buffer_over_max_buffer_size_is_refused_and_not_counted():
    alloc = CountingAllocator(profile(1000))
    with pytest.raises(mdst.OutOfMemoryError, match="max-buffer-size of 1000"):
        alloc.create(1024, "w.a", "weights")
    assert alloc.total == 0 and not alloc.live


def test_real_allocator_counts_what_the_counting_one_predicts(gpu):
    assert run(GpuAllocator(gpu)) == run(CountingAllocator(gpu.profile))


def test_a_failed_real_allocation_is_out_of_memory_and_not_counted(gpu, monkeypatch):
    def fault(size: int, label: str) -> None:
        raise MemoryError("injected")

    monkeypatch.setattr(allocator_mod, "allocation_fault", fault)
    alloc = GpuAllocator(gpu)
    with pytest.raises(mdst.OutOfMemoryError, match="injected"):
        alloc.create(1024, "w.a", "weights")
    assert alloc.total == 0 and not alloc.live
