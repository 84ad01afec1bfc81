"""Kernel sources: composition, the variant transform, parameter packing, and the pipeline cache.

A kernel is named by a `KernelSpec`: the kernel file, the weight type it reads (if any), the KV
cache format it reads or writes (if any), the precision variant and its override constants. Its
WGSL source is, in this order,

    common.wgsl + [weights(_vec4).wgsl + [quant/grid.wgsl] + quant/<WTYPE>.wgsl [+ step]] + [kv/<KV>.wgsl]
                + <kernel>.wgsl

where `step`, for kernels listed in TYPE_STEPS, is the weight type's own inner step
(quant/<WTYPE>.<kernel>.wgsl) or the generic one (quant/<kernel>.wgsl), followed by quant/<kernel>.whole.wgsl
where it defines no `fn step_w(`, and quant/grid.wgsl comes only for GRID_TYPES.

passed through `variant()`. README.md in this folder documents the rule so the browser build
composes byte-identical sources.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..gpu.native import shader_module

# Weight types the kernels can read (quant/<name>.wgsl exists for each).
WEIGHT_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K",
                "Q2_K", "Q3_K", "Q5_K", "IQ4_NL", "IQ4_XS", "MXFP4", "TQ1_0", "TQ2_0",
                "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M")

# Kernels whose inner step a weight type may replace, and the types that do (see compose).
TYPE_STEPS = {"matmul_row": ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                            "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "MXFP4", "TQ1_0", "TQ2_0")}

# Weight types whose blocks are whole 16-byte words: kernels read them through weights_vec4.wgsl (one load a
# header or 16 bytes of data) instead of weights.wgsl's 4-byte words.
WIDE_TYPES = ("Q4_K", "Q5_K")

# Weight types that look weights up in a grid: quant/grid.wgsl is composed before the type's quant file, and
# their kernels bind the grid (grid_words) as group 1.
GRID_TYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")


@lru_cache(maxsize=None)
def grid_words(wtype: str) -> np.ndarray:
    """The grid a GRID_TYPES type binds as group 1 (quant/grid.wgsl), as uint32 words: llama.cpp's grid
    (gguf-py's copy), a byte a weight (an entry of 8 weights is two words, one of 4 a word), IQ1's levels
    -1, 0, 1 as 0, 1, 2."""
    if wtype not in GRID_TYPES:
        raise KeyError(f"weight type {wtype} has no grid (GRID_TYPES: {', '.join(GRID_TYPES)})")
    from gguf import quants

    ref = getattr(quants, wtype)
    ref.init_grid()
    levels = ref.grid.reshape(ref.grid_shape) - min(0, min(ref.grid_map))
    words = np.ascontiguousarray(levels.astype(np.uint8)).view("<u4").astype(np.uint32).ravel()
    words.setflags(write=False)
    return words


def weight_align(wtype: str) -> int:
    """What a weight part's byte offset (and row length) must be a multiple of: 16 for WIDE_TYPES, read in
    16-byte words; 1 for the others, whose kernels read bytes anywhere."""
    return 16 if wtype in WIDE_TYPES else 1

# KV cache formats (kv/<name>.wgsl); "F" stores `half`: f32, or f16 in the f16 variant.
KV_FORMATS = ("F", "Q8_0")

_PRECISION_LINE = "alias half = f32;"
_ENABLE = re.compile(r"^\s*enable\s+([a-z0-9_, ]+);\s*$", re.M)


@dataclass(frozen=True)
class KernelSpec:
    """One specialization of a kernel: file, weight type, precision, override constants."""

    name: str
    wtype: str | None = None
    f16: bool = False
    constants: tuple[tuple[str, float], ...] = ()
    kv: str | None = None

    def constants_dict(self) -> dict[str, float]:
        return dict(self.constants)

    def key(self) -> str:
        """A short printable identifier (used in oracle files and profiles)."""
        parts = [self.name] + ([self.wtype] if self.wtype else []) + ([f"kv={self.kv}"] if self.kv else [])
        parts += ["f16"] if self.f16 else []
        parts += [f"{k}={v}" for k, v in self.constants]
        return ":".join(parts)


@lru_cache(maxsize=None)
def read(relpath: str) -> str:
    """The text of a file in this package (e.g. 'rms_norm.wgsl', 'quant/Q4_K.wgsl')."""
    try:
        return resources.files(__name__).joinpath(relpath).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no kernel file {relpath!r}") from None


def compose(name: str, wtype: str | None = None, kv: str | None = None) -> str:
    """The kernel's source before the variant transform."""
    parts = [read("common.wgsl")]
    if wtype is not None:
        if wtype not in WEIGHT_TYPES:
            raise KeyError(f"no kernel reads weight type {wtype}")
        parts.append(read("weights_vec4.wgsl" if wtype in WIDE_TYPES else "weights.wgsl"))
        if wtype in GRID_TYPES:
            parts.append(read("quant/grid.wgsl"))
        parts.append(read(f"quant/{wtype}.wgsl"))
        if name in TYPE_STEPS:
            step = read(f"quant/{wtype}.{name}.wgsl" if wtype in TYPE_STEPS[name] else f"quant/{name}.wgsl")
            parts += [step] if "fn step_w(" in step else [step, read(f"quant/{name}.whole.wgsl")]
    if kv is not None:
        if kv not in KV_FORMATS:
            raise KeyError(f"no KV cache format {kv}")
        parts.append(read(f"kv/{kv}.wgsl"))
    parts.append(read(f"{name}.wgsl"))
    return "\n".join(parts)


def variant(source: str, *, f16: bool, compiler: str) -> str:
    """The one source transform (see README.md).

    1. Every `enable ...;` line is moved to the top (WGSL wants directives first; composed
       sources carry them mid-file). With f16, `enable f16;` is added and the precision line
       `alias half = f32;` becomes `alias half = f16;`.
    2. For compiler "naga" (wgpu-native), `subgroups` is dropped from the enables: Naga rejects
       the directive but accepts the builtins once the device has the feature; Tint needs it.
    """
    if compiler not in ("naga", "tint"):
        raise ValueError(f"compiler must be 'naga' or 'tint', got {compiler!r}")
    enables: list[str] = []
    for m in _ENABLE.finditer(source):
        for ext in m.group(1).replace(" ", "").split(","):
            if ext and ext not in enables:
                enables.append(ext)
    body = _ENABLE.sub("", source)
    if f16:
        if _PRECISION_LINE not in body:
            raise ValueError("source has no precision line to rewrite")
        body = body.replace(_PRECISION_LINE, "alias half = f16;")
        if "f16" not in enables:
            enables.insert(0, "f16")
    if compiler == "naga":
        enables = [e for e in enables if e != "subgroups"]
    head = "".join(f"enable {e};\n" for e in enables)
    return head + body


def source(spec: KernelSpec, compiler: str = "naga") -> str:
    """The final WGSL of a specialization for a compiler."""
    return variant(compose(spec.name, spec.wtype, spec.kv), f16=spec.f16, compiler=compiler)


# ---- per-dispatch parameters ------------------------------------------------------------------
_STRUCT = re.compile(r"struct\s+P\s*\{([^}]*)\}", re.S)
_FIELD = re.compile(r"(\w+)\s*:\s*(u32|i32|f32)\s*,")


@lru_cache(maxsize=None)
def param_fields(name: str) -> tuple[tuple[str, str], ...]:
    """Field names and types of the kernel's uniform `struct P` (all 4-byte scalars)."""
    m = _STRUCT.search(read(f"{name}.wgsl"))
    if not m:
        return ()
    body = re.sub(r"//[^\n]*", "", m.group(1)) + ","
    return tuple(_FIELD.findall(body))


def pack_params(name: str, values: dict[str, Any]) -> bytes:
    """Pack a kernel's parameters in `struct P` order, padded to 16 bytes."""
    fields = param_fields(name)
    missing = [f for f, _ in fields if f not in values]
    extra = [k for k in values if k not in dict(fields)]
    if missing or extra:
        raise KeyError(f"kernel {name}: missing params {missing}, unknown params {extra}")
    fmt = {"u32": "<I", "i32": "<i", "f32": "<f"}
    out = b"".join(struct.pack(fmt[t], values[f]) for f, t in fields)
    return out + b"\0" * (-len(out) % 16)


# ---- constants shared with Python ----------------------------------------------------------------
@lru_cache(maxsize=None)
def wgsl_const(relpath: str, name: str) -> int:
    """The value of a module-scope `const NAME: u32 = N;` (or `Nu`) in a kernel file, read from the
    WGSL so that Python never keeps its own copy (README.md, section 3)."""
    found = re.findall(rf"^const\s+{re.escape(name)}\s*:\s*u32\s*=\s*(\d+)u?\s*;", read(relpath), re.M)
    if len(found) != 1:
        raise LookupError(f"{relpath} must declare `const {name}: u32 = <integer>;` exactly once at line start "
                          f"(found {len(found)})")
    return int(found[0])


class PipelineCache:
    """Compiled pipelines per (device, KernelSpec); each is compiled once."""

    def __init__(self, device: Any, checks: bool = True):
        self.device = device
        self.checks = checks   # naga's runtime checks in the compiled kernels (Presets.shader_checks)
        self._pipelines: dict[KernelSpec, Any] = {}

    @classmethod
    def for_gpu(cls, gpu: Any) -> "PipelineCache":
        """The pipelines of an opened GPU, compiled with or without runtime checks as its presets say."""
        return cls(gpu.device, bool(gpu.profile.presets.shader_checks))

    def get(self, spec: KernelSpec) -> Any:
        """The compute pipeline for `spec` (compiled on first use)."""
        p = self._pipelines.get(spec)
        if p is None:
            module = shader_module(self.device, spec.key(), source(spec, "naga"), self.checks)
            p = self.device.create_compute_pipeline(
                label=spec.key(), layout="auto",
                compute={"module": module, "entry_point": "main", "constants": spec.constants_dict()})
            self._pipelines[spec] = p
        return p

    def __len__(self) -> int:
        return len(self._pipelines)
