"""Random K-quant and IQ blocks with a chosen standard deviation.

gguf-py can dequantize these types but not quantize them. Synthetic weights need no
quantizer: each block gets uniformly random codes, random sub-block scales (and mins)
and a block scale `d` computed in closed form from the codes' and scales' moments, so
that the dequantized weights have mean 0 and the requested std. Scales and mins are
drawn independently (never equal), so a kernel that swaps or misreads them is caught.

Block layouts are ggml's (`ggml-common.h`); `gguf.quants.dequantize` is the check.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Block scales are jittered by U(0.75, 1.25) so no two blocks share the same `d`.
_JITTER = (0.75, 1.25)
_JITTER_SQ = (_JITTER[1] ** 3 - _JITTER[0] ** 3) / (3 * (_JITTER[1] - _JITTER[0]))   # E[u^2]

# The non-uniform 4-bit grid of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl).
IQ4_GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float64)


def _moments(lo: int, hi: int) -> tuple[float, float]:
    """Mean and mean square of the discrete uniform distribution on lo..hi."""
    n = hi - lo + 1
    mean = (lo + hi) / 2
    return mean, (n * n - 1) / 12 + mean * mean


def _uniform(rng: np.random.Generator, lo: int, hi: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int16)


def _signed(rng: np.random.Generator, lo: int, hi: int, shape: tuple[int, ...]) -> np.ndarray:
    """Magnitudes uniform on lo..hi with random signs: zero-mean scales for signed-scale types."""
    return _uniform(rng, lo, hi, shape) * (rng.integers(0, 2, size=shape, dtype=np.int16) * 2 - 1)


def _codes(rng: np.random.Generator, n_blocks: int, n_bytes: int) -> np.ndarray:
    """Uniform random packed codes: every bit pattern, hence every code value, equally likely."""
    return rng.integers(0, 256, size=(n_blocks, n_bytes), dtype=np.uint8)


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).view(np.uint8).reshape(len(x), 2)


def _block_d(rng: np.random.Generator, n_blocks: int, std: float, unit_mean_sq: float) -> np.ndarray:
    """Per-block scales d such that E[w^2] = std^2, given E[w^2] = unit_mean_sq at d = 1 without jitter."""
    d0 = std / np.sqrt(unit_mean_sq * _JITTER_SQ)
    return d0 * rng.uniform(*_JITTER, size=n_blocks)


def _pack_scale_min_k4(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins into the 12 bytes of Q4_K / Q5_K."""
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    out = np.empty((len(sc), 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    return out


def _affine_k(rng: np.random.Generator, n_blocks: int, std: float, q_bits: int,
              n_sub: int, sc_range: tuple[int, int], mn_range: tuple[int, int]):
    """Block scales, sub-block scales and mins for w = d*sc*q - dmin*mn with q uniform on 0..2^bits-1.

    dmin/d is fixed so that E[w] = 0; d is set so that E[w^2] = std^2.
    """
    q_mean, q_sq = _moments(0, 2 ** q_bits - 1)
    sc_mean, sc_sq = _moments(*sc_range)
    mn_mean, mn_sq = _moments(*mn_range)
    c = q_mean * sc_mean / mn_mean
    unit = sc_sq * q_sq - 2 * c * sc_mean * q_mean * mn_mean + c * c * mn_sq
    d = _block_d(rng, n_blocks, std, unit)
    sc = _uniform(rng, *sc_range, (n_blocks, n_sub))
    mn = _uniform(rng, *mn_range, (n_blocks, n_sub))
    return d, c * d, sc, mn


def _q2_k(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    d, dmin, sc, mn = _affine_k(rng, n, std, 2, 16, (4, 15), (0, 15))
    scales = (sc | (mn << 4)).astype(np.uint8)
    return np.hstack([scales, _codes(rng, n, 64), _f16(d), _f16(dmin)])


def _q3_k(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    s = _signed(rng, 8, 31, (n, 16))
    _, q_sq = _moments(-4, 3)
    d = _block_d(rng, n, std, _moments(8, 31)[1] * q_sq)
    u = (s + 32).astype(np.uint8)                       # 6-bit, stored with an offset of 32
    scales = np.empty((n, 12), dtype=np.uint8)
    scales[:, 0:8] = (u[:, 0:8] & 0x0F) | ((u[:, 8:16] & 0x0F) << 4)
    high = (u >> 4) & 0x03                              # scale 4k+i keeps its top bits in byte 8+i, bits 2k
    scales[:, 8:12] = high[:, 0:4] | (high[:, 4:8] << 2) | (high[:, 8:12] << 4) | (high[:, 12:16] << 6)
    return np.hstack([_codes(rng, n, 32), _codes(rng, n, 64), scales, _f16(d)])


def _q4_k(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    d, dmin, sc, mn = _affine_k(rng, n, std, 4, 8, (16, 63), (0, 63))
    return np.hstack([_f16(d), _f16(dmin), _pack_scale_min_k4(sc, mn), _codes(rng, n, 128)])


def _q5_k(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    d, dmin, sc, mn = _affine_k(rng, n, std, 5, 8, (16, 63), (0, 63))
    return np.hstack([_f16(d), _f16(dmin), _pack_scale_min_k4(sc, mn), _codes(rng, n, 32), _codes(rng, n, 128)])


def _q6_k(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    s = _signed(rng, 16, 127, (n, 16))
    d = _block_d(rng, n, std, _moments(16, 127)[1] * _moments(-32, 31)[1])
    return np.hstack([_codes(rng, n, 128), _codes(rng, n, 64), s.astype(np.int8).view(np.uint8), _f16(d)])


def _iq4_nl(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    d = _block_d(rng, n, std, float(np.mean(IQ4_GRID ** 2))) * (rng.integers(0, 2, size=n) * 2 - 1)
    return np.hstack([_f16(d), _codes(rng, n, 16)])


def _iq4_xs(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    s = _signed(rng, 8, 31, (n, 8))
    d = _block_d(rng, n, std, _moments(8, 31)[1] * float(np.mean(IQ4_GRID ** 2)))
    u = (s + 32).astype(np.uint16)                      # 6-bit, stored with an offset of 32
    scales_h = np.zeros(n, dtype=np.uint16)
    for ib in range(8):
        scales_h |= ((u[:, ib] >> 4) & 0x03) << (2 * ib)
    low = (u & 0x0F).astype(np.uint8)
    scales_l = low[:, 0::2] | (low[:, 1::2] << 4)
    return np.hstack([_f16(d), scales_h.view(np.uint8).reshape(n, 2), scales_l, _codes(rng, n, 128)])


def put_block_d(qtype: T, blocks: np.ndarray, d: np.ndarray) -> None:
    """Write each block's scale d into `blocks` (uint8 [n, type_size]): an f16 at byte 0 for the grid types,
    but IQ1_M keeps its f16's four nibbles atop its four u16 scale words (bytes 48..55)."""
    if qtype != T.IQ1_M:
        blocks[:, 0:2] = _f16(d)
        return
    bits = d.astype(np.float16).view(np.uint16)[:, None]
    words = blocks[:, 48:56].copy().view(np.uint16)
    words = (words & 0x0FFF) | (((bits >> np.array([0, 4, 8, 12], np.uint16)) & 0xF) << 12)
    blocks[:, 48:56] = words.astype(np.uint16).view(np.uint8)


@lru_cache(maxsize=None)
def _unit_mean_sq(qtype: T) -> float:
    """E[w^2] of `qtype`'s blocks of random bytes with d = 1, measured on a fixed sample: the grid types' levels,
    scales and signs are tables, whose moments are simplest measured."""
    rng = np.random.default_rng(0)
    blocks = _codes(rng, 4096, GGML_QUANT_SIZES[qtype][1])
    put_block_d(qtype, blocks, np.ones(4096))
    return float(np.mean(dequantize(blocks, qtype).astype(np.float64) ** 2))


def _grid_writer(qtype: T):
    """Blocks of the grid types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M): random bytes (grid
    indices, signs and scales all take any value) with the block scale d put in."""
    def write(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
        blocks = _codes(rng, n, GGML_QUANT_SIZES[qtype][1])
        put_block_d(qtype, blocks, _block_d(rng, n, std, _unit_mean_sq(qtype)))
        return blocks
    return write


GRID_TYPES = (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M)

_WRITERS = {
    T.Q2_K: _q2_k, T.Q3_K: _q3_k, T.Q4_K: _q4_k, T.Q5_K: _q5_k, T.Q6_K: _q6_k,
    T.IQ4_NL: _iq4_nl, T.IQ4_XS: _iq4_xs,
    **{t: _grid_writer(t) for t in GRID_TYPES},
}

RANDOM_BLOCK_TYPES: frozenset[T] = frozenset(_WRITERS)


def random_blocks(qtype: T, n_blocks: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """`n_blocks` random blocks of `qtype` as uint8 [n_blocks, type_size]; dequantized: mean 0, std `std`."""
    if qtype not in _WRITERS:
        raise ValueError(f"no random block writer for {qtype.name}; "
                         f"supported: {', '.join(sorted(t.name for t in _WRITERS))}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    out = _WRITERS[qtype](rng, n_blocks, std)
    assert out.shape == (n_blocks, GGML_QUANT_SIZES[qtype][1]), (qtype.name, out.shape)
    return out
