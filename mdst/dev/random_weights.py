"""Random tensors in every GGUF weight type, as raw bytes, for kernel tests and benchmarks.

Quantized blocks are random bytes with their float16 scale fields replaced by small normal
values (E8M0 exponents by small powers of two), so every bit pattern of the quantized fields gets exercised and values stay finite.
"""

from __future__ import annotations

import numpy as np

from gguf import GGMLQuantizationType as T

from mdst.dev.kquants import put_block_d
from mdst.format.gguf import GGML_TYPE_BY_NAME

# byte offsets of float16 scale fields within one block
F16_FIELDS = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "MXFP4": (), "TQ1_0": (52,), "TQ2_0": (64,),
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,), "IQ2_S": (0,), "IQ1_S": (0,), "IQ1_M": (),
}

# byte offsets of E8M0 scale fields (a power of two, 2^(e - 128)) within one block
E8M0_FIELDS = {"MXFP4": (0,)}


def random_weights(wtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes (uint8) of a [rows, cols] tensor of type `wtype`."""
    t = GGML_TYPE_BY_NAME[wtype]
    if wtype == "F32":
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8).ravel()
    if wtype == "F16":
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8).ravel()
    if wtype == "BF16":
        f = rng.standard_normal((rows, cols)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).ravel()
    nblocks = rows * cols // t.block
    raw = rng.integers(0, 256, size=(nblocks, t.block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[wtype]:
        raw[:, off:off + 2] = (rng.standard_normal(nblocks) * 0.05).astype(np.float16).view(np.uint8).reshape(-1, 2)
    if wtype == "IQ1_M":  # its f16 scale is four nibbles spread over the block
        put_block_d(T.IQ1_M, raw, rng.standard_normal(nblocks) * 0.05)
    for off in E8M0_FIELDS.get(wtype, ()):
        raw[:, off] = rng.integers(118, 126, size=nblocks)    # scales 2^-10 .. 2^-3: weights up to 1.5
    return raw.ravel()


def awkward_k(wtype: str) -> int:
    """A row length that is a valid multiple of the type's block but not of any workgroup tile."""
    block = GGML_TYPE_BY_NAME[wtype].block
    return {1: 4 * 37, 32: 32 * 7, 256: 256 * 3}[block]
