"""Adapter choice, feature and limit detection (`DeviceProfile`), the KV cache type and workgroup presets."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceError

log = logging.getLogger("mdst")

# Features mdst uses when the adapter offers them; none is required.
OPTIONAL_FEATURES = ("shader-f16", "subgroup", "timestamp-query")
# Hardware adapters first; then native backends (wgpu's OpenGL backend lacks what compute-heavy work needs);
# then a discrete GPU before an integrated one.
_BACKEND_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 0, "OpenGL": 2}


@dataclass(frozen=True)
class Presets:
    """Kernel choices that depend on the kind of adapter."""

    matmul: str = "tiled"         # "tiled": workgroup-memory tiles and cooperative GEMV; "by_output": lanes take outputs
    attention_split: int = 0      # one-row attention: keys per workgroup, merged after (0: one workgroup per head)
    attention_lanes: int = 1      # lanes scoring each key together (1, 2, 4, ... 64)
    attention_splits: int = 0     # at most this many splits (longer ones where the cache is longer; 0: no cap)
    gemv_lanes: int = 32          # matmul_row: lanes summing one output row (TPR)
    gemv_lanes_q8: int = 0        # the same with 8-bit activations on short rows (plan.GEMV_Q8_SHORT units or
                                  # fewer); 0: gemv_lanes
    gemv_chunk: int = 8           # matmul_row: groups of 4 weights a lane takes at a time (GPT), generic step
    gemv_rows: int = 1            # matmul_row: rows a group of lanes computes, reading x once for all (ROWS)
    gemv_threads: int = 0         # matmul_row: halve gemv_rows while a dispatch would have fewer threads than this
    batch_rows: int = 16          # sequences one batched decode plan takes; 0: each sequence's one-row plan, all
                                  # in one encoder
    batch_gemv: int = 16          # a batched step's matmuls over this many rows or fewer: matmul_row over rows of
                                  # x (at most its MAX_XR); more: matmul_rows' tiles
    batch_gemv_rows: int = 1      # matmul_row over rows of x: weight rows a group (1, 2, 4; fewer where 16 sums
                                  # would not hold them all)
    prefill_rows: int = 128       # rows per prefill step: more fill a big GPU's GEMM tiles; fewer plans to compile
    gemm_rows: int = 4            # matmul_rows: rows a thread (4: 64-row tiles; 8: 128)
    gemm_cols: int = 4            # matmul_rows: outputs a thread (4: 64-output tiles; 8: 128)
    gemm_split_groups: int = 0    # matmul_rows: slices of k until a dispatch has this many workgroups (0: none)
    gemm_short: int = 0           # matmul_rows over 64 rows or fewer: the shortest tile that holds them (0: 64 rows)
    gemm_f16: int = 0             # matmul_rows: 1 for the f16 variant (f16 products summed a step at a time
                                  # into f32) where the adapter has shader-f16; GPUs' default
    prefill_attention: str = "flash"  # many-row attention: "flash" (blocks of rows share each KV tile through
                                      # workgroup memory) or "rows" (a workgroup a row, as decode)
    flash_threads: int = 128      # attention_rows: threads a workgroup (64: half the query vectors a block, so
                                  # twice the blocks for a short prompt)
    shader_checks: int = 1        # 0: kernels compiled without naga's runtime checks (index clamps, loop
                                  # counters; gpu/native.shader_module); Vulkan GPUs' default


PRESETS_ENV = "MDST_PRESETS"   # e.g. "attention_split=32,attention_lanes=8": overrides, for tuning by measurement


def presets_for(software: bool, backend: str = "Vulkan") -> Presets:
    """CPU adapters (lavapipe, SwiftShader) pay for workgroup memory and barriers and have few lanes to fill;
    GPUs want many workgroups even for a decode step's few heads (benchmarks/attention_decode.py: up to 128
    splits, which beat 64 and 256 at 8k and 32k positions; RESULTS), and a GEMV
    group of lanes computing 4 rows from one read of x, unless that leaves a short matrix too few threads
    (benchmarks/matmul_bandwidth.py; H200 sweep in benchmarks/RESULTS.md), and with 8-bit activations 16 lanes
    for rows of k <= 3,072 (1.14-1.9x the 64 at every such shape of qwen3-0.6b and gemma3-270m on the H100).
    Batched decode takes the batched plan on both: on the H100 it beat each sequence's one-row plan in one
    encoder (batch_rows=0) at 4, 16 and 64
    sequences; on GPUs its matmuls over more than 4 rows take matmul_rows' short tiles with slices of k (1.24x
    the rows-of-x GEMV at 16 sequences, 1.49x at 64: RESULTS.md, 2026-12-06). GPUs on Vulkan compile the kernels
    without naga's runtime checks (decode 1.07-1.17x, prefill 1.2-1.4x on the H100), where the device's robust
    buffer access still bounds every buffer read; CPU adapters and other backends keep them."""
    base = Presets("by_output", 0, 1) if software else Presets("tiled", 32, 4, attention_splits=128, gemv_lanes=64,
                                                                 gemv_lanes_q8=16, gemv_chunk=2, gemv_rows=4,
                                                                 gemv_threads=65536,
                                                                 prefill_rows=512, gemm_f16=1, batch_rows=64,
                                                                 batch_gemv=4, batch_gemv_rows=4, gemm_short=1,
                                                                 gemm_split_groups=2048,
                                                                 shader_checks=int(backend != "Vulkan"))
    return with_overrides(base, os.environ.get(PRESETS_ENV, ""))


def with_overrides(base: Presets, text: str) -> Presets:
    """`base` with the `name=value,...` overrides of `text` (the MDST_PRESETS format)."""
    import dataclasses

    allowed = {"matmul": ("tiled", "by_output"), "attention_split": (0, 16, 32, 64, 128, 256),
               "attention_lanes": (1, 2, 4, 8, 16, 32, 64), "attention_splits": (0, 16, 32, 64, 128, 256),
               "gemv_lanes": (4, 8, 16, 32, 64, 128, 256), "gemv_lanes_q8": (0, 4, 8, 16, 32, 64, 128, 256),
               "gemv_chunk": (1, 2, 4, 8), "gemv_rows": (1, 2, 4, 8),
               "gemv_threads": (0, 16384, 32768, 65536, 131072, 262144),
               "batch_rows": (0, 2, 4, 8, 16, 32, 64), "batch_gemv": (1, 2, 4, 8, 16),
               "batch_gemv_rows": (1, 2, 4),
               "prefill_rows": (32, 64, 128, 256, 512, 1024), "prefill_attention": ("flash", "rows"),
               "flash_threads": (64, 128), "shader_checks": (0, 1),
               "gemm_rows": (4, 8), "gemm_cols": (4, 8), "gemm_short": (0, 1),
               "gemm_split_groups": (0, 256, 512, 1024, 2048, 4096), "gemm_f16": (0, 1)}
    changes: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        options = allowed.get(name.strip())
        if options is None:
            raise ValueError(f"{PRESETS_ENV}: unknown preset {name.strip()!r}; presets: {', '.join(allowed)}")
        v: Any = value.strip()
        if isinstance(options[0], int):
            v = int(v) if v.isdigit() else v
        if v not in options:
            raise ValueError(f"{PRESETS_ENV}: {name.strip()} must be one of {options}, got {value.strip()!r}")
        changes[name.strip()] = v
    return dataclasses.replace(base, **changes)


@dataclass
class DeviceProfile:
    """What the chosen adapter is and can do."""

    name: str
    vendor: str
    backend: str
    adapter_type: str  # "DiscreteGPU", "IntegratedGPU", "CPU", ...
    driver: str
    features: frozenset[str]
    limits: dict[str, int]
    max_binding_size: int  # what mdst binds at most: the adapter's limit or a smaller cap
    presets: Presets = field(default_factory=Presets)

    @property
    def software(self) -> bool:
        """True for CPU adapters such as lavapipe (llvmpipe) or SwiftShader."""
        return self.adapter_type == "CPU"

    @property
    def shader_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def subgroups(self) -> bool:
        return "subgroup" in self.features

    @property
    def timestamps(self) -> bool:
        return "timestamp-query" in self.features

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for `mdst doctor` and benchmark JSON)."""
        return {
            "name": self.name, "vendor": self.vendor, "backend": self.backend,
            "adapter_type": self.adapter_type, "driver": self.driver,
            "shader_f16": self.shader_f16, "subgroups": self.subgroups, "timestamp_query": self.timestamps,
            "max_storage_buffer_binding_size": self.limits.get("max-storage-buffer-binding-size"),
            "max_buffer_size": self.limits.get("max-buffer-size"),
            "max_binding_size_used": self.max_binding_size,
            "max_compute_workgroup_storage_size": self.limits.get("max-compute-workgroup-storage-size"),
            "max_compute_invocations_per_workgroup": self.limits.get("max-compute-invocations-per-workgroup"),
            "presets": dict(self.presets.__dict__),
        }


@dataclass
class GPU:
    """An open wgpu device with its profile."""

    device: Any
    profile: DeviceProfile

    @property
    def queue(self) -> Any:
        return self.device.queue

    def wait_idle(self) -> None:
        """Block until everything submitted has finished (so the queue frees its staging copies).

        wgpu 0.32's on_submitted_work_done is broken (a callback signature mismatch), so this
        polls wgpu-native with wait=true through wgpu-py's own (pinned) device method.
        """
        self.queue.submit([])
        self.device._poll_wait()


_DEVICE_SELECT_OFF = "NODEVICE_SELECT"  # Mesa's device-select layer's own off switch


@functools.cache
def _instance() -> None:
    """Create wgpu's instance once, quietly on a headless machine.

    Mesa's device-select Vulkan layer probes for a Wayland display at every adapter enumeration, and with no
    XDG_RUNTIME_DIR libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set" (4 lines each time).
    Without a display there is nothing for the layer to select by, so its own switch turns it off while wgpu
    creates its Vulkan instance (the loader reads it only then); a user's own device-select settings win.
    """
    from wgpu.backends.wgpu_native.extras import get_wgpu_instance

    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    quiet = (not (runtime_dir and os.path.isdir(runtime_dir))
             and not any(k in os.environ for k in (_DEVICE_SELECT_OFF, "MESA_VK_DEVICE_SELECT")))
    if quiet:
        os.environ[_DEVICE_SELECT_OFF] = "1"
    try:
        get_wgpu_instance()
    finally:
        if quiet:
            del os.environ[_DEVICE_SELECT_OFF]


def adapters() -> list:
    """Every adapter wgpu sees, best first: hardware, then native backends, then discrete GPUs."""
    try:
        import wgpu
    except Exception as e:  # pragma: no cover - wgpu is a hard dependency
        raise DeviceError(f"wgpu cannot be imported ({e}); reinstall mdst") from None
    try:
        _instance()
        found = list(wgpu.gpu.enumerate_adapters_sync())
    except Exception as e:
        log.debug("adapter enumeration failed: %s", e)
        return []
    return sorted(found, key=lambda a: (a.info.get("adapter_type") == "CPU",
                                       _BACKEND_RANK.get(a.info.get("backend_type", ""), 1),
                                       a.info.get("adapter_type") != "DiscreteGPU"))


def choose_adapter(kind: str, found: list | None = None) -> tuple[Any | None, str]:
    """The adapter for `kind` among `found` (default: `adapters()`) and why, in words; None means numpy.

    "gpu": the best adapter, software included. "auto": the best hardware adapter; with only software ones
    (lavapipe, SwiftShader) numpy, which decodes about 4x faster than lavapipe on the same cores
    (benchmarks/RESULTS.md).
    """
    found = adapters() if found is None else found
    if not found:
        return None, "no WebGPU adapter found"
    best = found[0]
    name = f"{best.info.get('device', '?')} ({best.info.get('backend_type', '?')})"
    if best.info.get("adapter_type") != "CPU":
        return best, f"hardware adapter {name}"
    if kind == "gpu":
        return best, f"software adapter {name}, as device='gpu' asks"
    names = ", ".join(dict.fromkeys(a.info.get("device", "?") for a in found))
    return None, f"only software adapters ({names}), and numpy is faster than a software adapter"


def open_gpu(kind: str = "gpu", max_binding_size: int | None = None, adapter: Any | None = None) -> GPU | None:
    """Open a device on `adapter` (default: the one `kind` chooses) with limits at the adapter's maximum."""
    if adapter is None:
        adapter, _ = choose_adapter(kind)
    if adapter is None:
        return None
    limits = {k: v for k, v in adapter.limits.items()}
    features = [f for f in OPTIONAL_FEATURES if f in adapter.features]
    try:
        device = adapter.request_device_sync(required_features=features, required_limits=limits)
    except Exception as e:
        raise DeviceError(f"could not open a device on {adapter.info.get('device')}: {e}") from None
    adapter_max = min(int(limits["max-storage-buffer-binding-size"]), int(limits["max-buffer-size"]))
    cap = adapter_max
    if max_binding_size is not None:
        if not isinstance(max_binding_size, int) or max_binding_size < 65536:
            raise ValueError(f"max_binding_size must be an int of at least 65536 bytes, got {max_binding_size!r}")
        cap = min(cap, max_binding_size)
    cap -= cap % 256  # keep binding sizes and offsets aligned
    info = adapter.info
    profile = DeviceProfile(
        name=info.get("device", "?"), vendor=info.get("vendor", ""), backend=info.get("backend_type", "?"),
        adapter_type=info.get("adapter_type", "?"), driver=info.get("description", ""),
        features=frozenset(device.features), limits={k: int(v) for k, v in device.limits.items()},
        max_binding_size=cap,
        presets=presets_for(info.get("adapter_type") == "CPU", info.get("backend_type", "?")))
    gpu = GPU(device, profile)
    return gpu


def resolve(device: str, max_binding_size: int | None = None) -> GPU | None:
    """Turn the `device=` load option into an open GPU, or None for the numpy fallback."""
    if device not in ("auto", "gpu", "cpu"):
        raise ValueError(f"device must be 'auto', 'gpu' or 'cpu', got {device!r}")
    if device == "cpu":
        log.info("mdst: using the numpy CPU fallback (device='cpu')")
        return None
    found = adapters()
    adapter, why = choose_adapter(device, found)
    if adapter is None:
        if device == "gpu":
            raise DeviceError("no WebGPU adapter found; install a Vulkan driver (on Debian: "
                              "apt-get install mesa-vulkan-drivers) or use device='cpu'")
        if not found:
            log.warning("mdst: no WebGPU adapter found, using the numpy CPU fallback")
        else:
            log.info("mdst: using the numpy CPU fallback: %s; device='gpu' forces it", why)
        return None
    log.info("mdst: using the %s", why)
    return open_gpu(device, max_binding_size, adapter)


KV_TYPES = ("f32", "f16", "q8_0")


def kv_type_for_precision(precision: str, kv_type: str | None) -> str | None:
    """The kv_type that the deprecated `precision` argument stands for (it only ever chose the KV cache's
    type; arithmetic is f32): 'f16' -> 'f16', 'f32' -> 'f32', 'auto' -> kv_type as given (None: the default).
    A kv_type that disagrees is an error."""
    if precision not in ("auto", "f32", "f16"):
        raise ValueError(f"precision must be 'auto', 'f32' or 'f16', got {precision!r} "
                         "(precision is deprecated: use kv_type)")
    if precision == "auto":
        return kv_type
    if kv_type is not None and kv_type != precision:
        raise ValueError(f"precision={precision!r} and kv_type={kv_type!r} disagree: precision is deprecated "
                         "and only set the KV cache type; give kv_type alone")
    return precision


def resolve_kv_type(kv_type: str | None, gpu: GPU | None) -> str:
    """The KV cache format: given, or by default f16 where the adapter has shader-f16 and f32 otherwise (numpy
    included); f16 needs shader-f16 on a GPU. (Arithmetic is the activations option's.)"""
    if kv_type is None:
        return "f16" if gpu is not None and gpu.profile.shader_f16 else "f32"
    if kv_type not in KV_TYPES:
        raise ValueError(f"kv_type must be 'f32', 'f16' or 'q8_0', got {kv_type!r}")
    if kv_type == "f16" and gpu is not None and not gpu.profile.shader_f16:
        raise DeviceError(f"kv_type='f16' needs the shader-f16 feature, which {gpu.profile.name} lacks; "
                          "use kv_type='f32' or 'q8_0'")
    return kv_type
