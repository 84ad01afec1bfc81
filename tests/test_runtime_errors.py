"""Runtime errors: a bug in mdst surfaces as itself and leaves the model usable; only wgpu's own errors from
handing work to the device mark it lost (DeviceError). Caches give back everything the engine kept for them.

Runs a synthetic tiny model on the GPU adapter (lavapipe in CI).
"""

from __future__ import annotations

import pytest

import mdst
from mdst.runtime import engine as engine_mod
from mdst.compile import plan as plan_mod
from mdst.dev import synth

PROMPT = list(range(300, 316))   # byte, merge and special ids: every tiny vocab has them


def greedy(m: mdst.Model, n: int = 6) -> list[int]:
    """n greedy tokens after PROMPT, decoded a step ahead (GpuEngine.decode's chained path)."""
    with m.session() as s:
        first = int(s.prefill(PROMPT, greedy=True))
        return [first] + list(s.decode(first, n - 1, lambda: "argmax", ahead=True))


@pytest.fixture(scope="module")
def path(tmp_path_factory, gpu) -> str:
    return str(synth.write(tmp_path_factory.mktemp("rt") / "q.gguf", "qwen3-tiny", types="Q8_0"))


@pytest.fixture(scope="module")
def expected(path) -> list[int]:
    with mdst.load(path, device="gpu", context_length=64) as m:
        return greedy(m)


def fail_once(monkeypatch, module, name: str) -> list[int]:
    """Make module.name raise KeyError on its first call (a bug), then behave; returns [calls]."""
    real, calls = getattr(module, name), [0]

    def buggy(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("injected bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, buggy)
    return calls


def test_a_bug_while_compiling_a_plan_surfaces_as_itself(path, expected, monkeypatch):
    with mdst.load(path, device="gpu", context_length=64) as m:
        calls = fail_once(monkeypatch, plan_mod, "pack_params")
        with pytest.raises(KeyError, match="injected bug"):
            greedy(m)
        assert calls[0] == 1 and m.engine.lost is None
        assert greedy(m) == expected


@pytest.mark.parametrize("prefill", [True, False], ids=["step", "decode"])
def test_a_bug_while_submitting_a_step_surfaces_as_itself(path, expected, monkeypatch, prefill):
    with mdst.load(path, device="gpu", context_length=64) as m:
        m.engine.compile_all()   # the bug is met inside the device guard, not while compiling
        with m.session() as s:
            first = int(s.prefill(PROMPT, greedy=True))
            fail_once(monkeypatch, engine_mod, "write_step")
            with pytest.raises(KeyError, match="injected bug"):
                if prefill:
                    s.prefill([first], greedy=True)
                else:
                    list(s.decode(first, 3, lambda: "argmax", ahead=True))
        assert m.engine.lost is None
        assert greedy(m) == expected


def test_a_lost_device_raises_device_error_and_marks_the_engine_unusable(path):
    m = mdst.load(path, device="gpu", context_length=64)
    try:
        s = m.session()
        greedy(m)
        s.feed(PROMPT[:4])   # this session's cache and bind groups exist: its next step only submits
        m.engine.gpu.device.destroy()
        with pytest.raises(mdst.DeviceError, match="load the model again"):
            s.feed(PROMPT[4:8])
        assert m.engine.lost
        with pytest.raises(mdst.DeviceError, match="can no longer be used"):   # without touching the device
            m.logits(PROMPT)
    finally:
        m.close()


def test_a_released_cache_leaves_nothing_in_the_engine(path):
    with mdst.load(path, device="gpu", context_length=64) as m:
        eng = m.engine
        before = dict(eng.bytes_by_kind)
        with m.session() as s:
            first = int(s.prefill(PROMPT, greedy=True))
            list(s.decode(first, 3, lambda: "argmax", ahead=True))
            state = eng._cache_state[s.cache]
            assert state.groups and state.chain   # decode kept bind groups and its chained buffers
            cache = s.cache
        assert cache not in eng._cache_state and cache.pool is None and not cache.conv
        assert {k: v for k, v in eng.bytes_by_kind.items() if k in ("kv", "step", "staging")} == \
            {k: before.get(k, 0) for k in ("kv", "step", "staging")}
