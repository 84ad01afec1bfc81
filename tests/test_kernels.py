"""Every kernel against mdst.reference on fresh random inputs at awkward sizes, with poisoned outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from mdst import reference
from mdst.ir.ops import AttentionSpec, ConvSpec, RopeSpec
from mdst.kernels import WEIGHT_TYPES, KernelSpec
from mdst.kernels.runner import KernelRunner, Out
from mdst.dev.oracle import lopsided_routes, weight_lead
from mdst.format.gguf import GGML_TYPE_BY_NAME
from mdst.format.quants import decode_rows, encode_rows, kv_row_bytes
from mdst.compile.plan import (ATTN_NO_ROPE, ATTN_WG, GEMV_WG, attention_group, flash_tiles, gemm_groups, gemv_groups,
                               gemv_launch, merge_launch, step_words)
from mdst.format.quants import dequantize
from metrics import rel_l2
from mdst.dev.random_weights import awkward_k, random_weights


@pytest.fixture(scope="module")
def run(gpu):
    return KernelRunner(gpu).run


@pytest.fixture
def rng():
    return np.random.default_rng()  # fresh inputs every run


def f32(b: np.ndarray) -> np.ndarray:
    return b.view(np.float32)


def weight(wtype: str, rows: int, cols: int, rng):
    raw = random_weights(wtype, rows, cols, rng)
    t = GGML_TYPE_BY_NAME[wtype]
    return raw, dequantize(raw, t, (cols, rows)), cols // t.block * t.block_bytes


@pytest.mark.parametrize("wtype", WEIGHT_TYPES)
def test_get_rows(run, rng, wtype):
    cols, vocab, n = awkward_k(wtype), 37, 9
    raw, table, row_bytes = weight(wtype, vocab, cols, rng)
    ids = rng.integers(0, vocab, n)
    ids[1] = ids[0]
    # the second half of the table as a separate part: rows outside it must stay untouched
    row0 = vocab // 2
    part = raw[row0 * row_bytes:]
    lead = weight_lead(wtype)  # the part starts this far into its buffer (w0)
    part = np.concatenate([rng.integers(0, 256, lead, dtype=np.uint8), part])
    out = f32(run(KernelSpec("get_rows", wtype), [part, step_words(0, n, ids), Out(n * cols * 4)],
                  {"cols": cols, "row0": row0, "part_rows": vocab - row0, "row_bytes": row_bytes, "scale": 1.5,
                   "w0": lead}, (-(-cols // 4 // 64), n, 1))[0]).reshape(n, cols)
    for r, i in enumerate(ids):
        if i >= row0:
            np.testing.assert_allclose(out[r], table[i] * 1.5, rtol=1e-6, atol=1e-6)
        else:
            assert np.isnan(out[r]).all(), "a row outside the part was written"


FUSIONS = [{}, {"NORM": True}, {"RES": True}, {"GLU": 1, "NORM": True, "RES": True}, {"GLU": 2}]

# Fusions and lane shapes are the matmul kernels' code, the same for every type the generic step reads through
# deq4: all of them run with F32, Q5_0 (blocks off word boundaries) and the types with steps of their own; the
# other types run the plain case (every lane shape of the GEMV) and the fully fused one (one shape), which read their
# deq4 the same ways.
# every fusion for these (TQ1_0's step sums NORM's squares over parts of x's groups); the other types (the grid types'
# steps included) plain at every GEMV shape and one fusion
ALL_FUSION_TYPES = {"F32", "Q5_0", "Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "TQ1_0"}
TYPE_FUSIONS = [(w, f) for w in WEIGHT_TYPES for f in (FUSIONS if w in ALL_FUSION_TYPES else FUSIONS[:1] + FUSIONS[3:4])]


def fusion_id(fusion: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in fusion.items()) or "plain"


def clear_of_q8_ties(x: np.ndarray, scaled) -> np.ndarray:
    """x nudged until no value of scaled(x) lies within a few f32 roundings of a half step of its 8-bit block:
    there the kernel's own norm and 1/d may round it the other way from the reference, one step of d off."""
    for _ in range(100):
        b = np.abs(scaled(x)).reshape(x.shape[0], -1, reference.Q8_BLOCK)
        d = b.max(axis=-1, keepdims=True) / np.float32(127)
        t = np.divide(b, d, out=np.zeros_like(b), where=d > 0)
        near = (np.abs(t - np.floor(t) - 0.5) < 1e-5 * t + 1e-6).reshape(x.shape)
        if not near.any():
            return x
        x = np.where(near, x * np.float32(1.001), x)
    raise AssertionError("could not move x off the 8-bit rounding ties")


def fused_matmul_case(rng, wtype: str, m: int, fusion: dict, n: int = 77, k: int | None = None,
                      clear_ties: bool | None = None):
    """Inputs and reference of a matmul with its fusions (and Q8: x through its 8-bit round trip, x moved off its
    rounding ties, which clear_ties decides where given); the weights sit weight_lead bytes into their buffer."""
    k = k or awkward_k(wtype)
    glu = fusion.get("GLU", 0)
    raw, w, row_bytes = weight(wtype, 2 * n if glu else n, k, rng)   # gate rows, then up rows
    lead = weight_lead(wtype)
    buf = np.concatenate([rng.integers(0, 256, lead, dtype=np.uint8), raw])
    x = rng.standard_normal((m, k)).astype(np.float32)
    g = rng.standard_normal(k).astype(np.float32)

    def normed(v):
        return reference.rms_norm(v, g, 1e-5) if fusion.get("NORM") else v

    x = clear_of_q8_ties(x, normed) if (fusion.get("Q8") if clear_ties is None else clear_ties) else x
    xn = normed(x)
    xn = reference.q8_round_trip(xn) if fusion.get("Q8") else xn
    want = reference.matmul(xn, w[:n])
    if glu:
        want = reference.glu(want, reference.matmul(xn, w[n:]), {1: "silu", 2: "gelu_tanh"}[glu])
    return buf, x, g, want, k, n, row_bytes, lead


# (lanes per row, groups of 4 a unit of the generic step, rows per group, units per loop iteration):
# rows that do not divide n (77), rows as many as lanes, a lone unit per row (64 lanes for k = 7 * 32)
GEMV_SHAPES = [(32, 8, 1, 2), (16, 1, 3, 2), (64, 2, 4, 2), (8, 4, 8, 1)]


GEMV_CASES = [pytest.param(w, f, *shape, id=f"{w}-{fusion_id(f)}-{'-'.join(map(str, shape))}")
              for w, f in TYPE_FUSIONS for shape in (GEMV_SHAPES if w in ALL_FUSION_TYPES or not f else GEMV_SHAPES[:1])]


@pytest.mark.parametrize("wtype,fusion,lanes,chunk,rows,upi", GEMV_CASES)
def test_matmul_row(run, rng, wtype, fusion, lanes, chunk, rows, upi):
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(rng, wtype, 1, fusion)
    o0 = 5
    res = rng.standard_normal(o0 + n + 3).astype(np.float32)
    constants = {"TPR": lanes, "GPT": chunk, "ROWS": rows, "UPI": upi, "WG": GEMV_WG, **fusion}
    spec = KernelSpec("matmul_row", wtype, constants=tuple(sorted(constants.items())))
    y = f32(run(spec, [buf, x[0], Out((o0 + n + 3) * 4), res, g],
                {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "w0": lead, "eps": 1e-5, "y_stride": 0},
                gemv_groups(n, lanes, rows))[0])
    assert np.isnan(y[:o0]).all() and np.isnan(y[o0 + n:]).all()
    assert rel_l2(y[o0:o0 + n], want[0] + (res[o0:o0 + n] if fusion.get("RES") else 0)) < 1e-5


# Q8 (8-bit activations): the types whose steps have an integer path with every fusion, and one generic-step type
# and IQ4_XS, IQ2_XXS and TQ1_0 (whose steps read the 8-bit copy through xg) fully fused; x quantized 256 values at a time (XQ), so rows of
# 3 * awkward_k weights take several chunks, the last one short for 32-weight blocks.
Q8_INT_TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
Q8_CASES = [pytest.param(w, f, *shape, id=f"{w}-{fusion_id(f)}-{'-'.join(map(str, shape))}")
            for w in Q8_INT_TYPES + ("Q5_0", "IQ4_XS", "IQ2_XXS", "TQ1_0")
            for f in (FUSIONS if w in Q8_INT_TYPES else FUSIONS[3:4])
            for shape in (GEMV_SHAPES[:3] if w in Q8_INT_TYPES and not f else GEMV_SHAPES[:1])]


@pytest.mark.parametrize("wtype,fusion,lanes,chunk,rows,upi", Q8_CASES)
def test_matmul_row_q8(run, rng, wtype, fusion, lanes, chunk, rows, upi):
    seed = int(rng.integers(1 << 31))
    fusion = {**fusion, "Q8": True}
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(np.random.default_rng(seed), wtype, 1, fusion,
                                                               k=3 * awkward_k(wtype))
    f32_want = fused_matmul_case(np.random.default_rng(seed), wtype, 1, {**fusion, "Q8": False}, k=k,
                                  clear_ties=True)[3]
    o0 = 5
    res = rng.standard_normal(o0 + n + 3).astype(np.float32)
    constants = {"TPR": lanes, "GPT": chunk, "ROWS": rows, "UPI": upi, "WG": GEMV_WG, "XQ": 256, **fusion}
    spec = KernelSpec("matmul_row", wtype, constants=tuple(sorted(constants.items())))
    y = f32(run(spec, [buf, x[0], Out((o0 + n + 3) * 4), res, g],
                {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "w0": lead, "eps": 1e-5, "y_stride": 0},
                gemv_groups(n, lanes, rows))[0])
    assert np.isnan(y[:o0]).all() and np.isnan(y[o0 + n:]).all()
    r = res[o0:o0 + n] if fusion.get("RES") else 0
    assert rel_l2(y[o0:o0 + n], want[0] + r) < 1e-5
    assert rel_l2(y[o0:o0 + n], f32_want[0] + r) > 1e-4   # x did go through 8 bits


def test_gemv_step_units_come_from_the_wgsl():
    # the plan sizes lanes by the units of a type's own step, which each step declares (UNIT)
    from mdst.kernels import TYPE_STEPS, wgsl_const
    from mdst.compile.plan import GEMV_MAX_ROWS, GEMV_UNIT

    assert set(GEMV_UNIT) == set(TYPE_STEPS["matmul_row"])
    assert GEMV_UNIT["Q8_0"] == 16 and GEMV_UNIT["Q4_K"] == 32
    assert all(GEMV_UNIT[t] == wgsl_const(f"quant/{t}.matmul_row.wgsl", "UNIT") for t in GEMV_UNIT)
    assert GEMV_MAX_ROWS == wgsl_const("matmul_row.wgsl", "MAX_ROWS") == 8


# Q8 on CPU adapters: the same f32 code for every type; the plain and the fully fused case of a few types
BY_OUTPUT_CASES = TYPE_FUSIONS + [(w, {**f, "Q8": True}) for w in ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K") for f in FUSIONS]


@pytest.mark.parametrize("wtype,fusion", BY_OUTPUT_CASES, ids=lambda v: v if isinstance(v, str) else fusion_id(v))
@pytest.mark.parametrize("R,m", [(1, 1), (8, 45)])
def test_matmul_by_output(run, rng, wtype, R, m, fusion):
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(rng, wtype, m, fusion)
    o0, stride = 3, 87
    res = rng.standard_normal((m, stride)).astype(np.float32)
    spec = KernelSpec("matmul_by_output", wtype, constants=tuple(sorted({"R": R, **fusion}.items())))
    y = f32(run(spec, [buf, x, Out(m * stride * 4), res, g],
                {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "m": m, "y_stride": stride, "w0": lead,
                 "eps": 1e-5}, (-(-n // 256), -(-m // R), 1))[0]).reshape(m, stride)
    assert np.isnan(y[:, :o0]).all() and np.isnan(y[:, o0 + n:]).all()
    assert rel_l2(y[:, o0:o0 + n], want + (res[:, o0:o0 + n] if fusion.get("RES") else 0)) < 1e-5


# (rows, outputs) a thread: the 64 x 64 tile for every type, plain and with the residual; the larger tiles for
# a float, a small-block and a K-quant type, over more rows and outputs than one tile of theirs holds; the short
# grids (4 x 64 and 8 x 32 threads: 16 x 256 and 32 x 128 tiles) over more than one tile's rows and outputs; the
# f16 variant (f16 products and step sums) within 1e-2 of the reference
GEMM_CASES = [(w, res_, 4, 4, 16, 75, 77, False) for w in WEIGHT_TYPES for res_ in (False, True)] + \
    [(w, True, tr, tc, 16, 150, 141, False) for w in ("F32", "Q8_0", "Q4_K") for tr, tc in ((8, 8), (8, 4), (4, 8))] + \
    [(w, True, 4, 4, ty, m, 301, False) for w in ("F32", "Q6_K", "Q4_K") for ty, m in ((4, 19), (8, 37))] + \
    [(w, True, tr, tc, 16, 150, 141, True) for w in ("F16", "Q4_K") for tr, tc in ((4, 4), (8, 8))] + \
    [("Q4_K", True, 4, 4, 4, 19, 301, True)]


@pytest.mark.parametrize("wtype,res_,tr,tc,ty,m,n,f16", GEMM_CASES)
def test_matmul_rows(run, rng, gpu, wtype, res_, tr, tc, ty, m, n, f16):
    if f16 and not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(rng, wtype, m, {}, n)
    o0, stride = 3, n + 10
    res = rng.standard_normal((m, stride)).astype(np.float32)
    consts = (("RES", res_), ("STEP_SUMS", f16), ("TC", tc), ("TR", tr), ("TY", ty))
    spec = KernelSpec("matmul_rows", wtype, f16, constants=consts)
    y = f32(run(spec, [buf, x, Out(m * stride * 4), res],
                {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "m": m, "y_stride": stride, "w0": lead},
                gemm_groups(n, m, tr, tc, ty))[0]).reshape(m, stride)
    assert np.isnan(y[:, :o0]).all() and np.isnan(y[:, o0 + n:]).all()
    err = rel_l2(y[:, o0:o0 + n], want + (res[:, o0:o0 + n] if res_ else 0))
    assert err < (1e-2 if f16 else 1e-5)
    assert not f16 or err > 1e-6, "the f16 variant computed in f32"


# Slices of k (the grid's z): each slice's partial sums into its own [m, n] of the scratch, which sum_splits adds
# with the residual; more slices than k has whole steps for leave the last ones empty (zeros); the f16 variant,
# and short tiles
@pytest.mark.parametrize("wtype,slices,ty,f16", [("Q4_K", 3, 16, False), ("F32", 5, 4, False), ("Q6_K", 2, 8, True),
                                                ("Q8_0", 4, 16, False), ("Q4_0", 40, 4, False)])
def test_matmul_rows_slices_of_k_summed(run, rng, gpu, wtype, slices, ty, f16):
    if f16 and not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    m = 13
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(rng, wtype, m, {}, 259)
    consts = (("STEP_SUMS", f16), ("TY", ty))
    gx, gy, _ = gemm_groups(n, m, 4, 4, ty)
    parts = f32(run(KernelSpec("matmul_rows", wtype, f16, constants=consts), [buf, x, Out(slices * m * n * 4), x],
                    {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "m": m, "y_stride": n, "w0": lead},
                    (gx, gy, slices))[0]).reshape(slices, m, n)
    step = 2048 // max(4 * ty, 4 * 256 // ty)   # the tile's TK; a slice takes whole steps
    per_slice = -(-k // (slices * step)) * step
    assert [bool(np.any(s != 0)) for s in parts] == [z * per_slice < k for z in range(slices)]
    assert rel_l2(parts.sum(axis=0), want) < (1e-2 if f16 else 1e-5)
    o0, stride = 3, n + 10
    res = rng.standard_normal((m, stride)).astype(np.float32)
    y = f32(run(KernelSpec("sum_splits", constants=(("RES", True),)), [parts, res, Out(m * stride * 4)],
                {"n": n, "m": m, "splits": slices, "o0": o0, "y_stride": stride}, (-(-m * n // 64), 1, 1))[0])
    y = y.reshape(m, stride)
    assert np.isnan(y[:, :o0]).all() and np.isnan(y[:, o0 + n:]).all()
    np.testing.assert_allclose(y[:, o0:o0 + n], parts.sum(axis=0) + res[:, o0:o0 + n], rtol=1e-6, atol=1e-6)


# x's 8-bit round trip written out (what the GEMM tile multiplies with activations="q8"): 32-value blocks of
# rows whose count does not fill the last workgroup, an all-zero block (d = 0) and a block of one nonzero
def test_q8_round(run, rng):
    rows, k = 7, 224
    x = rng.standard_normal((rows, k)).astype(np.float32) * np.float32(3)
    x[2, 32:64] = 0
    x[4, 64:96] = 0
    x[4, 70] = -1.5
    x = clear_of_q8_ties(x, lambda v: v)
    y = f32(run(KernelSpec("q8_round"), [x, Out(x.nbytes)], {"blocks": rows * k // 32},
                (-(-rows * k // 32 // 64), 1, 1))[0]).reshape(rows, k)
    want = reference.q8_round_trip(x)
    assert not np.array_equal(want, x) and not np.isnan(y).any()
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)
    assert (y[2, 32:64] == 0).all() and y[4, 70] == np.float32(-1.5)


# Rows of x (batched decode; awkward: 3, 5, 13 and the largest, 16, at 128 threads a workgroup), each weight
# type with the residual at 5 rows, the block-quantized ones with 8-bit activations at 3, and lanes a row from
# fewer than the rows (the plan widens them to a thread per row's store) to 64; and groups of 2 or 4 weight
# rows (tiles of 6 .. 16 sums; the plan halves 4 rows to 2 at 5 rows of x)
ROWS_OF_X_CASES = [(w, 5, True, False, 32, 1) for w in WEIGHT_TYPES] + \
    [(w, 3, True, True, 32, 1) for w in WEIGHT_TYPES if GGML_TYPE_BY_NAME[w].block > 1] + \
    [(w, m, False, q8, lanes, 1) for w in ("F32", "Q5_0", "Q4_K") for m, lanes in ((2, 64), (13, 4), (16, 32))
     for q8 in (False, True) if not q8 or w != "F32"] + \
    [(w, m, res_, q8, 4, rows) for w in ("F32", "Q4_K", "Q6_K", "Q8_0", "IQ2_S") for m, rows, res_, q8 in
     ((3, 4, True, False), (5, 4, False, False), (4, 4, False, w != "F32"), (7, 2, True, False))]


@pytest.mark.parametrize("wtype,m,res_,q8,lanes,rows", ROWS_OF_X_CASES)
def test_matmul_row_rows_of_x(run, rng, wtype, m, res_, q8, lanes, rows):
    buf, x, g, want, k, n, row_bytes, lead = fused_matmul_case(rng, wtype, m, {"Q8": q8}, 77,
                                                               k=3 * awkward_k(wtype) if q8 else None)
    o0, stride = 3, n + 10
    res = rng.standard_normal((m, stride)).astype(np.float32)
    launch = gemv_launch(m, lanes, q8, rows)
    constants = {**launch, "RES": res_, "GPT": 4, **({"Q8": True} if q8 else {})}
    spec = KernelSpec("matmul_row", wtype, constants=tuple(sorted(constants.items())))
    y = f32(run(spec, [buf, x, Out(m * stride * 4), res, g],
                {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "w0": lead, "eps": 0.0, "y_stride": stride},
                gemv_groups(n, launch["TPR"], launch["ROWS"], launch["WG"]))[0]).reshape(m, stride)
    assert np.isnan(y[:, :o0]).all() and np.isnan(y[:, o0 + n:]).all()
    assert rel_l2(y[:, o0:o0 + n], want + (res[:, o0:o0 + n] if res_ else 0)) < 1e-5


@pytest.mark.parametrize("add,dim,wg", [(False, 333, 64), (True, 333, 64), (False, 1333, 256)])
def test_rms_norm(run, rng, add, dim, wg):
    n_vec = 7
    x = (rng.standard_normal((n_vec, dim)) * 3).astype(np.float32)
    w = rng.standard_normal(dim).astype(np.float32)
    a = rng.standard_normal((n_vec, dim)).astype(np.float32)
    out = f32(run(KernelSpec("rms_norm", constants=(("ADD", add), ("WG", wg))), [x, w, Out(x.nbytes), a],
                  {"dim": dim, "n_vec": n_vec, "eps": 1e-6}, (n_vec, 1, 1))[0]).reshape(n_vec, dim)
    assert rel_l2(out, reference.rms_norm(x, w, 1e-6) + (a if add else 0)) < 1e-6


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("yarn", [False, True])
def test_rope(run, rng, neox, yarn):
    heads, hd, n_rot, rows, pos0 = 3, 40, 32, 5, 1000
    spec = RopeSpec(n_rot, 10000.0, neox, freq_scale=0.25 if yarn else 1.0, ext_factor=1.0 if yarn else 0.0,
                    n_ctx_orig=64)
    freq, mscale = spec.table()
    x = rng.standard_normal((rows, heads * hd)).astype(np.float32)
    out = f32(run(KernelSpec("rope"), [step_words(pos0, rows), freq, Out(x.nbytes, init=x)],
                  {"heads": heads, "head_dim": hd, "n_rot": n_rot, "neox": int(neox), "mscale": mscale},
                  (-(-heads * n_rot // 2 // 64), rows, 1))[0]).reshape(rows, -1)
    want = reference.rope(x, pos0 + np.arange(rows), freq, mscale, hd, n_rot, neox)
    assert rel_l2(out, want) < 1e-5
    np.testing.assert_array_equal(out.reshape(rows, heads, hd)[..., n_rot:], x.reshape(rows, heads, hd)[..., n_rot:])


KV_SPECS = {"f32": ("F", False), "f16": ("F", True), "q8_0": ("Q8_0", False)}


def kv_spec(name: str, kv_type: str, gpu) -> KernelSpec:
    if kv_type == "f16" and not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    fmt, f16 = KV_SPECS[kv_type]
    return KernelSpec(name, f16=f16, kv=fmt)


@pytest.mark.parametrize("kv_type", list(KV_SPECS))
def test_kv_store_wraps_and_skips_padding(run, rng, gpu, kv_type):
    kv_dim, ring, rows, n_rows = 96, 11, 6, 5
    pos0 = 2 * ring - 2  # wraps around the ring
    k = rng.standard_normal((rows, kv_dim)).astype(np.float32)
    v = rng.standard_normal((rows, kv_dim)).astype(np.float32)
    row_bytes = kv_row_bytes(kv_dim, kv_type)
    kvb = 32 if kv_type == "q8_0" else 4
    kc, vc = run(kv_spec("kv_store", kv_type, gpu),
                 [step_words(pos0, n_rows, rows=rows), Out(ring * row_bytes), Out(ring * row_bytes), k, v],
                 {"kv_dim": kv_dim, "ring": ring, "stride": ring}, (-(-kv_dim // kvb // 64), rows, 1))
    written = {(pos0 + r) % ring: r for r in range(n_rows)}
    for got, src in ((kc, k), (vc, v)):
        got = got.reshape(ring, row_bytes)
        for slot in range(ring):
            if slot in written:
                want = encode_rows(src[written[slot]:written[slot] + 1], kv_type)[0]
                if kv_type == "q8_0":  # GPU division may round a value at exactly .5 the other way
                    assert np.abs(decode_rows(got[slot], kv_dim, kv_type) - decode_rows(want, kv_dim, kv_type)).max() \
                        <= np.abs(src[written[slot]]).max() / 127 * 1.01
                else:
                    np.testing.assert_array_equal(got[slot], want)
            else:
                assert (got[slot] == 0xFF).all(), "an unwritten slot changed"


def attention_spec(kv_type: str, gpu, heads: int, kvh: int, hd: int, lpk: int, split: int = 0) -> KernelSpec:
    """The attention kernel as the plan specializes it: `lpk` lanes a key, the query heads a workgroup takes."""
    gw = attention_group(heads, kvh, hd, lpk)
    consts = (("GW", gw), ("HD", hd), ("LPK", lpk), ("SPLIT", split), ("WG", ATTN_WG))
    return dataclasses.replace(kv_spec("attention", kv_type, gpu), constants=consts)


def run_merge(run, step, part, heads: int, hd: int, splits: int, out_bytes: int, rows: int = 1,
              dq: int | None = None) -> np.ndarray:
    """The split attention's merge of `part` into a fresh (poisoned) output, launched as the plans launch it
    (plan.merge_launch), or over `dq` workgroups a head."""
    consts, grid = merge_launch(heads, hd, rows)
    if dq is not None:
        consts, grid = {**consts, "DQ": dq}, (heads, rows, dq)
    return f32(run(KernelSpec("attention_merge", constants=tuple(sorted(consts.items()))), [step, part, Out(out_bytes)],
                   {"heads": heads, "splits": splits}, grid)[0])


@pytest.mark.parametrize("window,softcap,temp,kv_type,lpk,hd,heads,kvh", [
    (0, 0.0, 0.0, "f32", 1, 96, 6, 2), (9, 0.0, 0.0, "f32", 1, 96, 6, 2), (0, 30.0, 0.0, "f32", 1, 96, 6, 2),
    (0, 0.0, 0.3, "f32", 1, 96, 6, 2), (9, 0.0, 0.0, "f16", 1, 96, 6, 2), (0, 0.0, 0.0, "q8_0", 1, 96, 6, 2),
    (9, 30.0, 0.3, "f32", 8, 96, 6, 2), (0, 0.0, 0.0, "q8_0", 2, 96, 6, 2),
    (0, 0.0, 0.0, "f32", 4, 300, 6, 2),   # fewer heads a workgroup than the group (memory), some lanes idle
    (0, 0.0, 0.0, "f16", 4, 64, 16, 2),   # eight heads a workgroup
    (9, 0.0, 0.0, "f32", 16, 36, 5, 5)])  # no grouping
def test_attention(run, rng, gpu, window, softcap, temp, kv_type, lpk, hd, heads, kvh):
    rows, n_rows, pos0 = 5, 4, 130
    spec_k = attention_spec(kv_type, gpu, heads, kvh, hd, lpk)
    ring = 137 if not window else window + rows - 1
    spec = AttentionSpec(0, heads, kvh, hd, 1 / np.sqrt(hd), window, softcap, temp_scale=temp, temp_floor=32)
    kc = encode_rows(rng.standard_normal((ring, kvh * hd)) * 2, kv_type)
    vc = encode_rows(rng.standard_normal((ring, kvh * hd)), kv_type)
    q = (rng.standard_normal((rows, heads * hd)) * 2).astype(np.float32)
    out = f32(run(spec_k, [step_words(pos0, n_rows, rows=rows), kc, vc, q, Out(q.nbytes), q, q, q],
                  {"heads": heads, "kv_heads": kvh, "ring": ring, "window": window, "scale": spec.scale,
                   "softcap": softcap, "temp_scale": temp, "temp_floor": 32, "stride": ring, **ATTN_NO_ROPE},
                  (heads // dict(spec_k.constants)["GW"], rows, 1))[0]).reshape(rows, -1)
    want = reference.attention(q[:n_rows], decode_rows(kc, kvh * hd, kv_type), decode_rows(vc, kvh * hd, kv_type),
                               pos0 + np.arange(n_rows), spec)
    assert rel_l2(out[:n_rows], want) < 1e-5
    assert np.isnan(out[n_rows:]).all(), "a padding row was written"


@pytest.mark.parametrize("window,softcap,temp,kv_type,hd,heads,kvh,pos0", [
    (0, 0.0, 0.0, "f32", 96, 6, 2, 0), (11, 0.0, 0.0, "f32", 96, 6, 2, 30), (0, 30.0, 0.3, "f32", 96, 6, 2, 5),
    (0, 0.0, 0.0, "f16", 64, 16, 2, 3), (11, 0.0, 0.0, "q8_0", 96, 6, 2, 20),
    (0, 0.0, 0.0, "f32", 300, 6, 2, 1),   # three keys a tile, some dims' threads idle
    (5, 0.0, 0.0, "f16", 256, 9, 3, 2),   # Gemma-like: window, eight query vectors a workgroup
    (0, 0.0, 0.0, "f32", 36, 5, 5, 9),    # no grouping, small heads
    (7, 0.0, 0.2, "f16", 128, 8, 2, 4)])  # on a workgroup of 64 threads below
def test_attention_rows(run, rng, gpu, window, softcap, temp, kv_type, hd, heads, kvh, pos0):
    """Prefill's flash attention: blocks of rows over KV tiles, against the reference at rows that fill no block."""
    rows, n_rows = 37, 35
    wg = 64 if hd == 128 else ATTN_WG
    gw, br, bc = flash_tiles(heads, kvh, hd, wg)
    spec_k = dataclasses.replace(kv_spec("attention_rows", kv_type, gpu),
                                 constants=(("BC", bc), ("BR", br), ("GW", gw), ("HD", hd), ("WG", wg)))
    ring = window + rows - 1 if window else pos0 + rows + 3
    spec = AttentionSpec(0, heads, kvh, hd, 1 / np.sqrt(hd), window, softcap, temp_scale=temp, temp_floor=4)
    kc = encode_rows(rng.standard_normal((ring, kvh * hd)) * 2, kv_type)
    vc = encode_rows(rng.standard_normal((ring, kvh * hd)), kv_type)
    q = (rng.standard_normal((rows, heads * hd)) * 2).astype(np.float32)
    out = f32(run(spec_k, [step_words(pos0, n_rows, rows=rows), kc, vc, q, Out(q.nbytes)],
                  {"heads": heads, "kv_heads": kvh, "ring": ring, "window": window,
                   "scale": spec.scale, "softcap": softcap, "temp_scale": temp, "temp_floor": 4},
                  (heads // gw, -(-rows // br), 1))[0]).reshape(rows, -1)
    want = reference.attention(q[:n_rows], decode_rows(kc, kvh * hd, kv_type), decode_rows(vc, kvh * hd, kv_type),
                               pos0 + np.arange(n_rows), spec)
    assert rel_l2(out[:n_rows], want) < 1e-5
    assert np.isnan(out[n_rows:]).all(), "a padding row was written"


def test_flash_tiles_fit_workgroup_memory():
    """attention_rows' blocks: query vectors and keys a tile within its memory, heads dividing the group."""
    assert flash_tiles(32, 8, 128) == (4, 8, 16)   # Qwen3 8B: 32 query vectors of 4 threads, 16 keys a tile
    assert flash_tiles(4, 1, 256) == (4, 4, 8)     # Gemma 3 270M: 16 query vectors of 256, 8 threads each
    assert flash_tiles(9, 3, 64) == (3, 21, 16)    # SmolLM2 135M: 63 of 64 query vectors used
    assert flash_tiles(6, 2, 300) == (3, 4, 6)     # 10 threads a vector, the last with 3 of its 8 fours
    assert flash_tiles(16, 8, 128, 64) == (2, 8, 16)  # Qwen3 0.6B on 64 threads: 16 query vectors
    with pytest.raises(ValueError, match="head_dim 516"):
        flash_tiles(4, 1, 516)


def test_attention_group_fits_workgroup_memory():
    """The plan's choice of query heads a workgroup: a divisor of the group within the kernel's memory limits."""
    assert attention_group(32, 8, 128, 4) == 4
    assert attention_group(64, 4, 128, 4) == 8     # a group of 16: two workgroups a KV head
    assert attention_group(6, 2, 300, 4) == 3      # 900 query values fit
    assert attention_group(8, 1, 256, 1) == 4      # one lane a key: a tile of 128 scores a head
    assert attention_group(12, 1, 512, 4) == 2
    with pytest.raises(ValueError, match="head_dim 516"):
        attention_group(4, 1, 516, 4)


@pytest.mark.parametrize("norms,neox,kv_type", [(False, False, "f32"), (True, True, "f32"), (True, False, "q8_0")])
def test_rope_store(run, rng, gpu, norms, neox, kv_type):
    """q/k norms + RoPE + the cache append in one dispatch equals the separate reference ops."""
    heads, kvh, hd, n_rot, rows, n_rows, pos0, ring = 6, 2, 96, 64, 3, 2, 40, 45
    spec = RopeSpec(n_rot, 10000.0, neox)
    freq, mscale = spec.table()
    q = rng.standard_normal((rows, heads * hd)).astype(np.float32)
    k = rng.standard_normal((rows, kvh * hd)).astype(np.float32)
    v = rng.standard_normal((rows, kvh * hd)).astype(np.float32)
    qw, kw = rng.standard_normal(hd).astype(np.float32), rng.standard_normal(hd).astype(np.float32)
    row_bytes = kv_row_bytes(kvh * hd, kv_type)
    kc0 = np.full((ring, row_bytes), 0xFF, np.uint8)
    fmt, f16 = KV_SPECS[kv_type]
    kc, vc, qo = run(KernelSpec("rope_store", f16=f16, kv=fmt),
                     [step_words(pos0, n_rows, rows=rows), Out(kc0.nbytes, init=kc0), Out(kc0.nbytes, init=kc0),
                      q, k, v, Out(q.nbytes), np.concatenate([freq, qw, kw])],
                     {"heads": heads, "kv_heads": kvh, "head_dim": hd, "n_rot": n_rot, "neox": int(neox),
                      "mscale": mscale, "ring": ring, "eps": 1e-6, "q_norm": int(norms), "k_norm": int(norms),
                      "stride": ring},
                     (heads + kvh, rows, 1))
    positions = pos0 + np.arange(rows)
    qn = reference.rms_norm(q, qw, 1e-6, hd) if norms else q
    kn = reference.rms_norm(k, kw, 1e-6, hd) if norms else k
    assert rel_l2(f32(qo).reshape(rows, -1), reference.rope(qn, positions, freq, mscale, hd, n_rot, neox)) < 1e-5
    want_k = reference.rope(kn, positions, freq, mscale, hd, n_rot, neox)
    kc, vc = kc.reshape(ring, row_bytes), vc.reshape(ring, row_bytes)
    for r in range(rows):
        slot = (pos0 + r) % ring
        if r < n_rows:
            tol = 1e-5 if kv_type == "f32" else 2e-2
            assert rel_l2(decode_rows(kc[slot], kvh * hd, kv_type)[0], want_k[r]) < tol
            assert rel_l2(decode_rows(vc[slot], kvh * hd, kv_type)[0], v[r]) < tol
        else:
            assert (kc[slot] == 0xFF).all() and (vc[slot] == 0xFF).all(), "a padding row was stored"


@pytest.mark.parametrize("pos0", [0, 7])
def test_shortconv(run, rng, pos0):
    ch, kernel, rows, n_rows = 77, 3, 6, 5
    spec = ConvSpec(0, ch, kernel)
    bcx = rng.standard_normal((rows, 3 * ch)).astype(np.float32)
    w = rng.standard_normal((ch, kernel)).astype(np.float32)
    state = rng.standard_normal((kernel - 1, ch)).astype(np.float32)
    new_state, y = run(KernelSpec("shortconv"), [step_words(pos0, n_rows, rows=rows), bcx, w,
                                                 Out(state.nbytes, init=state), Out(rows * ch * 4)],
                       {"channels": ch, "kernel": kernel}, (2, 1, 1))
    want_y, want_state = reference.shortconv(bcx[:n_rows], w, state, pos0, spec)
    y = f32(y).reshape(rows, ch)
    assert rel_l2(y[:n_rows], want_y) < 1e-6
    assert np.isnan(y[n_rows:]).all(), "a padding row was written"
    np.testing.assert_allclose(f32(new_state).reshape(kernel - 1, ch), want_state, rtol=1e-6)


@pytest.mark.parametrize("window,kv_type,lpk,hd", [(0, "f32", 1, 96), (9, "f32", 1, 96), (0, "q8_0", 1, 96),
                                                   (0, "f32", 4, 96), (9, "q8_0", 16, 96), (0, "f32", 4, 288)])
def test_attention_split_and_merge(run, rng, gpu, window, kv_type, lpk, hd):
    """One-row attention in splits of 16 keys (some empty) merged, as decode runs on GPUs; `lpk` lanes a key."""
    heads, kvh, rows, n_rows, pos0, split = 6, 2, 2, 1, 100, 16
    ring = 137 if not window else window + rows - 1
    splits = -(-ring // split) + 2  # more than needed: the extra ones are empty
    spec = AttentionSpec(0, heads, kvh, hd, 1 / np.sqrt(hd), window, 0.0)
    kc = encode_rows(rng.standard_normal((ring, kvh * hd)) * 2, kv_type)
    vc = encode_rows(rng.standard_normal((ring, kvh * hd)), kv_type)
    q = (rng.standard_normal((rows, heads * hd)) * 2).astype(np.float32)
    params = {"heads": heads, "kv_heads": kvh, "ring": ring, "window": window, "scale": spec.scale, "softcap": 0.0,
              "temp_scale": 0.0, "temp_floor": 1, "stride": ring, **ATTN_NO_ROPE}
    spec_k = attention_spec(kv_type, gpu, heads, kvh, hd, lpk, split)
    part = run(spec_k, [step_words(pos0, n_rows, rows=rows), kc, vc, q, Out(rows * heads * splits * (hd + 2) * 4),
                        q, q, q], params, (heads // dict(spec_k.constants)["GW"], rows, splits))[0]
    out = run_merge(run, step_words(pos0, n_rows, rows=rows), part, heads, hd, splits, q.nbytes, rows).reshape(rows, -1)
    want = reference.attention(q[:n_rows], decode_rows(kc, kvh * hd, kv_type), decode_rows(vc, kvh * hd, kv_type),
                               pos0 + np.arange(n_rows), spec)
    assert rel_l2(out[:n_rows], want) < 1e-5
    assert np.isnan(out[n_rows:]).all()


POOL_TABLE = [(57, 2), (3, 0), (130, 3)]   # a batched step's rows: (position, pool slot); a padding row follows


def pool_spec(spec: KernelSpec, **more: Any) -> KernelSpec:
    """`spec` as a batched plan compiles it: POOL, and `more` constants."""
    return dataclasses.replace(spec, constants=tuple(sorted(spec.constants + (("POOL", True),)
                                                                + tuple(more.items()))))


@pytest.mark.parametrize("kv_type", ["f32", "q8_0"])
def test_kv_store_into_a_pool(run, rng, gpu, kv_type):
    """A batched step's rows each stored at their own position in their own slot of the pool (`stride` rows a
    slot, more than the ring); every other row of the pool unwritten."""
    kv_dim, ring, stride, slots, rows = 96, 41, 43, 4, len(POOL_TABLE) + 1
    k, v = (rng.standard_normal((rows, kv_dim)).astype(np.float32) for _ in range(2))
    row_bytes = kv_row_bytes(kv_dim, kv_type)
    kvb = 32 if kv_type == "q8_0" else 4
    kc, vc = run(pool_spec(kv_spec("kv_store", kv_type, gpu)),
                 [step_words(0, rows - 1, rows=rows, table=POOL_TABLE), Out(slots * stride * row_bytes),
                  Out(slots * stride * row_bytes), k, v],
                 {"kv_dim": kv_dim, "ring": ring, "stride": stride}, (-(-kv_dim // kvb // 64), rows, 1))
    written = {slot * stride + pos % ring: r for r, (pos, slot) in enumerate(POOL_TABLE)}
    for got, src in ((kc, k), (vc, v)):
        got = got.reshape(slots * stride, row_bytes)
        for row in range(slots * stride):
            if row in written:
                want = decode_rows(encode_rows(src[written[row]:written[row] + 1], kv_type), kv_dim, kv_type)
                assert np.abs(decode_rows(got[row], kv_dim, kv_type) - want).max() <= \
                    (np.abs(src[written[row]]).max() / 127 * 1.01 if kv_type == "q8_0" else 0)
            else:
                assert (got[row] == 0xFF).all(), "a row of the pool no sequence stores changed"


def test_rope_of_a_batched_step(run, rng):
    """RoPE (POOL) rotates each row by its own sequence's position from the step's table."""
    heads, hd, n_rot, rows = 3, 64, 48, len(POOL_TABLE) + 1
    spec = RopeSpec(n_rot, 10000.0, False)
    freq, mscale = spec.table()
    x = rng.standard_normal((rows, heads * hd)).astype(np.float32)
    out = f32(run(pool_spec(KernelSpec("rope")), [step_words(0, rows - 1, rows=rows, table=POOL_TABLE), freq,
                                                  Out(x.nbytes, init=x)],
                  {"heads": heads, "head_dim": hd, "n_rot": n_rot, "neox": 0, "mscale": mscale},
                  (-(-heads * n_rot // 2 // 64), rows, 1))[0]).reshape(rows, -1)
    positions = np.array([pos for pos, _ in POOL_TABLE])
    want = reference.rope(x[:-1], positions, freq, mscale, hd, n_rot, False)
    assert rel_l2(out[:-1], want) < 1e-5


def pool_of(rng, slots: int, stride: int, kv_dim: int, kv_type: str) -> tuple[np.ndarray, np.ndarray]:
    """A pool's K and V: `slots` slots of `stride` random rows, encoded in kv_type."""
    return (encode_rows(rng.standard_normal((slots * stride, kv_dim)) * scale, kv_type) for scale in (2.0, 1.0))


@pytest.mark.parametrize("kv_type,split,rope", [("f32", 0, False), ("q8_0", 16, False), ("f32", 16, True),
                                                 ("f16", 0, True)])
def test_attention_over_a_pool(run, rng, gpu, kv_type, split, rope):
    """A batched step's attention in one dispatch (POOL): each row reads its own sequence's slot of the pool up to
    its own position (in splits merged after, or whole), with ROPE also normalizing, rotating and storing its
    step's key and value there first; against the reference on each row's slot, the padding row unwritten."""
    heads, kvh, hd, ring, stride, slots, n_rot = 6, 2, 96, 137, 139, 4, 64
    rows, n_rows, kv_dim = len(POOL_TABLE) + 1, len(POOL_TABLE), kvh * hd
    spec = AttentionSpec(0, heads, kvh, hd, 1 / np.sqrt(hd), 0, 0.0)
    kc, vc = pool_of(rng, slots, stride, kv_dim, kv_type)
    q = (rng.standard_normal((rows, heads * hd)) * 2).astype(np.float32)
    k, v = (rng.standard_normal((rows, kv_dim)).astype(np.float32) for _ in range(2))
    freq = (10000.0 ** (-np.arange(n_rot // 2) / (n_rot // 2))).astype(np.float32)
    qw, kw = (rng.standard_normal(hd).astype(np.float32) for _ in range(2))
    base = attention_spec(kv_type, gpu, heads, kvh, hd, 4, split)
    spec_k = pool_spec(base, **({"ROPE": True} if rope else {}))
    gw = dict(spec_k.constants)["GW"]
    splits = -(-ring // split) if split else 1
    params = {"heads": heads, "kv_heads": kvh, "ring": ring, "window": 0, "scale": spec.scale, "softcap": 0.0,
              "temp_scale": 0.0, "temp_floor": 1, "stride": stride,
              **({"n_rot": n_rot, "neox": 1, "mscale": 1.0, "eps": 1e-6, "q_norm": 1, "k_norm": 1} if rope
                 else ATTN_NO_ROPE)}
    step = step_words(0, n_rows, rows=rows, table=POOL_TABLE)
    out_bytes = rows * heads * splits * (hd + 2) * 4 if split else q.nbytes
    extra = [k, v, np.concatenate([freq, qw, kw])] if rope else [q, q, q]
    got_k, got_v, out = run(spec_k, [step, Out(kc.nbytes, init=kc), Out(vc.nbytes, init=vc), q, Out(out_bytes),
                                     *extra], params, (heads // gw, rows, splits))
    if split:
        out = run_merge(run, step, out, heads, hd, splits, q.nbytes, rows)
    out = f32(out).reshape(rows, -1)
    kd, vd = decode_rows(kc, kv_dim, kv_type), decode_rows(vc, kv_dim, kv_type)
    for r, (pos, slot) in enumerate(POOL_TABLE):
        at = slot * stride + pos % ring
        qr = q[r:r + 1]
        if rope:
            positions = np.array([pos])
            qr = reference.rope(reference.rms_norm(qr, qw, 1e-6, hd), positions, freq, 1.0, hd, n_rot, True)
            kr = reference.rope(reference.rms_norm(k[r:r + 1], kw, 1e-6, hd), positions, freq, 1.0, hd, n_rot, True)
            kd[at] = decode_rows(encode_rows(kr, kv_type), kv_dim, kv_type)[0]
            vd[at] = decode_rows(encode_rows(v[r:r + 1], kv_type), kv_dim, kv_type)[0]
        cache = slice(slot * stride, slot * stride + ring)
        want = reference.attention(qr, kd[cache], vd[cache], np.array([pos]), spec)
        assert rel_l2(out[r:r + 1], want) < (1e-5 if kv_type == "f32" or not rope else 2e-3), f"row {r}"
    assert np.isnan(out[n_rows:]).all(), "the padding row was written"
    if rope:   # only the rows' own slots changed
        stored = {slot * stride + pos % ring for pos, slot in POOL_TABLE}
        others = np.array([i not in stored for i in range(slots * stride)])
        np.testing.assert_array_equal(got_k.reshape(kc.shape)[others], kc[others])
        np.testing.assert_array_equal(got_v.reshape(vc.shape)[others], vc[others])


def test_rope_store_into_a_pool(run, rng):
    """rope_store (POOL): each row rotated at its own position and its key and value stored in its own slot."""
    heads, kvh, hd, n_rot, ring, stride, slots = 6, 2, 96, 64, 137, 140, 4
    rows, n_rows = len(POOL_TABLE) + 1, len(POOL_TABLE)
    spec = RopeSpec(n_rot, 10000.0, True)
    freq, mscale = spec.table()
    q = rng.standard_normal((rows, heads * hd)).astype(np.float32)
    k, v = (rng.standard_normal((rows, kvh * hd)).astype(np.float32) for _ in range(2))
    kc0 = np.full((slots * stride, kvh * hd), np.nan, np.float32)
    kc, vc, qo = run(pool_spec(KernelSpec("rope_store", kv="F")),
                     [step_words(0, n_rows, rows=rows, table=POOL_TABLE), Out(kc0.nbytes, init=kc0),
                      Out(kc0.nbytes, init=kc0), q, k, v, Out(q.nbytes), freq],
                     {"heads": heads, "kv_heads": kvh, "head_dim": hd, "n_rot": n_rot, "neox": 1, "mscale": mscale,
                      "ring": ring, "eps": 1e-6, "q_norm": 0, "k_norm": 0, "stride": stride},
                     (heads + kvh, rows, 1))
    positions = np.array([pos for pos, _ in POOL_TABLE])
    qo = f32(qo).reshape(rows, -1)
    assert rel_l2(qo[:n_rows], reference.rope(q[:n_rows], positions, freq, mscale, hd, n_rot, True)) < 1e-5
    want_k = reference.rope(k[:n_rows], positions, freq, mscale, hd, n_rot, True)
    kc, vc = f32(kc).reshape(kc0.shape), f32(vc).reshape(kc0.shape)
    at = [slot * stride + pos % ring for pos, slot in POOL_TABLE]
    assert rel_l2(kc[at], want_k) < 1e-5
    np.testing.assert_array_equal(vc[at], v[:n_rows])
    others = np.ones(len(kc), bool)
    others[at] = False
    assert np.isnan(kc[others]).all() and np.isnan(vc[others]).all(), "a row no sequence stores was written"


@pytest.mark.parametrize("hd,dq", [(96, 1), (96, 2), (96, 4), (36, None), (40, None), (256, 4)])
def test_attention_merge_parts(run, rng, hd, dq):
    """The merge alone over many splits (an empty one among them, and empty ones past the last filled), a head's
    dims in `dq` workgroups (the plan's choice where None), against the reference."""
    heads, splits = 3, 203
    part = np.zeros((heads, splits, hd + 2), np.float32)
    part[:, :, 0] = rng.standard_normal((heads, splits)) * 3
    part[:, :, 1] = np.abs(rng.standard_normal((heads, splits))) + 0.5
    part[:, :, 2:] = rng.standard_normal((heads, splits, hd))
    for z in (57, *range(190, splits)):   # empty ranges, as the attention kernel writes them
        part[:, z, :] = 0.0
        part[:, z, 0] = -3.0e38
    got = run_merge(run, step_words(10, 1, rows=1), part, heads, hd, splits, heads * hd * 4, dq=dq)
    assert rel_l2(got, reference.merge_partials(part).ravel()) < 1e-5


@pytest.mark.parametrize("kv_type,neox,q_norm,k_norm,split,hd,n_rot", [
    ("f32", 1, 1, 1, 16, 96, 96), ("f16", 0, 1, 0, 16, 96, 64), ("q8_0", 1, 0, 1, 0, 96, 32),
    ("f32", 0, 0, 0, 0, 40, 40), ("f16", 1, 1, 1, 16, 256, 256)])
def test_attention_with_rope(run, rng, gpu, kv_type, neox, q_norm, k_norm, split, hd, n_rot):
    """Decode attention doing rope_store's work (ROPE): the step's query and key normalized and rotated, the key and
    value stored in their slot by the workgroup whose keys end at the row's position, read back with the others;
    against the reference, at activation row 1 of 2 (a batched step's), every other slot untouched."""
    heads, kvh, pos0, ring, row0, eps, mscale = 6, 2, 100, 137, 1, 1e-6, 0.9
    kv_dim = kvh * hd
    spec = AttentionSpec(0, heads, kvh, hd, 1 / np.sqrt(hd), 0, 0.0)
    kc = encode_rows(rng.standard_normal((ring, kv_dim)) * 2, kv_type)
    vc = encode_rows(rng.standard_normal((ring, kv_dim)), kv_type)
    q = (rng.standard_normal((2, heads * hd)) * 2).astype(np.float32)
    k, v = (rng.standard_normal((2, kv_dim)).astype(np.float32) for _ in range(2))
    freq = (10000.0 ** (-np.arange(n_rot // 2) / (n_rot // 2))).astype(np.float32)
    qw, kw = (rng.standard_normal(hd).astype(np.float32) for _ in range(2))
    base = attention_spec(kv_type, gpu, heads, kvh, hd, 4, split)
    spec_k = dataclasses.replace(base, constants=base.constants + (("ROPE", True),))
    gw = dict(spec_k.constants)["GW"]
    assert gw * kvh == heads
    splits = -(-ring // split) if split else 1
    params = {"heads": heads, "kv_heads": kvh, "ring": ring, "window": 0, "scale": spec.scale, "softcap": 0.0,
              "temp_scale": 0.0, "temp_floor": 1, "n_rot": n_rot, "neox": neox, "mscale": mscale, "eps": eps,
              "q_norm": q_norm, "k_norm": k_norm, "stride": ring}
    step = step_words(pos0, 1, rows=1, row0=row0)
    out_bytes = heads * splits * (hd + 2) * 4 if split else q.nbytes
    got_k, got_v, out = run(spec_k, [step, Out(kc.nbytes, init=kc), Out(vc.nbytes, init=vc), q, Out(out_bytes), k, v,
                                     np.concatenate([freq, qw, kw])], params, (heads // gw, 1, splits))
    if split:
        out = run_merge(run, step, out, heads, hd, splits, q.nbytes)
    out = f32(out).reshape(2, -1)

    qn = reference.rms_norm(q[row0:], qw, eps, hd) if q_norm else q[row0:]
    kn = reference.rms_norm(k[row0:], kw, eps, hd) if k_norm else k[row0:]
    pos = np.array([pos0])
    want_k, want_v = kc.copy(), vc.copy()
    slot = pos0 % ring
    want_k[slot] = encode_rows(reference.rope(kn, pos, freq, mscale, hd, n_rot, bool(neox)), kv_type)[0]
    want_v[slot] = encode_rows(v[row0:], kv_type)[0]
    got_k, got_v = got_k.reshape(kc.shape), got_v.reshape(vc.shape)
    others = np.arange(ring) != slot
    np.testing.assert_array_equal(got_k[others], kc[others])
    np.testing.assert_array_equal(got_v[others], vc[others])
    np.testing.assert_array_equal(got_v[slot], want_v[slot])
    stored, exact = (decode_rows(c[slot:slot + 1], kv_dim, kv_type) for c in (got_k, want_k))
    # f16 and q8_0 round the rotated key; a last-bit difference in it may round one step apart
    step_size = {"f32": 1e-5, "f16": 2e-3, "q8_0": 1.01 / 127}[kv_type] * np.abs(exact).max()
    assert np.abs(stored - exact).max() <= step_size
    want = reference.attention(reference.rope(qn, pos, freq, mscale, hd, n_rot, bool(neox)),
                               decode_rows(got_k, kv_dim, kv_type), decode_rows(got_v, kv_dim, kv_type), pos, spec)
    assert rel_l2(out[row0:], want) < 1e-5
    assert np.isnan(out[:row0]).all(), "another row was written"


def test_rope_of_batched_rows(run, rng):
    """Step words with row0: rows row0.. of x rotate at positions pos0..; the rows before stay as they were."""
    heads, hd, n_rot, rows, row0, n, pos0 = 3, 40, 32, 5, 3, 2, 77
    freq, mscale = RopeSpec(n_rot, 10000.0, False).table()
    x = rng.standard_normal((rows, heads * hd)).astype(np.float32)
    out = f32(run(KernelSpec("rope"), [step_words(pos0, n, rows=0, row0=row0), freq, Out(x.nbytes, init=x)],
                  {"heads": heads, "head_dim": hd, "n_rot": n_rot, "neox": 0, "mscale": mscale},
                  (-(-heads * n_rot // 2 // 64), n, 1))[0]).reshape(rows, -1)
    want = reference.rope(x[row0:], pos0 + np.arange(n), freq, mscale, hd, n_rot, False)
    assert rel_l2(out[row0:], want) < 1e-5
    np.testing.assert_array_equal(out[:row0], x[:row0])


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary(run, rng, op):
    n = 1013
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = f32(run(KernelSpec("binary", constants=(("OP", 0 if op == "add" else 1),)), [a, b, Out(4 * n)],
                  {"n": n}, (-(-n // 64), 1, 1))[0])
    np.testing.assert_array_equal(out, a + b if op == "add" else a * b)


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_glu(run, rng, act):
    n = 1013
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    g[:4] = [-200.0, 200.0, -30.0, 30.0]  # saturation must stay finite
    u = rng.standard_normal(n).astype(np.float32)
    out = f32(run(KernelSpec("glu", constants=(("ACT", 1 if act == "silu" else 2),)), [g, u, Out(4 * n)],
                  {"n": n}, (-(-n // 64), 1, 1))[0])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference.glu(g, u, act), rtol=2e-5, atol=1e-5)


def test_take_row(run, rng):
    rows, n_rows, cols = 8, 5, 101
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    out = f32(run(KernelSpec("take_row"), [step_words(0, n_rows, rows=rows), x, Out(cols * 4)], {"cols": cols},
                  (2, 1, 1))[0])
    np.testing.assert_array_equal(out, x[n_rows - 1])


def test_argmax_over_parts_and_slices(run, rng):
    rows, cols = 3, [10000, 777, 64]  # the first part spans three slices
    x = [rng.standard_normal((rows, c)).astype(np.float32) for c in cols]
    x[1][0, 5] = 50.0
    x[2][0, 7] = 50.0   # a tie across parts: the earlier part wins
    x[0][2, 3] = x[0][2, 9000] = 60.0  # a tie across slices of a part: the lower id wins
    full = np.concatenate(x, axis=1)
    slices = [-(-c // 4096) for c in cols]
    best = np.zeros(rows * sum(slices) * 2, np.uint32)
    col0 = first = 0
    for p, xp in enumerate(x):
        best = run(KernelSpec("argmax"), [xp, Out(best.nbytes, init=best)],
                   {"cols": cols[p], "col0": col0, "slice0": first, "slices": sum(slices)},
                   (slices[p], rows, 1))[0].view(np.uint32)
        col0 += cols[p]
        first += slices[p]
    ids = run(KernelSpec("argmax_merge"), [best, Out(rows * 4)], {"slices": sum(slices)},
              (rows, 1, 1))[0].view(np.uint32)
    np.testing.assert_array_equal(ids, reference.argmax(full))

def draw_of(rng, allowed: np.ndarray | None = None, **settings) -> "Draw":
    """A draw with `settings`; constrained to the tokens `allowed` (a bool per token id) if given."""
    from mdst.text.sampling import Draw, SamplingParams
    tokens = settings.pop("tokens", ())
    params = SamplingParams(**{"temperature": 0.8, "top_k": 40, **settings})
    mask = None if allowed is None else np.packbits(allowed, bitorder="little").tobytes()
    if mask is not None:
        mask += bytes(-len(mask) % 4)   # whole u32 words
    return Draw(params, float(np.float32(rng.random())), tuple(tokens), tuple(range(1, len(tokens) + 1)), mask)


def test_penalize(run, rng):
    from mdst.text.sampling import Sampler
    cols, col0 = 3000, 1000
    full = (rng.standard_normal(cols + col0) * 3).astype(np.float32)
    tokens = (5, 999, 1000, 1003, 2500, 3999)  # some before this part
    draw = draw_of(rng, tokens=tokens, repeat_penalty=1.3, presence_penalty=0.2, frequency_penalty=0.1,
                   logit_bias={10: 3.0, 1003: -2.5, 1500: 7.0, 3999: 100})   # biased, some penalized too
    got = f32(run(KernelSpec("penalize"), [np.frombuffer(draw.encode(), np.uint32), Out(cols * 4, init=full[col0:])],
                  {"cols": cols, "col0": col0}, (1, 1, 1))[0])
    np.testing.assert_allclose(got, Sampler.penalize(full, draw)[col0:], rtol=1e-6)


def topk_reference(x: np.ndarray, col0: int, k: int, slice_: int = 2048) -> np.ndarray:
    """Per slice: the k largest (value bits, id) pairs, descending, ties by id; missing places (fewer than k
    values, or -inf: a masked token) marked."""
    out = []
    for s in range(0, len(x), slice_):
        part = x[s:s + slice_]
        order = np.lexsort((np.arange(len(part)), -part))[:k]
        order = order[part[order] > -np.inf]
        pairs = np.full((64, 2), 0xFFFFFFFF, np.uint32)
        pairs[:len(order), 0] = part[order].view(np.uint32)
        pairs[:len(order), 1] = col0 + s + order
        out.append(pairs)
    return np.stack(out)


def test_topk(run, rng):
    cols, col0, k = 5000, 700, 40
    x = rng.standard_normal(cols).astype(np.float32)
    x[[3, 10, 2100]] = 9.0  # ties across the first slice and into the second
    draw = draw_of(rng, top_k=k)
    slices = -(-cols // 2048)
    cand = run(KernelSpec("topk"), [np.frombuffer(draw.encode(), np.uint32), x, Out(slices * 64 * 8)],
               {"cols": cols, "col0": col0, "slice0": 0, "slices": slices}, (slices, 1, 1))[0].view(np.uint32).reshape(slices, 64, 2)
    want = topk_reference(x, col0, k)
    np.testing.assert_array_equal(cand[:, :k], want[:, :k])


@pytest.mark.parametrize("settings", [{}, {"top_k": 5}, {"top_p": 0.5}, {"min_p": 0.2}, {"temperature": 2.5},
                                      {"top_k": 64, "top_p": 0.9, "min_p": 0.05, "temperature": 0.3},
                                      {"temperature": 0.0}])   # greedy through the chain (with a logit bias)
def test_sample_matches_the_host_chain(run, rng, settings):
    from mdst.text.sampling import Sampler
    cols = 3000
    x = (rng.standard_normal(cols) * 2).astype(np.float32)
    hits = 0
    for _ in range(12):
        draw = draw_of(rng, **settings)
        k = draw.top_k
        cand = topk_reference(x, 0, k)
        cand[:, k:] = 0  # places past k hold leftovers: the kernel must not read them
        got = run(KernelSpec("sample"), [np.frombuffer(draw.encode(), np.uint32), cand, Out(16)],
                  {"slices": len(cand)}, (1, 1, 1))[0].view(np.uint32)[0]
        hits += int(got) == Sampler.pick(x, draw)
    assert hits == 12


def test_sampling_chain_over_the_rows_of_a_batched_step(run, rng):
    """penalize, topk and sample over a batched step's rows in one dispatch each: every row its own draw (DRAW_WORDS
    apart) and logits row, a row with an empty draw (it takes the argmax) left as it was; each pick as the host's."""
    from mdst.text.sampling import DRAW_WORDS, Sampler
    rows, cols = 4, 3000
    slices = -(-cols // 2048)
    x = (rng.standard_normal((rows, cols)) * 2).astype(np.float32)
    draws = [draw_of(rng, top_k=40, temperature=0.7, tokens=(5, 17, 2999), repeat_penalty=1.3), None,
             draw_of(rng, top_p=0.8), draw_of(rng, min_p=0.1, tokens=(3,), presence_penalty=0.5)]
    words = np.concatenate([np.frombuffer(d.encode(), np.uint32) if d else np.zeros(DRAW_WORDS, np.uint32)
                            for d in draws])
    y = run(KernelSpec("penalize"), [words, Out(x.nbytes, init=x)], {"cols": cols, "col0": 0},
            (1, rows, 1))[0].view(np.float32).reshape(rows, cols)
    for r, d in enumerate(draws):
        np.testing.assert_allclose(y[r], Sampler.penalize(x[r], d) if d else x[r], rtol=1e-6)
    cand = run(KernelSpec("topk"), [words, y, Out(rows * slices * 64 * 8)],
               {"cols": cols, "col0": 0, "slice0": 0, "slices": slices}, (slices, rows, 1))[0]
    got = run(KernelSpec("sample"), [words, cand.view(np.uint32), Out(16)], {"slices": slices},
              (1, rows, 1))[0].view(np.uint32)
    for r, d in enumerate(draws):
        if d:
            assert int(got[r]) == Sampler.pick(x[r], d), f"row {r}"


def separated_logits(rng, rows: int, n: int) -> np.ndarray:
    """Router logits whose ranking no rounding can change: a permutation of steps of 0.1, centred, per row."""
    return np.stack([(rng.permutation(n) - n / 2) * 0.1 + rng.uniform(0, 0.01, n) for _ in range(rows)]
                    ).astype(np.float32)


@pytest.mark.parametrize("gating,bias,norm,n,k", [("softmax", False, True, 37, 5), ("sigmoid", True, True, 37, 5),
                                                  ("sigmoid", False, False, 37, 5), ("softmax", False, True, 131, 8),
                                                  ("softmax", True, False, 130, 9)])
def test_route(run, rng, gating, bias, norm, n, k):
    """A workgroup a row, its threads sharing the experts out: fewer experts than threads, and more (131)."""
    rows = 13
    logits = separated_logits(rng, rows, n)
    b = (rng.permutation(n) % 3).astype(np.float32) if bias else None   # reorders groups, keeps the gaps
    spec = KernelSpec("route", constants=tuple(sorted({"SIGMOID": gating == "sigmoid", "BIAS": bias}.items())))
    y = f32(run(spec, [logits, b if bias else logits, Out(rows * 2 * k * 4)],
                {"n_expert": n, "k": k, "rows": rows, "norm": int(norm)}, (rows, 1, 1))[0]).reshape(rows, 2 * k)
    want = reference.route(logits, k, gating, norm, b)
    np.testing.assert_array_equal(y[:, k:], want[:, k:])
    np.testing.assert_allclose(y[:, :k], want[:, :k], rtol=2e-6, atol=1e-7)


def test_route_ties_and_padding(run):
    """Equal logits rank by index, as the reference's stable sort; a row of NaNs (a plan's padding rows) still
    names k valid experts."""
    n, k = 70, 6
    logits = np.zeros((3, n), np.float32)
    logits[0, [9, 5, 41, 40]] = 1.0
    logits[1] = np.arange(n) // 10
    logits[2] = np.nan
    y = f32(run(KernelSpec("route", constants=(("BIAS", False), ("SIGMOID", False))), [logits, logits, Out(3 * 2 * k * 4)],
                {"n_expert": n, "k": k, "rows": 3, "norm": 1}, (3, 1, 1))[0]).reshape(3, 2 * k)
    want = reference.route(logits[:2], k, "softmax", True)
    np.testing.assert_array_equal(y[:2, k:], want[:, k:])
    np.testing.assert_allclose(y[:2, :k], want[:, :k], rtol=2e-6, atol=1e-7)
    ids = y[2, k:]
    assert np.all((ids >= 0) & (ids < n) & (ids == np.round(ids)))


EXPERT_TYPES = ["F32", "Q5_0", "Q4_K", "Q6_K"]


@pytest.mark.parametrize("combine", [False, True])
@pytest.mark.parametrize("wtype", EXPERT_TYPES)
def test_matmul_experts_reads_the_chosen_experts_of_its_part(run, rng, wtype, combine):
    """A part holding experts [2, 6) of 6 at weight_lead bytes in: slots routed elsewhere stay unwritten (or,
    combined, add nothing to the previous part's sum, which `acc` adds to)."""
    experts, n_out, used, rows, e0 = 6, 37, 3, 5, 2
    k = awkward_k(wtype)
    raw, w, row_bytes = weight(wtype, experts * n_out, k, rng)
    lead = weight_lead(wtype)
    part = np.concatenate([rng.integers(0, 256, lead, dtype=np.uint8), raw[e0 * n_out * row_bytes:]])
    routes = reference.route(separated_logits(rng, rows, experts), used, "softmax", True)
    x = rng.standard_normal((rows, used * k if combine else k)).astype(np.float32)
    ids = routes[:, used:].astype(int)
    held = ids >= e0
    assert held.any() and not held.all()
    out_cols = n_out if combine else used * n_out
    prev = rng.standard_normal((rows, out_cols)).astype(np.float32)
    spec = KernelSpec("matmul_experts", wtype, constants=(("COMBINE", combine),))
    y = f32(run(spec, [part, x, routes, Out(rows * out_cols * 4, prev if combine else None)],
                {"k": k, "n": n_out, "row_bytes": row_bytes, "w0": lead, "e0": e0, "e1": experts, "used": used,
                 "x_slot": k if combine else 0, "x_stride": x.shape[1], "acc": 1},
                (-(-n_out // 64), rows, 1 if combine else used))[0]).reshape(rows, -1)
    masked = routes.copy()
    masked[:, :used] *= held                     # the slots of other parts' experts count nothing here
    want = reference.expert_matmul(x, masked, w, n_out, combine)
    if combine:
        assert rel_l2(y, want + prev) < 1e-5
    else:
        slots = y.reshape(rows, used, n_out)
        assert np.isnan(slots[~held]).all(), "a slot of another part's expert was written"
        assert rel_l2(slots[held], want.reshape(rows, used, n_out)[held]) < 1e-5


# The expert matmul in the GPU kernels' EXPERTS modes: the generic step (F32, Q5_0) and types with steps of their own
EXPERT_MODE_TYPES = ["F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"]


def gated_experts(x, routes, w, experts: int, n_out: int) -> np.ndarray:
    """act(x through the gate experts) * (x through the up experts), w holding the gates then the ups."""
    gate, up = (reference.expert_matmul(x, routes, m, n_out, False) for m in np.split(w, 2))
    return reference.glu(gate, up, "silu")


@pytest.mark.parametrize("mode", ["slots", "glu", "combine"])
@pytest.mark.parametrize("wtype", EXPERT_MODE_TYPES)
def test_matmul_row_experts(run, rng, wtype, mode):
    """Decode: the GEMV on each slot's expert (the route in the residual's binding), slots in z (gated by the up
    experts stored after all the gates, with GLU) or, combined, summed in the kernel weighted by the router."""
    experts, n_out, used, lanes, rows = 6, 37, 3, 16, 3
    combine, glu = mode == "combine", mode == "glu"
    k = awkward_k(wtype)
    raw, w, row_bytes = weight(wtype, (1 + glu) * experts * n_out, k, rng)
    lead = weight_lead(wtype)
    buf = np.concatenate([rng.integers(0, 256, lead, dtype=np.uint8), raw])
    routes = lopsided_routes(rng, 1, experts, used)
    x = rng.standard_normal((1, used * k if combine else k)).astype(np.float32)
    consts = {"TPR": lanes, "GPT": 4, "ROWS": rows, "WG": GEMV_WG, "EXPERTS": used, "X_SLOT": combine,
              "COMBINE": combine, **({"GLU": 1, "N_EXPERT": experts} if glu else {})}
    out = n_out if combine else used * n_out
    gx, gy, _ = gemv_groups(n_out, lanes, rows)
    y = f32(run(KernelSpec("matmul_row", wtype, constants=tuple(sorted(consts.items()))),
                [buf, x[0], Out((out + 3) * 4), routes[0], x[0]],
                {"k": k, "n": n_out, "row_bytes": row_bytes, "o0": 0, "w0": lead, "eps": 0.0, "y_stride": 0},
                (gx, gy, 1 if combine else used))[0])
    assert np.isnan(y[out:]).all()
    want = gated_experts(x, routes, w, experts, n_out) if glu else reference.expert_matmul(x, routes, w, n_out, combine)
    assert rel_l2(y[:out], want[0]) < 1e-5


@pytest.mark.parametrize("wtype", ["Q5_0", "Q4_K"])
def test_matmul_experts_gated(run, rng, wtype):
    """CPU adapters' decode: an invocation per output computes the gate and the up experts' dots (ups after
    all the gates)."""
    experts, n_out, used, rows = 6, 37, 3, 2
    k = awkward_k(wtype)
    raw, w, row_bytes = weight(wtype, 2 * experts * n_out, k, rng)
    routes = lopsided_routes(rng, rows, experts, used)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    spec = KernelSpec("matmul_experts", wtype, constants=(("GLU", 1), ("N_EXPERT", experts)))
    y = f32(run(spec, [raw, x, routes, Out(rows * used * n_out * 4)],
                {"k": k, "n": n_out, "row_bytes": row_bytes, "w0": 0, "e0": 0, "e1": experts, "used": used,
                 "x_slot": 0, "x_stride": k, "acc": 0}, (-(-n_out // 64), rows, used))[0]).reshape(rows, -1)
    assert rel_l2(y, gated_experts(x, routes, w, experts, n_out)) < 1e-5


def test_expert_groups(run, rng):
    """The (row, slot) entries grouped by expert: starts by count, each expert's entries those routed to it
    (an expert with none, one with every row)."""
    rows, experts, used = 75, 9, 4
    routes = lopsided_routes(rng, rows, experts, used)
    y = f32(run(KernelSpec("expert_groups"), [routes, Out((experts + 1 + rows * used + 2) * 4)],
                {"n_expert": experts, "used": used, "rows": rows}, (1, 1, 1))[0])
    ids = routes[:, used:].astype(int).ravel()
    starts = y[:experts + 1].astype(int)
    np.testing.assert_array_equal(starts, np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=experts))]))
    assert starts[2] - starts[1] == rows and starts[-1] == starts[-2]
    entries = y[experts + 1:experts + 1 + rows * used].astype(int)
    for e in range(experts):
        np.testing.assert_array_equal(np.sort(entries[starts[e]:starts[e + 1]]), np.flatnonzero(ids == e))
    assert np.isnan(y[experts + 1 + rows * used:]).all()


@pytest.mark.parametrize("x_slot", [False, True])
@pytest.mark.parametrize("wtype,tc,ty,f16", [(w, 4, 16, False) for w in EXPERT_MODE_TYPES] +
                         [("Q4_K", 8, 16, False), ("Q4_K", 4, 16, True), ("Q4_K", 4, 4, False)])
def test_matmul_rows_experts(run, rng, gpu, wtype, tc, ty, f16, x_slot):
    """Prefill: the tiled matmul over each expert's entries (shuffled within the expert: any order gives the same
    numbers), a tile of an expert's weights read once for its rows; every row on one expert, one on none; the f16
    variant within 1e-2."""
    if f16 and not gpu.profile.shader_f16:
        pytest.skip("adapter has no shader-f16")
    rows, experts, n_out, used = 75, 6, 37, 3
    k = awkward_k(wtype)
    raw, w, row_bytes = weight(wtype, experts * n_out, k, rng)
    lead = weight_lead(wtype)
    buf = np.concatenate([rng.integers(0, 256, lead, dtype=np.uint8), raw])
    routes = lopsided_routes(rng, rows, experts, used)
    ids = routes[:, used:].astype(int).ravel()
    entries = [rng.permutation(np.flatnonzero(ids == e)) for e in range(experts)]
    starts = np.concatenate([[0], np.cumsum([len(e) for e in entries])])
    lists = np.concatenate([starts, *entries]).astype(np.float32)
    x = rng.standard_normal((rows, used * k if x_slot else k)).astype(np.float32)
    consts = (("EXPERTS", used), ("STEP_SUMS", f16), ("TC", tc), ("TR", 4), ("TY", ty), ("X_SLOT", x_slot))
    y = f32(run(KernelSpec("matmul_rows", wtype, f16, constants=consts), [buf, x, Out(rows * used * n_out * 4), lists],
                {"k": k, "n": n_out, "row_bytes": row_bytes, "o0": 0, "m": rows, "y_stride": n_out, "w0": lead},
                (*gemm_groups(n_out, rows, 4, tc, ty)[:2], experts))[0]).reshape(rows, used * n_out)
    assert rel_l2(y, reference.expert_matmul(x, routes, w, n_out, False)) < (1e-2 if f16 else 1e-5)


def test_expert_combine(run, rng):
    rows, n, used = 13, 37, 3
    routes = lopsided_routes(rng, rows, 5, used)
    t = rng.standard_normal((rows, used, n)).astype(np.float32)
    y = f32(run(KernelSpec("expert_combine"), [t, routes, Out((rows * n + 3) * 4)], {"n": n, "used": used, "rows": rows},
                (-(-rows * n // 64), 1, 1))[0])
    assert np.isnan(y[rows * n:]).all()
    want = (t * routes[:, :used, None]).sum(axis=1)
    assert rel_l2(y[:rows * n].reshape(rows, n), want) < 1e-6


def test_topk_skips_the_tokens_a_mask_forbids(run, rng):
    cols, col0, k = 5003, 700, 40   # the part's ids start inside a mask word; its end is mid-word
    vocab = col0 + cols + 45
    allowed = rng.random(vocab) < 0.3
    allowed[col0 + 2048:col0 + 4096] = False
    allowed[col0 + 3000] = True   # the second slice: one allowed token, k - 1 places missing
    x = rng.standard_normal(cols).astype(np.float32)
    draw = draw_of(rng, allowed, top_k=k)
    slices = -(-cols // 2048)
    cand = run(KernelSpec("topk"), [np.frombuffer(draw.encode(), np.uint32), x, Out(slices * 64 * 8)],
               {"cols": cols, "col0": col0, "slice0": 0, "slices": slices}, (slices, 1, 1))[0].view(np.uint32).reshape(slices, 64, 2)
    want = topk_reference(np.where(allowed[col0:col0 + cols], x, -np.inf).astype(np.float32), col0, k)
    np.testing.assert_array_equal(cand[:, :k, 1], want[:, :k, 1])
    real = want[:, :k, 1] != 0xFFFFFFFF
    np.testing.assert_array_equal(cand[:, :k, 0][real], want[:, :k, 0][real])
    assert real[1].sum() == 1 and real[0].sum() == k


def gpu_pick(run, x: np.ndarray, draw) -> int:
    """The sampling ending on one row of logits: penalize (in place), topk per slice, sample."""
    cols, words = x.size, np.frombuffer(draw.encode(), np.uint32)
    slices = -(-cols // 2048)
    y = run(KernelSpec("penalize"), [words, Out(x.nbytes, init=x)], {"cols": cols, "col0": 0}, (1, 1, 1))[0]
    cand = run(KernelSpec("topk"), [words, y.view(np.float32), Out(slices * 64 * 8)],
               {"cols": cols, "col0": 0, "slice0": 0, "slices": slices}, (slices, 1, 1))[0]
    got = run(KernelSpec("sample"), [words, cand.view(np.uint32), Out(16)], {"slices": slices}, (1, 1, 1))[0]
    return int(got.view(np.uint32)[0])


@pytest.mark.parametrize("mask", ["random", "all but one", "below the top k"])
@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {}, {"top_k": 5, "top_p": 0.7}, {"min_p": 0.1},
                                      {"temperature": 1.5, "top_k": 64}])
def test_masked_sampling_matches_the_host_chain(run, rng, mask, settings):
    """The chain on the GPU with a grammar's mask picks what Sampler.pick picks from the same logits, mask and
    uniform number; a logit bias on a forbidden token does not bring it back."""
    from mdst.text.sampling import Sampler
    cols = 4133   # three top-k slices, not a multiple of 32 or of a workgroup
    x = (rng.standard_normal(cols) * 2).astype(np.float32)
    ranked = np.argsort(-x, kind="stable")
    allowed = np.zeros(cols, bool)
    if mask == "random":
        allowed[rng.random(cols) < 0.2] = True
    elif mask == "all but one":
        allowed[rng.integers(cols)] = True
    else:   # only tokens the unmasked top-k (64 at most) would never pick
        allowed[ranked[64 + rng.permutation(200)[:30]]] = True
    forbidden = int(ranked[0]) if not allowed[ranked[0]] else int(np.flatnonzero(~allowed)[0])
    for _ in range(3):
        draw = draw_of(rng, allowed, logit_bias={forbidden: 100}, **settings)
        want = Sampler.pick(x, draw)
        assert allowed[want]
        assert gpu_pick(run, x, draw) == want

