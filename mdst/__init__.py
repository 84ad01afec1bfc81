"""mdst: run GGUF language models on the GPU through WebGPU.

    import mdst
    with mdst.load("model.gguf") as model:
        print(model.generate("The capital of France is", max_tokens=16))

Nothing heavy is imported until it is used.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Callable

from .errors import DeviceError, GGUFError, HubError, MdstError, OutOfMemoryError, UnsupportedModelError

if TYPE_CHECKING:
    from .model import Model, Session
    from .text.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["load", "Model", "Session", "Tokenizer", "MdstError", "GGUFError", "UnsupportedModelError", "HubError",
           "DeviceError", "OutOfMemoryError", "__version__"]


def load(path: str | os.PathLike | None = None, *, quant: str | None = None, revision: str | None = None,
         device: str = "auto", precision: str | None = None, context_length: int | None = None,
         max_binding_size: int | None = None, kv_type: str | None = None, gpu_memory_limit: int | str | None = None,
         weight_paging: bool = False, progress: bool | None | Callable[[int, int], None] = None,
         activations: str = "f32", max_batch: int | None = None) -> "Model":
    """Load a GGUF model: a path, a packaged model's short name (None: the default small model), or a Hugging Face
    Hub model, "hf://ORG/REPO/FILE.gguf" or "ORG/REPO" with `quant` (downloaded into the Hub's cache; a path that
    exists wins over a Hub name).

    quant: the quantization to pick among an ORG/REPO's GGUF files ("Q4_K_M"; matched as a whole word in the
        file name); not needed when the repository holds one model.
    revision: the Hub branch, tag or commit (default: main).

    device: "auto" (a hardware adapter, else numpy: faster than a software adapter such as lavapipe),
        "gpu" (any WebGPU adapter, software included) or "cpu" (numpy).
    context_length: KV cache size in tokens (default: min(model maximum, 4096)).
    max_binding_size: cap on bytes per GPU binding, below the adapter's limit (tests the split path).
    kv_type: KV cache storage, "f32", "f16" or "q8_0" (default: f16 where the adapter has shader-f16, else f32):
        the storage setting (arithmetic: activations).
    activations: what matmuls on quantized weights multiply, the precision setting of arithmetic: "f32" (x as it
        is) or "q8" (x rounded to 8 bits per block of 32, llama.cpp's q8_1, so GPU kernels use packed 8-bit
        integer dot products; the numpy path computes the same).
    gpu_memory_limit: refuse to load (OutOfMemoryError, with the breakdown) if the predicted GPU bytes exceed it.
    weight_paging: under gpu_memory_limit, keep what fits resident and page the other weights in per step.
    progress: bars (tqdm, on stderr) for downloads and weight uploads: None draws them when stderr is a terminal,
        True always, False never; a callable is called with (bytes uploaded, bytes to upload) instead.
    max_batch: the most sequences that decode together (generate() with a list of prompts, Model.batch, `mdst
        serve --max-batch`): their KV caches count in the memory check, a finished sequence's cache is kept for the
        next, and one more sequence is refused (ValueError); None (default): no cap, caches made as needed.
    precision: deprecated (it only set the KV cache type; DeprecationWarning): "f16" and "f32" mean that kv_type,
        "auto" the default; an error if kv_type disagrees.
    """
    from .gpu.device import kv_type_for_precision
    from .model import PRECISION_DEPRECATED, Model
    from .packaged import resolve_model_path

    if precision is not None:
        warnings.warn(PRECISION_DEPRECATED, DeprecationWarning, stacklevel=2)
        kv_type = kv_type_for_precision(precision, kv_type)
    return Model(resolve_model_path(path, quant, revision, progress), device=device, context_length=context_length,
                 max_binding_size=max_binding_size, kv_type=kv_type, gpu_memory_limit=gpu_memory_limit,
                 weight_paging=weight_paging, progress=progress, activations=activations, max_batch=max_batch)


def __getattr__(name: str) -> Any:
    if name in ("Model", "Session"):
        from . import model
        return getattr(model, name)
    if name == "Tokenizer":
        from .text.tokenizer import Tokenizer
        return Tokenizer
    raise AttributeError(f"module 'mdst' has no attribute {name!r}")
