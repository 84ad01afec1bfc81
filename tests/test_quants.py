"""Host dequantization of the weight types gguf-py can also quantize: values the type represents exactly
come back unchanged, in mdst's [rows, row length] shape, and equal gguf-py's own dequantization; the kernels'
copies of llama.cpp's grids."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from mdst.dev.random_weights import awkward_k
from mdst.format.gguf import GGML_TYPE_BY_NAME
from mdst.format.quants import dequantize

# E2M1's values doubled (MXFP4's levels) and the ternary levels of TQ1_0 / TQ2_0
LEVELS = {"MXFP4": np.array([0, 1, 2, 3, 4, 6, 8, 12, -1, -2, -3, -4, -6, -8, -12]) / 2.0,
          "TQ1_0": np.array([-1.0, 0.0, 1.0]), "TQ2_0": np.array([-1.0, 0.0, 1.0])}


def representable(wtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, cols] floats the type stores exactly: a block scale (a power of two for MXFP4, an f16 for the
    ternary types) times levels, with the largest level in every block so gguf-py's quantizer picks that scale."""
    qk = GGML_TYPE_BY_NAME[wtype].block
    n = rows * cols // qk
    levels = LEVELS[wtype]
    q = rng.choice(levels, size=(n, qk))
    q[np.arange(n), rng.integers(0, qk, n)] = levels.max() * rng.choice([-1, 1], n)
    if wtype == "MXFP4":
        scale = np.exp2(rng.integers(-12, 4, n)).astype(np.float32)
    else:
        scale = (rng.uniform(0.01, 1.0, n)).astype(np.float16).astype(np.float32)
    return (q * scale[:, None]).astype(np.float32).reshape(rows, cols)


@pytest.mark.parametrize("wtype", ["MXFP4", "TQ1_0", "TQ2_0"])
def test_dequantize_inverts_gguf_py_quantizer(wtype):
    rng = np.random.default_rng()
    rows, cols = 5, awkward_k(wtype)
    x = representable(wtype, rows, cols, rng)
    raw = gguf_quantize(x, GGMLQuantizationType[wtype])
    assert raw.nbytes == rows * cols // GGML_TYPE_BY_NAME[wtype].block * GGML_TYPE_BY_NAME[wtype].block_bytes
    ours = dequantize(raw.tobytes(), GGML_TYPE_BY_NAME[wtype], (cols, rows))
    np.testing.assert_array_equal(ours, x)
    np.testing.assert_array_equal(ours, gguf_dequantize(raw, GGMLQuantizationType[wtype]))


# (kernel file, table name, gguf-py class): the grid types' tables; IQ1_M shares IQ1_S's.
GRID_TABLES = [("IQ2_XXS", "IQ2_XXS_GRID", "IQ2_XXS"), ("IQ2_XS", "IQ2_XS_GRID", "IQ2_XS"),
               ("IQ2_S", "IQ2_S_GRID", "IQ2_S"), ("IQ3_XXS", "IQ3_XXS_GRID", "IQ3_XXS"),
               ("IQ3_S", "IQ3_S_GRID", "IQ3_S"), ("iq1_grid", "IQ1_GRID_\\d+", "IQ1_S")]


@pytest.mark.parametrize("file,table,wtype", GRID_TABLES)
def test_wgsl_grid_is_llama_cpp_grid(file, table, wtype):
    # every entry, where the kernel tests' random blocks reach only some: entry i is 16 bits of word i >> 1
    # (a table split into arrays is their concatenation), weight j an index into gguf-py's levels (2 bits for
    # 3 levels, 3 bits for 8)
    from gguf import quants

    from mdst.kernels import read

    words = []
    for n, body in re.findall(rf"{table}: array<u32, (\d+)> = array<u32, \d+>\(([^)]*)\)", read(f"quant/{file}.wgsl")):
        words += [int(w.strip().rstrip("u"), 16) for w in body.split(",") if w.strip()]
        assert len(words) % int(n) == 0
    words = np.array(words, np.uint32)
    ref = getattr(quants, wtype)
    ref.init_grid()
    grid = ref.grid.reshape(ref.grid_shape)
    bits = 2 if len(ref.grid_map) <= 4 else 3
    entries = np.stack([words & 0xFFFF, words >> 16], axis=1).ravel()
    assert len(entries) == len(grid)
    idx = (entries[:, None] >> (bits * np.arange(grid.shape[1], dtype=np.uint32))) & ((1 << bits) - 1)
    np.testing.assert_array_equal(np.array(ref.grid_map, np.float32)[idx], grid)
