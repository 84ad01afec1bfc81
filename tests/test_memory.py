"""The memory layer: pool reuse, fit prediction, limits, KV formats, rings, rolling state, sessions,
prefix reuse, zero-copy loading and weight paging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mdst
from mdst.format.gguf import GGUFFile
from mdst.memory.fit import parse_bytes
from mdst.memory.pool import size_class
from mdst.dev import synth
from load_memory import rss_by_mapping
from metrics import rel_l2, report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smol(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=256) as m:
        yield m


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """Small synthetic files: gemma3 (sliding window 8) and lfm2 (short convolutions)."""
    out = {}
    for preset in ("gemma3-tiny", "lfm2-tiny"):
        path = cache_dir / f"memory-{preset}-{synth_key()}.gguf"
        if not path.exists():
            synth.write(path, preset, types="Q8_0", seed=3)
        out[preset] = str(path)
    return out


def synth_key() -> str:
    import hashlib
    return hashlib.sha256(Path(synth.__file__).read_bytes()).hexdigest()[:12]


def test_size_classes_bound_waste():
    for n in (1, 255, 256, 257, 1000, 4097, 123457, 10**7):
        c = size_class(n)
        assert c >= n and c >= 256 and (n < 256 or c <= n * 1.25)


def test_pool_reuses_buffers_across_values_and_plans(smol):
    smol.engine.compile_all()
    r = smol.memory_report()
    pool = r["pool"]
    assert pool["hits"] > 10 * pool["misses"]  # every plan's values share a handful of buffers
    decode = next(p for p in r["plans"] if p["output_rows"] == "last" and p["rows"] == 1 and p["pick"] == "argmax")
    report("activation bytes: liveness vs one buffer per tensor (SmolLM2 decode plan)",
           liveness=decode["activation_bytes"], one_per_tensor=decode["one_buffer_per_tensor_bytes"],
           pool_buffers=pool["buffers"], pool_bytes=pool["allocated_bytes"])
    assert decode["activation_bytes"] * 10 < decode["one_buffer_per_tensor_bytes"]


@pytest.mark.parametrize("which", ["smollm2", "gemma3-tiny", "lfm2-tiny"])
def test_prediction_matches_created_bytes(which, smollm2_path, tiny, gpu):
    path = smollm2_path if which == "smollm2" else tiny[which]
    with mdst.load(path, device="gpu", context_length=512) as m:
        m.engine.compile_all()
        with m.session():
            created = sum(m.engine.bytes_by_kind.values())
            predicted = m.predicted.total
    report("fit prediction vs bytes requested through create_buffer", model=which, predicted=predicted,
           created=created)
    assert abs(predicted - created) <= 0.05 * created


def test_memory_limit_refuses_with_breakdown_and_options(smollm2_path, gpu):
    with pytest.raises(mdst.OutOfMemoryError) as e:
        mdst.load(smollm2_path, device="gpu", gpu_memory_limit="100MB")
    msg = str(e.value)
    for part in ("weights", "kv", "activations", "context_length", "kv_type", "weight_paging", "limit is 95.4 MiB"):
        assert part in msg


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(1000) == 1000
    assert parse_bytes(None) is None
    for bad in ("lots", "-1GB", "2 XB"):
        with pytest.raises(ValueError, match="gpu_memory_limit"):
            parse_bytes(bad)
    with pytest.raises(TypeError):
        parse_bytes(2.5)


@pytest.mark.parametrize("kv_type,tol", [("f32", 1e-5), ("f16", 2e-3), ("q8_0", 2e-2)])
def test_kv_types_match_cpu_reference_in_the_same_format(kv_type, tol, smollm2_path, gpu):
    """The CPU engine rounds what it caches exactly as the GPU format stores it. Rounding to 16 or 8 bits
    turns the engines' last-bit differences (summation order) into whole-step differences now and then,
    so the tolerance follows the format's step."""
    if kv_type == "f16" and not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    text = "The quick brown fox jumps over the lazy dog. " * 3
    with mdst.load(smollm2_path, device="gpu", kv_type=kv_type, context_length=128) as g, \
            mdst.load(smollm2_path, device="cpu", kv_type=kv_type, context_length=128) as c:
        ids = c.tokenize(text)
        rel = rel_l2(g.logits(ids), c.logits(ids))
        f32_bytes = g.engine.layout.kv_bytes() if kv_type == "f32" else None
        kv_bytes = g.engine.layout.kv_bytes()
    report("KV cache format: lavapipe vs CPU reference", kv_type=kv_type, rel_l2=rel, kv_bytes_at_128=kv_bytes)
    assert rel < tol
    if f32_bytes is None:
        ratio = {"f16": 0.5, "q8_0": 1.125 / 4}[kv_type]
        with mdst.load(smollm2_path, device="cpu", context_length=128) as f:
            assert kv_bytes == pytest.approx(f.engine.layout.kv_bytes() * ratio)


def test_q8_0_kv_stays_close_to_f32(smollm2_path, gpu):
    ids = list(range(100, 160))
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=128) as a, \
            mdst.load(smollm2_path, device="gpu", kv_type="q8_0", context_length=128) as b:
        rel = rel_l2(b.logits(ids), a.logits(ids))
    report("q8_0 KV cache vs f32 KV cache (SmolLM2, 60 tokens)", rel_l2=rel)
    assert rel < 5e-2


def test_sliding_window_memory_does_not_grow_with_context(tiny, gpu):
    sizes = {}
    for ctx in (256, 2048):
        with mdst.load(tiny["gemma3-tiny"], device="gpu", context_length=ctx) as m:
            lay = m.engine.layout
            sizes[ctx] = ({lk.spec.layer: lay.layer_bytes(lk) for lk in lay.kv if lk.spec.window},
                          {lk.spec.layer: lay.layer_bytes(lk) for lk in lay.kv if not lk.spec.window})
    windowed, full = zip(*sizes.values())
    assert windowed[0] and windowed[0] == windowed[1]          # rings: independent of the context
    assert all(full[1][k] == 8 * full[0][k] for k in full[0])  # full layers: proportional to it


def test_lfm2_rolling_state_is_per_session_and_fixed_size(tiny, gpu):
    with mdst.load(tiny["lfm2-tiny"], device="gpu", context_length=256) as m:
        lay = m.engine.layout
        assert lay.conv and lay.conv_bytes() == sum(4 * (c.kernel - 1) * c.channels for c in lay.conv)
        ids = list(range(3, 40))
        a, b = m.session(), m.session()
        a.feed(ids[:10])
        b.feed(ids[20:])       # another sequence's state must not leak into a's
        rest = a.feed(ids[10:])
        np.testing.assert_allclose(rest, m.logits(ids)[10:], rtol=1e-5, atol=1e-5)
        assert not m.engine.can_rewind(37, 20)  # a convolution state cannot be cut back


def test_sessions_share_weights(smol):
    before = dict(smol.engine.bytes_by_kind)
    sessions = [smol.session() for _ in range(3)]
    after = smol.engine.bytes_by_kind
    assert after["weights"] == before["weights"]
    assert after["kv"] - before.get("kv", 0) == 3 * smol.engine.layout.kv_bytes()
    for s in sessions:
        s.close()
    assert smol.engine.bytes_by_kind["kv"] == before.get("kv", 0)


def test_prefix_reuse_prefills_only_new_tokens(smol):
    first = "Once upon a time, in a land far away, there lived a wise old owl who"
    smol.generate(first, max_tokens=4)
    n_first = smol.last_stats["prompt_tokens"]
    t0 = time.perf_counter()
    smol.generate(first + " watched the stars every night and", max_tokens=4)
    warm = time.perf_counter() - t0
    stats = dict(smol.last_stats)
    assert stats["cached_tokens"] >= n_first - 1
    with smol.session() as s:  # the same prompt with nothing cached, for comparison
        t0 = time.perf_counter()
        s.prefill(smol.tokenize(first + " watched the stars every night and"), greedy=True)
        cold = time.perf_counter() - t0
    report("prefix reuse (SmolLM2, lavapipe)", prompt_tokens=stats["prompt_tokens"],
           cached_tokens=stats["cached_tokens"], new_tokens=stats["prompt_tokens"] - stats["cached_tokens"],
           prefill_s_with_reuse=stats["prefill_s"], prefill_s_without=cold)


def test_weight_paging_gives_the_same_logits(smollm2_path, gpu):
    ids = list(range(200, 240))
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=128) as full:
        want = full.logits(ids)
        limit = full.predicted.total - 40 * 2**20  # 40 MiB short of holding every weight
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=128, gpu_memory_limit=limit,
                   weight_paging=True) as paged:
        got = paged.logits(ids)
        w = paged.memory_report()["weights"]
        assert paged.predicted.total <= limit
        text = paged.generate("The capital of France is", max_tokens=6)
    assert w["paged_bytes"] > 0 and w["page_slots"] == 2 and w["parts_paged_in"] > 0
    np.testing.assert_array_equal(got, want)
    assert "Paris" in text
    with pytest.raises(mdst.OutOfMemoryError, match="weight_paging"):
        mdst.load(smollm2_path, device="gpu", context_length=128, gpu_memory_limit=limit)


def test_weight_paging_splits_a_matrix_larger_than_the_slots_allow(cache_dir, gpu):
    """A tied embedding most of the weights (as Gemma 3's): paging splits it into parts small enough
    for the slots to leave room, instead of refusing a limit it could meet."""
    path = cache_dir / f"memory-gemma3-vocab65536-{synth_key()}.gguf"
    if not path.exists():
        synth.write(path, "gemma3-tiny", types="Q8_0", seed=5, n_vocab=65536)
    ids = list(range(300, 317))
    with mdst.load(str(path), device="gpu", kv_type="f32", context_length=64) as full:
        want = full.logits(ids)
        weights = full.predicted.bytes_by_kind["weights"]
        embedding = full.gguf.tensors["token_embd.weight"].nbytes
        limit = full.predicted.total - int(0.3 * weights)
    assert embedding > 0.7 * weights   # the embedding alone is more than the limit leaves for weights
    with mdst.load(str(path), device="gpu", kv_type="f32", context_length=64, gpu_memory_limit=limit,
                   weight_paging=True) as paged:
        got = paged.logits(ids)
        w = paged.memory_report()["weights"]
        slot = max(b.size for b in paged.engine.weights.slots)
        assert paged.predicted.total <= limit
    assert w["paged_bytes"] > 0 and slot < embedding / 4
    np.testing.assert_array_equal(got, want)


def test_zero_copy_loading_stays_within_a_quarter_of_the_file(gemma_path, gpu):
    # this checkout's mdst, not whichever one the interpreter has installed
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load_memory.py"), gemma_path],
                         capture_output=True, text=True, timeout=600, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    r = json.loads(out.stdout)
    report("load memory (Gemma 3 270M, lavapipe)", weights_path_overhead=r["weights_path"]["overhead_bytes"],
           weights_path_fraction=r["weights_path"]["overhead_fraction_of_file"],
           weights_path_fraction_of_gpu_bytes=r["weights_path"]["overhead_fraction_of_gpu_bytes"],
           whole_load_fraction=r["whole_load"]["overhead_fraction_of_file"],
           phases_kept={k: p["rss_growth_bytes"] for k, p in r["phases"].items()})
    assert r["weights_path"]["overhead_fraction_of_file"] <= 0.25
    # no second copy of the weights: RSS grows by the GPU buffers (host memory on lavapipe) and little more
    assert r["weights_path"]["overhead_fraction_of_gpu_bytes"] <= 0.10
    # weights are read from the file, not through its mapping, so none of its pages became resident
    assert r["weights_path"]["rss_growth_by_mapping"].get(os.path.realpath(gemma_path), 0) < 2**20


def test_file_reads_match_the_mapping_and_leave_it_untouched(smollm2_path):
    f = GGUFFile(smollm2_path)
    path = os.path.realpath(smollm2_path)
    try:
        before = rss_by_mapping().get(path, 0)
        embedding = f.read("token_embd.weight")
        assert rss_by_mapping().get(path, 0) - before < 2**16   # preadv: no page of the mapping touched
        assert bytes(embedding) == bytes(f.tensor_bytes("token_embd.weight"))
        rng = np.random.default_rng(11)
        for t in rng.choice(list(f.tensors.values()), 12):
            a = int(rng.integers(0, t.nbytes))
            b = int(rng.integers(a, t.nbytes + 1))
            assert bytes(f.read(t.name, a, b)) == bytes(f.tensor_bytes(t.name, a, b))
    finally:
        f.close()


def test_uploads_through_wgpu_py_mapping_give_the_same_model(smollm2_path, gpu, monkeypatch):
    """The fallback for wgpu builds without the native entry points uploads the same bytes."""
    from mdst.gpu import native

    def not_here(*args: object) -> None:
        raise AssertionError("the fallback must not map through wgpu-native")

    ids = list(range(40, 52))
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=64) as m:
        want = m.logits(ids)
    monkeypatch.setattr(native, "can_map_directly", lambda: False)
    monkeypatch.setattr(native, "fill", not_here)
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=64) as m:
        got = m.logits(ids)
    np.testing.assert_array_equal(got, want)
