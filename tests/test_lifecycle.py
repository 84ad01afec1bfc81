"""Lifecycle: close() gives back the device, its threads and the host memory; a closed model refuses work.

Linux only (threads and RSS are read from /proc/self).
"""

from __future__ import annotations

import os
import threading
import weakref

import pytest

import mdst
from metrics import report

CYCLES = 10
RSS_SLACK = 10 << 20   # bytes the last cycle may end above the first (allocator fragmentation)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def cycle(path: str, device: str) -> list[str]:
    """Load, generate two tokens, close; returns the Python threads alive while the model was open."""
    with mdst.load(path, device=device, context_length=64) as m:
        assert m.generate("Hi", max_tokens=2)
        return thread_names()


def test_gpu_cycles_give_back_threads_and_memory(smollm2_path, gpu):
    from wgpu.backends.wgpu_native._poller import PollThread

    # The first load in a process starts the driver's own threads (llvmpipe, the shader disk cache) and
    # fills caches that stay, and the allocators' arenas settle over the next (benchmarks/RESULTS.md); in
    # the full suite other tests have loaded models already.
    for _ in range(2):
        cycle(smollm2_path, "gpu")
    threads, names = native_threads(), thread_names()
    polls = sum(isinstance(t, PollThread) for t in threading.enumerate())   # the gpu fixture's device has one
    sizes = []
    for _ in range(CYCLES):
        open_names = cycle(smollm2_path, "gpu")
        assert "mdst-gpu-wait" in open_names   # the model did have a thread to end
        assert not [t.name for t in threading.enumerate() if t.name.startswith("mdst")]
        assert sum(isinstance(t, PollThread) for t in threading.enumerate()) == polls   # wgpu's, per device
        assert thread_names() == names and native_threads() == threads
        sizes.append(rss())
    report("RSS after each of 10 load/generate/close cycles (SmolLM2, lavapipe)", rss_mib=[s >> 20 for s in sizes])
    assert sizes[-1] - sizes[0] <= RSS_SLACK


def test_cpu_close_leaves_no_threads(smollm2_path):
    import numpy  # noqa: F401  (its BLAS threads start at import: not the model's)

    threads, names = native_threads(), thread_names()
    cycle(smollm2_path, "cpu")
    assert thread_names() == names and native_threads() == threads


def test_close_releases_the_device_and_a_closed_model_raises_mdst_error(smollm2_path, gpu):
    m = mdst.load(smollm2_path, device="gpu", context_length=64)
    session = m.session()
    session.feed([1, 2])
    engine, device = weakref.ref(m.engine), weakref.ref(m.engine.gpu.device)
    m.close()
    assert engine() is None and device() is None   # released, not only destroyed
    m.close()   # twice is fine
    for use in (lambda: m.generate("Hi", max_tokens=2), lambda: m.logits([1, 2]), m.session,
                lambda: m.tokenize("Hi"), m.memory_report, lambda: session.feed([3])):
        with pytest.raises(mdst.MdstError, match="closed"):
            use()
