"""Host memory while loading a model, as JSON: peak RSS growth minus the bytes held in GPU buffers.

On a software adapter (lavapipe) GPU buffers live in host memory, so they are subtracted; what
remains is what loading itself costs. Two figures:

- weights: the GPU engine's setup alone (weights streamed from the mmap into GPU buffers) on an
  already parsed file; target <= 25% of the file size;
- the driver's first upload (a 4 KiB buffer written once), measured before and apart from both;
- whole load: everything `mdst.load` does, the tokenizer included (for Gemma 3's 262k-token
  vocabulary, HF tokenizers needs far more than the weights' path).

Peaks come from the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs), so
short spikes inside native code are counted. Linux only.
Usage: python benchmarks/load_memory.py [MODEL] [--context N]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> int:
    """Reset the RSS high-water mark; returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def measure(build, software: bool) -> dict:
    before = reset_peak()
    t0 = time.perf_counter()
    obj = build()
    seconds = time.perf_counter() - t0
    growth = status_bytes("VmHWM") - before
    gpu = sum(obj.bytes_by_kind.values()) if hasattr(obj, "bytes_by_kind") else obj.memory_report()["gpu_bytes_total"]
    return {"seconds": round(seconds, 3), "peak_rss_growth_bytes": growth, "gpu_bytes": gpu,
            "overhead_bytes": growth - (gpu if software else 0), "object": obj}


class _Upload:
    bytes_by_kind = {"probe": 4096}


def first_upload(gpu) -> _Upload:
    """One 4 KiB buffer written and waited for: the driver's lazily made upload machinery, measured apart."""
    import numpy as np
    import wgpu

    buf = gpu.device.create_buffer(size=4096, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST)
    gpu.device.queue.write_buffer(buf, 0, np.zeros(1024, np.float32))
    gpu.wait_idle()
    buf.destroy()
    return _Upload()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()

    import mdst
    from mdst.device import resolve, resolve_kv_type, resolve_precision
    from mdst.engine import GpuEngine, build_graphs
    from mdst.gguf import GGUFFile
    from mdst.models import family
    from mdst.packaged import resolve_model_path

    path = resolve_model_path(args.model)
    size = os.path.getsize(path)
    gpu = resolve("gpu")  # the driver's own start-up memory is not loading's
    software = gpu.profile.software
    first_use = measure(lambda: first_upload(gpu), software)   # nor what its first upload sets up
    first_use.pop("object")

    f = GGUFFile(path)
    fam = family(f.architecture)
    cfg = fam.Config.from_gguf(f)
    graphs = build_graphs(lambda b: fam.forward(b, cfg), f)
    kv_type = resolve_kv_type(None, resolve_precision("auto", gpu), gpu)
    weights = measure(lambda: GpuEngine(gpu, f, graphs, args.context, kv_type), software)
    weights.pop("object").close()
    f.close()

    whole = measure(lambda: mdst.load(path, device="gpu", context_length=args.context), software)
    model = whole.pop("object")
    print(json.dumps({
        "benchmark": "load_memory", "model": path, "backend": model.backend, "file_bytes": size,
        "gpu_buffers_in_host_memory": software,
        "first_upload_rss_growth_bytes": first_use["peak_rss_growth_bytes"],
        "weights_path": {**weights, "overhead_fraction_of_file": round(weights["overhead_bytes"] / size, 4),
                         "target_fraction": 0.25},
        "whole_load": {**whole, "overhead_fraction_of_file": round(whole["overhead_bytes"] / size, 4)},
    }, indent=2))
    model.close()


if __name__ == "__main__":
    main()
