"""Faults: allocation failure at load, a lost device, a step past its deadline, interrupts, threads.

Allocation failures are injected through mdst.gpu.allocator.allocation_fault (a software adapter cannot be made
to run out of memory on demand), and so is a weight copy that never finishes; the rest are real.
"""

from __future__ import annotations

import threading

import pytest

import mdst
from mdst.gpu import allocator as allocator_mod
from mdst.runtime import engine as engine_mod

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def expected(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        return m.generate(PROMPT, max_tokens=8)


def inject(monkeypatch, prefix: str) -> list[str]:
    """Make every real GPU allocation whose label starts with `prefix` fail; returns the labels made before."""
    made: list[str] = []

    def fault(size: int, label: str) -> None:
        if label.startswith(prefix):
            raise MemoryError("injected: out of device memory")
        made.append(label)

    monkeypatch.setattr(allocator_mod, "allocation_fault", fault)
    return made


@pytest.fixture
def engines(monkeypatch):
    """Every GpuEngine set up during the test (the last is the real one)."""
    seen = []
    real_setup = engine_mod.GpuEngine._setup

    def setup(self, *a, **kw):
        seen.append(self)
        return real_setup(self, *a, **kw)

    monkeypatch.setattr(engine_mod.GpuEngine, "_setup", setup)
    return seen


@pytest.mark.parametrize("fail_at", ["w.token_embd", "w.blk.3.", "v.blk.7", "step", "staging"])
def test_allocation_failure_at_load_frees_everything(smollm2_path, gpu, monkeypatch, engines, fail_at):
    made = inject(monkeypatch, fail_at)
    with pytest.raises(mdst.OutOfMemoryError, match="injected"):
        mdst.load(smollm2_path, device="gpu", context_length=128)
    real = engines[-1]
    assert (made or fail_at == "w.token_embd") and not real._live and sum(real.bytes_by_kind.values()) == 0


@pytest.mark.parametrize("fail_at", ["act.", "kv.", "params", "argmax"])
def test_allocation_failure_at_first_use_leaves_the_model_usable(smollm2_path, gpu, monkeypatch, expected, fail_at):
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        inject(monkeypatch, fail_at)
        with pytest.raises(mdst.OutOfMemoryError, match="injected"):
            m.generate(PROMPT, max_tokens=8)
        monkeypatch.setattr(allocator_mod, "allocation_fault", None)
        assert m.generate(PROMPT, max_tokens=8) == expected


def test_a_fresh_load_works_after_a_failed_one(smollm2_path, gpu, monkeypatch, expected):
    inject(monkeypatch, "")
    with pytest.raises(mdst.OutOfMemoryError):
        mdst.load(smollm2_path, device="gpu", context_length=128)
    monkeypatch.setattr(allocator_mod, "allocation_fault", None)
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        assert m.generate(PROMPT, max_tokens=8) == expected


def test_lost_device_raises_device_error_and_a_fresh_load_works(smollm2_path, expected):
    m = mdst.load(smollm2_path, device="gpu", context_length=128)
    m.generate(PROMPT, max_tokens=2)
    m.engine.gpu.device.destroy()
    with pytest.raises(mdst.DeviceError, match="load the model again"):
        m.generate(PROMPT, max_tokens=4)
    with pytest.raises(mdst.DeviceError):   # and keeps saying so, without touching the device
        m.logits([1, 2, 3])
    m.close()
    with mdst.load(smollm2_path, device="gpu", context_length=128) as fresh:
        assert fresh.generate(PROMPT, max_tokens=8) == expected


def test_a_step_past_its_deadline_raises_and_the_model_recovers(smollm2_path, expected):
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        m.generate(PROMPT, max_tokens=2)
        m.engine.step_timeout = 1e-3   # a 100-token step takes far longer on a software adapter
        with pytest.raises(mdst.DeviceError, match="did not finish within"):
            m.logits(list(range(100, 200)))
        m.engine.step_timeout = engine_mod.STEP_TIMEOUT
        assert m.generate(PROMPT, max_tokens=8) == expected


def test_a_weight_copy_past_its_deadline_raises_and_the_model_recovers(smollm2_path, expected, monkeypatch):
    """A paged step whose weight copy never finishes raises DeviceError; the next step copies through
    fresh staging buffers. Injected: the staging buffer's mapping is started and never completes, as
    on a hung device."""
    from mdst.gpu import native

    with mdst.load(smollm2_path, device="gpu", context_length=128) as full:
        limit = full.predicted.total - 40 * 2**20
    with mdst.load(smollm2_path, device="gpu", context_length=128, gpu_memory_limit=limit, weight_paging=True) as m:
        real_fill = native.fill

        def stuck(device, buffer, nbytes, *args):
            native.Mapping(buffer, nbytes, write=True)
            raise TimeoutError

        monkeypatch.setattr(native, "fill", stuck)
        with pytest.raises(mdst.DeviceError, match="did not finish within"):
            m.generate(PROMPT, max_tokens=8)
        monkeypatch.setattr(native, "fill", real_fill)
        assert m.generate(PROMPT, max_tokens=8) == expected


def test_keyboard_interrupt_mid_step_keeps_the_model_consistent(smollm2_path, expected, monkeypatch):
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        real_read = m.engine._read
        calls = {"n": 0}

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real_read(*args, **kwargs)

        monkeypatch.setattr(m.engine, "_read", interrupted)
        with pytest.raises(KeyboardInterrupt):
            m.generate(PROMPT, max_tokens=8)
        monkeypatch.setattr(m.engine, "_read", real_read)
        assert m.generate(PROMPT, max_tokens=8) == expected
        with m.session() as s:   # sessions keep only tokens whose step completed
            s.feed(m.tokenize(PROMPT))
            assert s.n_past == len(m.tokenize(PROMPT))


def test_two_threads_on_one_model_serialize(smollm2_path, gpu):
    prompts = ["The capital of France is", "One, two, three,", "Water boils at", "The largest planet is"]
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        want = [m.generate(p, max_tokens=6) for p in prompts]
        got: dict[int, str] = {}
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                got[i] = m.generate(prompts[i], max_tokens=6)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors
        assert [got[i] for i in range(len(prompts))] == want
