"""Host dequantization of the weight types gguf-py can also quantize: values the type represents exactly
come back unchanged, in mdst's [rows, row length] shape, and equal gguf-py's own dequantization; the kernels'
copies of llama.cpp's grids."""

from __future__ import annotations


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


@pytest.mark.parametrize("wtype", ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"])
def test_grid_words_are_llama_cpp_grid(wtype):
    # every entry, where the kernel tests' random blocks reach only some: a byte a weight, IQ1's -1, 0, 1 as 0, 1, 2
    from gguf import quants

    from mdst.kernels import GRID_TYPES, grid_words

    assert wtype in GRID_TYPES
    words = grid_words(wtype)
    ref = getattr(quants, wtype)
    ref.init_grid()
    grid = ref.grid.reshape(ref.grid_shape)
    assert words.dtype == np.uint32 and words.size * 4 == grid.size
    levels = (words[:, None] >> np.arange(0, 32, 8, dtype=np.uint32)) & 0xFF
    np.testing.assert_array_equal(levels.reshape(grid.shape).astype(np.float32) - (1 if wtype.startswith("IQ1") else 0),
                                  grid)


def test_grid_words_refuses_a_type_without_grid():
    from mdst.kernels import grid_words

    with pytest.raises(KeyError, match="Q4_K has no grid"):
        grid_words("Q4_K")
