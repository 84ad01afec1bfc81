"""SmolLM2-135M (llama architecture) end to end: generation, and fidelity against llama.cpp.

Exactness is judged in two steps (see the spine issue): the architecture on an F32 copy of the
file against llama.cpp, and the kernels on the quantized file against mdst's own CPU reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mdst
from mdst.dev import llamacpp
from metrics import agreement, rel_l2, report

TEXT = (Path(__file__).parent / "data" / "english.txt").read_text()


@pytest.fixture(scope="module")
def f32_path(smollm2_path, cache_dir):
    return str(llamacpp.f32_copy(smollm2_path, cache_dir))


@pytest.fixture(scope="module")
def models(smollm2_path, f32_path, gpu):
    """Each model loaded once: quantized and F32 copy, on lavapipe and on the CPU fallback."""
    ms = {
        "q_gpu": mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=1024),
        "q_cpu": mdst.load(smollm2_path, device="cpu", context_length=1024),
        "f32_gpu": mdst.load(f32_path, device="gpu", kv_type="f32", context_length=1024),
        "f32_cpu": mdst.load(f32_path, device="cpu", context_length=1024),
    }
    yield ms
    for m in ms.values():
        m.close()


@pytest.fixture(scope="module")
def ids(models):
    ids = models["q_gpu"].tokenize(TEXT)
    assert len(ids) >= 200
    return ids


@pytest.mark.parametrize("which", ["q_gpu", "q_cpu"])
def test_generate_capital_of_france(models, which):
    text = models[which].generate("The capital of France is", max_tokens=16)
    assert isinstance(text, str) and "Paris" in text, text
    assert models[which].last_stats["generated_tokens"] >= 1


# Rows the lavapipe gates compare: a full all-row step of 128 and a second one of 32 reading its cache; the CPU
# path covers the whole text against llama.cpp. Lavapipe's time goes by rows (331 tokens ran as 384).
GPU_ROWS = 160


def gpu_rows(m: mdst.Model, ids: list[int]) -> np.ndarray:
    """Lavapipe's logits of the first GPU_ROWS positions of ids (causal: the first rows of a pass over all)."""
    assert m.engine.chunk_all < GPU_ROWS < len(ids)  # two steps, the second reading the cache the first wrote
    return m.logits(ids[:GPU_ROWS])


@pytest.mark.parametrize("which", ["f32_gpu", "f32_cpu"])
def test_f32_copy_matches_llama_cpp(models, ids, f32_path, cache_dir, which):
    ref = llamacpp.logits(f32_path, ids, cache_dir)
    got = gpu_rows(models[which], ids) if which.endswith("gpu") else models[which].logits(ids)
    ref = ref[:len(got)]
    assert got.shape == ref.shape and got.dtype == np.float32
    rel, agree = rel_l2(got, ref), agreement(got, ref)
    report(f"smollm2 f32-copy {which} vs llama.cpp", tokens=len(got), rel_l2=rel, top1_agreement=agree)
    assert rel < 2e-3
    assert agree >= 0.995


@pytest.fixture(scope="module")
def q_gpu_logits(models, ids):
    """One lavapipe pass over the first GPU_ROWS ids, shared: its time goes by rows."""
    return gpu_rows(models["q_gpu"], ids)


def test_feed_token_by_token_matches_logits(models, ids, q_gpu_logits):
    m = models["q_gpu"]
    n = 40
    whole = q_gpu_logits[:n]   # causal: the first n rows of one logits call over more tokens
    with m.session() as s:
        steps = np.concatenate([s.feed([t]) for t in ids[:n]])
    rel = rel_l2(steps, whole)
    report("smollm2 feed-by-token vs logits (lavapipe)", tokens=n, rel_l2=rel)
    assert rel < 1e-4


@pytest.fixture(scope="module")
def cpu_reference_logits(models, ids):
    return models["q_cpu"].logits(ids)


def test_quantized_gpu_matches_cpu_reference(q_gpu_logits, cpu_reference_logits):
    rel = rel_l2(q_gpu_logits, cpu_reference_logits[:len(q_gpu_logits)])
    report("smollm2 Q4_1 lavapipe f32 vs CPU reference", rel_l2=rel)
    assert rel < 1e-3


def test_quantized_f16_matches_cpu_reference(smollm2_path, gpu, ids, cpu_reference_logits):
    if not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    with mdst.load(smollm2_path, device="gpu", kv_type="f16", context_length=1024) as m:
        got = gpu_rows(m, ids)
    rel = rel_l2(got, cpu_reference_logits[:len(got)])
    report("smollm2 Q4_1 lavapipe f16 vs CPU reference", rel_l2=rel)
    assert rel < 1e-2


def test_quantized_agrees_with_llama_cpp(models, ids, smollm2_path, cache_dir, cpu_reference_logits):
    ref = llamacpp.logits(smollm2_path, ids, cache_dir)
    agree = agreement(cpu_reference_logits, ref)
    report("smollm2 Q4_1 mdst vs llama.cpp (quantized activations)", top1_agreement=agree,
           rel_l2=rel_l2(cpu_reference_logits, ref))
    assert agree >= 0.90



def test_q8_activations_match_the_cpu_reference(smollm2_path, gpu, ids, cache_dir, cpu_reference_logits):
    # activations="q8": the matmuls on Q4_1 and Q8_0 weights take x through its 8-bit round trip, F32 ones not;
    # lavapipe (matmul_by_output) against the numpy path computing the same, and how far that moves the logits
    # from f32 activations and from llama.cpp (whose CPU path quantizes activations too). The round trip is
    # discontinuous: a value near a rounding boundary that differs in its last bits between two backends comes
    # out one step (amax / 127) apart, and 30 layers carry that on; perturbing every activation by 1e-6 of
    # itself on the numpy path moves this model's logits about 1.5e-2 (2.5e-6 without q8). So the gate here is
    # the q8_0 KV cache's, not f32's; the kernel tests hold each kernel to the reference at 1e-5.
    n = 32
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=1024, activations="q8") as m:
        specs = {d.label: dict(d.spec.constants) for d in m.engine.plan("last", 1, "argmax").dispatches}
        got = m.logits(ids[:n])
    assert specs["matmul.attn_q+attn_k+attn_v"].get("Q8") and specs["matmul.token_embd"].get("Q8")
    with mdst.load(smollm2_path, device="cpu", context_length=1024, activations="q8") as c:
        ref = c.logits(ids[:n])
    f32 = cpu_reference_logits[:n]
    llama = llamacpp.logits(smollm2_path, ids, cache_dir)[:n]
    rel, agree = rel_l2(got, ref), agreement(got, ref)
    rel_f32, agree_f32 = rel_l2(ref, f32), agreement(ref, f32)
    report("smollm2 Q4_1 q8 activations: lavapipe vs CPU q8, CPU q8 vs f32 and vs llama.cpp", tokens=n,
           rel_l2=rel, top1_agreement=agree, rel_l2_q8_vs_f32=rel_f32, top1_agreement_q8_vs_f32=agree_f32,
           rel_l2_q8_vs_llama_cpp=rel_l2(ref, llama), rel_l2_f32_vs_llama_cpp=rel_l2(f32, llama))
    assert rel < 5e-2 and agree >= 0.9
    assert 1e-3 < rel_f32 < 0.1 and agree_f32 >= 0.9
