"""The mixture-of-experts families (qwen3moe, lfm2moe) on tiny random files, against llama.cpp and the CPU reference.

As tests/test_families.py does for the dense families: the architecture on F32 files against llama.cpp
on both devices, the kernels on a quantized file (Q4_K_M: Q4_K and Q6_K experts, F32 routers) against
mdst's own CPU reference, fed in uneven parts so the one-row plans run too; and expert tensors split
across bindings on expert boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest

from mdst.dev import llamacpp, synth
from mdst.serve.bench import decode_weight_bytes
from metrics import agreement, rel_l2, report
from test_families import CHUNKS, N_POS, feed_in_parts, load, tiny, token_ids  # noqa: F401 (fixtures)
from test_presets import gpu_presets  # noqa: F401 (fixture)

PRESETS = ("qwen3moe-tiny", "lfm2moe-tiny")


@pytest.mark.parametrize("preset", PRESETS)
def test_tiny_presets_route_their_experts(tiny, load, preset):
    m = load(tiny(preset), "cpu")
    c = m.config
    assert 1 < c.moe.used < c.moe.experts
    t = m.gguf.tensors
    experts = [n for n in t if "_exps." in n]
    tied = "output.weight" not in t
    dense = sum(t[n].nbytes for n in t if len(t[n].shape) == 2 and (tied or n != "token_embd.weight")
                and ".shortconv.conv." not in n)   # convolution kernels are no matrices
    # a decode step reads the chosen experts only (bench's bandwidth figure)
    assert decode_weight_bytes(m) == (dense + t["token_embd.weight"].row_bytes
                                      + sum(t[n].nbytes for n in experts) * c.moe.used // c.moe.experts)
    if preset == "lfm2moe-tiny":
        assert c.moe.gating == "sigmoid" and 0 < c.moe.dense_lead < c.n_layers   # dense and expert layers
        assert 0 in c.kv_heads and any(c.kv_heads)
    else:
        assert c.moe.gating == "softmax"


@pytest.mark.parametrize("device", ["gpu", "cpu"])
@pytest.mark.parametrize("preset", PRESETS)
def test_f32_matches_llama_cpp(tiny, load, cache_dir, llama_cpp, preset, device):
    path, ids = tiny(preset), token_ids(preset)
    ref = llamacpp.logits(path, ids, cache_dir)
    got = load(path, device).logits(ids)
    assert got.shape == ref.shape == (N_POS, synth.PRESETS[preset].n_vocab)
    rel, agree = rel_l2(got, ref), agreement(got, ref)
    report(f"{preset} F32 {device} vs llama.cpp", tokens=N_POS, rel_l2=rel, top1_agreement=agree)
    assert rel < 2e-3
    assert agree >= 0.995


@pytest.mark.parametrize("preset", PRESETS)
def test_quantized_gpu_fed_in_parts_matches_cpu_reference(tiny, load, cache_dir, llama_cpp, preset):
    path, ids = tiny(preset, "Q4_K_M"), token_ids(preset)
    cpu = load(path, "cpu").logits(ids)
    gpu = feed_in_parts(load(path, "gpu"), ids, list(CHUNKS))
    ref = llamacpp.logits(path, ids, cache_dir)
    rel = rel_l2(gpu, cpu)
    report(f"{preset} Q4_K_M lavapipe fed in parts vs CPU reference", rel_l2=rel,
           cpu_vs_llama_cpp_rel_l2=rel_l2(cpu, ref), cpu_vs_llama_cpp_top1=agreement(cpu, ref))
    assert rel < 1e-3


@pytest.mark.parametrize("gpu_presets", [{"gemm_f16": 0}], indirect=True)   # the f32 GEMM: the f32 bound holds
@pytest.mark.parametrize("preset", PRESETS)
def test_gpu_presets_match_the_reference(tiny, load, gpu_presets, preset):
    """The hardware adapters' kernels forced onto lavapipe: the experts through the GEMV (decode) and the tiled
    GEMM over rows grouped by expert (prefill), in their EXPERTS modes."""
    import mdst

    path, ids = tiny(preset, "Q4_K_M"), token_ids(preset)
    with mdst.load(path, device="gpu", kv_type="f32", context_length=64) as g:
        assert g.device_profile.presets.matmul == "tiled"
        got = feed_in_parts(g, ids, list(CHUNKS))
        experts = {(rows, d.spec.name, "GLU" in dict(d.spec.constants)) for (_, rows, _), plan in g.engine.plans.items()
                   for d in plan.dispatches
                   if "EXPERTS" in dict(d.spec.constants) or d.spec.name in ("expert_groups", "expert_combine")}
    # decode: gate and up (stored as a pair) in one gated GEMV, then down; prefill: grouped, then combined
    assert {(name, glu) for rows, name, glu in experts if rows == 1} == {("matmul_row", True), ("matmul_row", False)}
    assert {(name, glu) for rows, name, glu in experts if rows > 1} == {
        ("expert_groups", False), ("matmul_rows", False), ("expert_combine", False)}
    rel = rel_l2(got, load(path, "cpu").logits(ids))
    report(f"{preset} Q4_K_M GPU presets on lavapipe, fed in parts, vs CPU reference", rel_l2=rel)
    assert rel < 1e-3


@pytest.mark.parametrize("gpu_presets", [{"gemm_f16": 0}, {"matmul": "by_output"}], indirect=True,
                         ids=["tiled", "by_output"])
def test_q8_activations_reach_the_experts(tiny, gpu_presets):
    """activations="q8" rounds the experts' x too, on every path: the one-row matmul quantizes it itself, the
    grouped GEMM and the per-output kernel (CPU adapters) read q8_round's copy; against the numpy path's q8."""
    import mdst

    path, ids = tiny("qwen3moe-tiny", "Q4_K_M"), token_ids("qwen3moe-tiny")
    with mdst.load(path, device="gpu", kv_type="f32", context_length=64, activations="q8") as g:
        got = feed_in_parts(g, ids, list(CHUNKS))
        by_output = g.device_profile.presets.matmul == "by_output"
        for (_, rows, _), plan in g.engine.plans.items():
            ds = plan.dispatches
            experts = [d for d in ds if "EXPERTS" in dict(d.spec.constants) or d.spec.name == "matmul_experts"]
            assert experts
            if rows == 1 and not by_output:
                assert all(dict(d.spec.constants).get("Q8") for d in experts)
            else:
                rounded = [d.resources[1] for d in ds if d.spec.name == "q8_round"]
                assert all(any(d.resources[1] is r for r in rounded) for d in experts)
    with mdst.load(path, device="cpu", context_length=64, activations="q8") as c, \
            mdst.load(path, device="cpu", context_length=64) as f:
        want, f32 = c.logits(ids), f.logits(ids)
    rel = rel_l2(got, want)
    report(f"qwen3moe-tiny Q4_K_M q8 activations, {'by_output' if by_output else 'tiled'} on lavapipe, vs CPU q8",
           rel_l2=rel, cpu_q8_vs_f32_rel_l2=rel_l2(want, f32))
    assert rel < 2e-2 and agreement(got, want) >= 0.9   # the round trip's steps where GPU and numpy sums differ


def test_expert_tensors_split_on_expert_boundaries(tiny, load, gpu):
    """A binding limit of three experts' bytes: each expert tensor in parts of whole experts, same logits."""
    import mdst

    path, ids = tiny("qwen3moe-tiny"), token_ids("qwen3moe-tiny")[:9]
    p = synth.PRESETS["qwen3moe-tiny"]
    expert_bytes = p.d_ff_exp * p.d_model * 4
    want = load(path, "cpu").logits(ids)
    with mdst.load(path, device="gpu", kv_type="f32", context_length=64, max_binding_size=3 * expert_bytes) as m:
        w = m.engine.weights.weights["blk.0.ffn_gate_exps.weight"]
        assert [q.rows for q in w.parts] == [3 * p.d_ff_exp, 3 * p.d_ff_exp, 2 * p.d_ff_exp]
        got = feed_in_parts(m, ids, [4, 1, 4])
    rel = rel_l2(got, want)
    report("qwen3moe-tiny F32 experts in 3 parts vs CPU reference", rel_l2=rel)
    assert rel < 1e-5
