"""The generated-model families (llama, qwen3, mistral3, lfm2, gemma3) against llama.cpp and the CPU reference.

Tiny random-weight files from mdst.dev.synth exercise each family's features within the tested
positions (sliding windows, YaRN and the attention temperature, short convolutions). Exactness is
judged in two steps, as for the real models: the architecture on F32 files against llama.cpp, and
the kernels on quantized files against mdst's own CPU reference (llama.cpp's quantized path rounds
activations, so its distance there is reported, not gated).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mdst
from mdst.format.gguf import GGUFFile
from mdst.dev import kquants, llamacpp, synth
from metrics import agreement, rel_l2, report

PRESETS = ("llama-tiny", "qwen3-tiny", "ministral3-tiny", "lfm2-tiny", "gemma3-tiny")
DEVICES = ("gpu", "cpu")
QUANT_MIXES = ("Q8_0", "Q4_K_M", "Q3_K", "Q2_K")
N_POS = 48
CONTEXT = 64
# Uneven feeds whose boundaries fall before, on and after the window and YaRN/temperature period (8).
CHUNKS = (5, 1, 13, 1, 1, 8, 19)
# Past the ring of Gemma 3's local layers (window + prefill chunk - 1 slots), fed across its wrap.
RING_POS, RING_CONTEXT = 200, 256
RING_CHUNKS = (100, 1, 60, 1, 38)


@functools.lru_cache(maxsize=1)
def generator_version() -> str:
    """Hash of everything that decides synth's output: its sources, gguf-py's quantizers, numpy's generators."""
    h = hashlib.sha256()
    for module in (synth, kquants):
        h.update(Path(module.__file__).read_bytes())
    h.update(importlib.metadata.version("gguf").encode())
    h.update(np.__version__.encode())
    return h.hexdigest()[:16]


def synthetic_gguf(cache_dir: Path, preset: str, types: str = "F32", seed: int = 0, **overrides: Any) -> Path:
    """synth.write(preset, types, seed, **overrides) into the cache, written once per generator version."""
    key = hashlib.sha256(json.dumps([generator_version(), preset, types, seed, sorted(overrides.items())])
                         .encode()).hexdigest()[:16]
    named = "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
    path = Path(cache_dir) / f"synth-{preset}-{types}-s{seed}{named}-{key}.gguf"
    if not path.exists():
        synth.write(path, preset, types=types, seed=seed, **overrides)   # atomic: writes a .partial, then renames
    return path


def token_ids(preset: str) -> list[int]:
    """N_POS reproducible ids spread over the preset's whole vocabulary."""
    n_vocab = synth.PRESETS[preset].n_vocab
    return [int(t) for t in np.random.default_rng(7).integers(0, n_vocab, N_POS)]


@pytest.fixture(scope="module")
def load(request):
    """load(path, device, context=CONTEXT) -> Model, each loaded once per module (GPU models with an f32 KV cache)."""
    models: dict[tuple[str, str, int], mdst.Model] = {}

    def get(path: Path, device: str, context: int = CONTEXT) -> mdst.Model:
        key = (str(path), device, context)
        if key not in models:
            if device == "gpu":
                request.getfixturevalue("gpu")     # fails in CI, skips locally, without an adapter
            models[key] = mdst.load(path, device=device, kv_type="f32", context_length=context)
        return models[key]

    yield get
    for m in models.values():
        m.close()


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """tiny(preset, types="F32", **overrides) -> path of the cached generated file."""
    return lambda preset, types="F32", **overrides: synthetic_gguf(cache_dir, preset, types, **overrides)


# ---------------------------------------------------------------- the presets reach their features

@pytest.mark.parametrize("preset", PRESETS)
def test_tiny_presets_exercise_their_features_within_the_tested_positions(tiny, load, preset):
    c = load(tiny(preset), "cpu").config
    if preset == "gemma3-tiny":
        assert 0 < c.window < N_POS
        assert any(c.sliding) and not all(c.sliding)          # local and global layers both present
        assert c.rope_local.base != c.rope_global.base
    elif preset == "ministral3-tiny":
        assert c.rope.n_ctx_orig <= 8 < N_POS                 # temperature steps at 8, 16, 24, ...
        assert c.rope.ext_factor == 1.0 and c.rope.freq_scale < 1.0   # YaRN interpolation
        assert c.temp_scale > 0
        assert not c.rope.neox
    elif preset == "lfm2-tiny":
        assert 0 in c.kv_heads and any(c.kv_heads)           # convolution and attention layers
        assert c.conv_kernel < N_POS                          # the rolling state is shifted within the test
        assert c.rope.neox
    elif preset == "qwen3-tiny":
        assert c.rope.neox
    else:
        assert not c.rope.neox


# ---------------------------------------------------------------- architecture: F32 against llama.cpp

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PRESETS)
def test_f32_matches_llama_cpp(tiny, load, cache_dir, llama_cpp, preset, device):
    path, ids = tiny(preset), token_ids(preset)
    ref = llamacpp.logits(path, ids, cache_dir)
    got = load(path, device).logits(ids)
    assert got.shape == ref.shape == (N_POS, synth.PRESETS[preset].n_vocab) and got.dtype == np.float32
    rel, agree = rel_l2(got, ref), agreement(got, ref)
    report(f"{preset} F32 {device} vs llama.cpp", tokens=N_POS, rel_l2=rel, top1_agreement=agree)
    assert rel < 2e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PRESETS)
def test_wrong_rope_order_twin_fails_the_gate(tiny, load, cache_dir, llama_cpp, preset, device):
    """The negative control: a runtime with the other RoPE ordering would compute what mdst computes on the twin."""
    ids = token_ids(preset)
    twin = tiny(preset, wrong_rope_order=True)
    got = load(twin, device).logits(ids)
    wrong = rel_l2(got, llamacpp.logits(tiny(preset), ids, cache_dir))
    valid = rel_l2(got, llamacpp.logits(twin, ids, cache_dir))     # the twin itself is a valid file
    report(f"{preset} wrong-RoPE twin {device} vs llama.cpp on the original (must fail)", rel_l2=wrong,
           twin_vs_llama_cpp_on_twin=valid)
    assert wrong > 2e-3
    assert valid < 2e-3


# ---------------------------------------------------------------- kernels: quantized GPU against the CPU reference

def check_quantized(path: Path, ids: list[int], load, cache_dir: Path, name: str) -> None:
    """GPU within 1e-3 of the CPU reference; llama.cpp's distance reported."""
    gpu, cpu = load(path, "gpu").logits(ids), load(path, "cpu").logits(ids)
    ref = llamacpp.logits(path, ids, cache_dir)
    rel = rel_l2(gpu, cpu)
    report(f"{name} lavapipe f32 vs CPU reference", rel_l2=rel,
           cpu_vs_llama_cpp_rel_l2=rel_l2(cpu, ref), cpu_vs_llama_cpp_top1=agreement(cpu, ref))
    assert rel < 1e-3


@pytest.mark.parametrize("mix", QUANT_MIXES)
@pytest.mark.parametrize("preset", PRESETS)
def test_quantized_gpu_matches_cpu_reference(tiny, load, cache_dir, llama_cpp, preset, mix):
    check_quantized(tiny(preset, mix), token_ids(preset), load, cache_dir, f"{preset} {mix}")


@pytest.mark.parametrize("qtype", [t for t in synth.WEIGHT_TYPES if t != "F32"])
def test_every_weight_type_end_to_end(tiny, load, cache_dir, llama_cpp, qtype):
    path = tiny("llama-tiny", qtype)
    with GGUFFile(path) as f:
        matrices = {t.type.name for t in f if len(t.shape) == 2}
    assert matrices == {qtype}                     # no block-size fallback: every matrix is of the type tested
    check_quantized(path, token_ids("llama-tiny"), load, cache_dir, f"llama-tiny {qtype}")


# ---------------------------------------------------------------- prefill / decode boundaries

def feed_in_parts(m: mdst.Model, ids: list[int], sizes: list[int]) -> np.ndarray:
    """Logits of `ids` fed to one session in parts of `sizes` tokens."""
    assert sum(sizes) == len(ids)
    with m.session() as s:
        parts, at = [], 0
        for n in sizes:
            parts.append(s.feed(ids[at:at + n]))
            at += n
        assert s.n_past == len(ids)
    return np.concatenate(parts)


@pytest.mark.parametrize("feeds", ["by-token", "uneven-chunks"])
@pytest.mark.parametrize("types", ["F32", "Q4_K_M"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PRESETS)
def test_session_feed_matches_one_logits_call(tiny, load, preset, device, types, feeds):
    m = load(tiny(preset, types), device)
    ids = token_ids(preset)
    rel = rel_l2(feed_in_parts(m, ids, [1] * N_POS if feeds == "by-token" else list(CHUNKS)), m.logits(ids))
    report(f"{preset} {types} {device} feed {feeds} vs one logits() call", tokens=N_POS, rel_l2=rel)
    assert rel < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_sliding_window_ring_wraps(tiny, load, cache_dir, llama_cpp, device):
    """Gemma 3's local layers keep a ring of window + chunk - 1 positions; a longer sequence overwrites it."""
    path = tiny("gemma3-tiny")
    m = load(path, device, context=RING_CONTEXT)
    ids = [int(t) for t in np.random.default_rng(8).integers(0, m.n_vocab, RING_POS)]
    rings = [lk.ring for lk in m.engine.layout.kv]
    assert min(rings) < RING_POS <= max(rings)          # local rings wrap; global layers keep every position
    whole = m.logits(ids)
    rel = rel_l2(whole, llamacpp.logits(path, ids, cache_dir))
    fed = rel_l2(feed_in_parts(m, ids, list(RING_CHUNKS)), whole)
    report(f"gemma3-tiny F32 {device} ring wrap vs llama.cpp", tokens=RING_POS, rings=sorted(set(rings)),
           rel_l2=rel, uneven_feed_vs_logits_rel_l2=fed)
    assert rel < 2e-3
    assert fed < 1e-4


def test_quantized_ring_wrap_gpu_matches_cpu_reference(tiny, load):
    """Gemma 3's quantized kernels across the ring's wrap, one-row steps included: lavapipe within 1e-3 of the
    CPU reference (the real model needs a 650-token prompt to wrap its 512-position window)."""
    path = tiny("gemma3-tiny", "Q4_K_M")
    gpu, cpu = load(path, "gpu", context=RING_CONTEXT), load(path, "cpu", context=RING_CONTEXT)
    ids = [int(t) for t in np.random.default_rng(8).integers(0, gpu.n_vocab, RING_POS)]
    rings = [lk.ring for lk in gpu.engine.layout.kv]
    assert min(rings) < RING_POS <= max(rings)
    rel = rel_l2(feed_in_parts(gpu, ids, list(RING_CHUNKS)), cpu.logits(ids))
    report("gemma3-tiny Q4_K_M lavapipe ring wrap, fed in parts, vs CPU reference", tokens=RING_POS, rel_l2=rel)
    assert rel < 1e-3
