"""Host memory while loading a model, as JSON: peak RSS growth minus the bytes held in GPU buffers.

GPU buffers that live in host memory are subtracted: all of them on a software adapter (lavapipe),
the buffer mapped for reading results (kind "staging") on a discrete GPU. What remains is what
loading itself costs. On the H100 that buffer's 16 MiB came as a 64 MiB block of pinned host memory
(wgpu's allocator takes host-visible memory in blocks; the block shows as a /dev/nvidiactl mapping):
its other 48 MiB stay counted as overhead. Figures:

- the driver's start-up (opening the first device) and its first upload (a 4 KiB buffer written
  once), measured before and apart from the rest;
- phases: the steps of a load one at a time, in `Model`'s order, each kept alive for the next
  (parsing the file, the tokenizer, the graphs, the fit prediction on a counting allocator, dropped
  after, as a load does); what each grew RSS by at its peak and kept;
- weights path: then the GPU engine's setup (weights streamed from the file into GPU buffers);
  targets: overhead <= 25% of the file size and <= 10% of the GPU bytes;
- whole load: everything `mdst.load` does (a second device, so without the driver's start-up).

Peaks come from the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs), so
short spikes inside native code are counted. Each figure also names the mappings whose resident
bytes grew most (from /proc/self/smaps), so a driver's own memory can be told from mdst's. Linux only.
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


def rss_by_mapping() -> dict[str, int]:
    """Resident bytes per mapping name (a file's path, [heap], or [anon] for unnamed memory)."""
    out: dict[str, int] = {}
    name = "[anon]"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):   # a mapping's first line: range perms offset dev inode [path]
                name = head[5] if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:":
                out[name] = out.get(name, 0) + int(head[1]) * 1024
    return out


def grown(before: dict[str, int], after: dict[str, int], top: int = 6) -> dict[str, int]:
    """The mappings whose resident bytes grew most between two rss_by_mapping() snapshots."""
    growth = {k: v - before.get(k, 0) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in growth.items() if v > 0), key=lambda kv: -kv[1])[:top])


def reset_peak() -> int:
    """Reset the RSS high-water mark; returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


HOST_KINDS = ("staging",)   # buffers mapped for reading: host memory on a discrete GPU as well


def measure(build, software: bool) -> dict:
    maps = rss_by_mapping()
    before = reset_peak()
    t0 = time.perf_counter()
    obj = build()
    seconds = time.perf_counter() - t0
    growth = status_bytes("VmHWM") - before
    kept = status_bytes("VmRSS") - before
    by_mapping = grown(maps, rss_by_mapping())
    by_kind = getattr(obj, "bytes_by_kind", None)
    if by_kind is None:
        by_kind = obj.memory_report()["gpu_bytes"] if hasattr(obj, "memory_report") else {}
    in_host = sum(n for kind, n in by_kind.items() if software or kind in HOST_KINDS)
    return {"seconds": round(seconds, 3), "peak_rss_growth_bytes": growth, "rss_growth_bytes": kept,
            "gpu_bytes": sum(by_kind.values()), "gpu_bytes_in_host_memory": in_host, "overhead_bytes": growth - in_host,
            "rss_growth_by_mapping": by_mapping, "object": obj}


class _Upload:
    bytes_by_kind = {"probe": 4096}


def predict(gpu, f, graphs, context: int, kv_type: str) -> dict:
    """Model's fit prediction: the engine's setup, every plan and a cache on a counting allocator, then dropped."""
    from mdst.gpu.allocator import CountingAllocator
    from mdst.runtime.engine import GpuEngine
    from mdst.memory.fit import predict as fit_predict

    fit_predict(GpuEngine(CountingAllocator(gpu.profile), f, graphs, context, kv_type))
    return {}


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
    from mdst.gpu.allocator import GpuAllocator
    from mdst.gpu.device import resolve, resolve_kv_type
    from mdst.runtime.engine import GpuEngine, build_graphs
    from mdst.format.gguf import GGUFFile
    from mdst.models import family
    from mdst.packaged import resolve_model_path
    from mdst.text.tokenizer import Tokenizer

    path = resolve_model_path(args.model)
    size = os.path.getsize(path)
    opened = measure(lambda: resolve("gpu"), False)   # the driver's own start-up memory is not loading's
    gpu = opened.pop("object")
    software = gpu.profile.software
    first_use = measure(lambda: first_upload(gpu), software)   # nor what its first upload sets up
    first_use.pop("object")

    phases = {}

    def phase(name: str, build):
        phases[name] = measure(build, software)
        return phases[name].pop("object")

    f = phase("parse", lambda: GGUFFile(path))
    fam = family(f.architecture)
    cfg = fam.Config.from_gguf(f)
    tokenizer = phase("tokenizer", lambda: Tokenizer.from_gguf(f))
    graphs = phase("graphs", lambda: build_graphs(lambda b: fam.forward(b, cfg), f))
    kv_type = resolve_kv_type(None, gpu)
    phase("fit_prediction", lambda: predict(gpu, f, graphs, args.context, kv_type))
    weights = measure(lambda: GpuEngine(GpuAllocator(gpu), f, graphs, args.context, kv_type), software)
    weights.pop("object").close()
    f.close()

    # the tokenizer stays alive, so the whole load cannot reuse the memory it freed
    whole = measure(lambda: mdst.load(path, device="gpu", context_length=args.context), software)
    model = whole.pop("object")
    del tokenizer
    print(json.dumps({
        "benchmark": "load_memory", "model": path, "backend": model.backend, "file_bytes": size,
        "all_gpu_buffers_in_host_memory": software,
        "device_open_rss_growth_bytes": opened["peak_rss_growth_bytes"],
        "device_open_rss_growth_by_mapping": opened["rss_growth_by_mapping"],
        "first_upload_rss_growth_bytes": first_use["peak_rss_growth_bytes"],
        "phases": {name: {k: v for k, v in p.items() if not k.startswith("gpu_bytes") and k != "overhead_bytes"}
                   for name, p in phases.items()},
        "weights_path": {**weights, "overhead_fraction_of_file": round(weights["overhead_bytes"] / size, 4),
                         "target_fraction": 0.25,
                         "overhead_fraction_of_gpu_bytes": round(weights["overhead_bytes"] / weights["gpu_bytes"], 4),
                         "target_fraction_of_gpu_bytes": 0.10},
        "whole_load": {**whole, "overhead_fraction_of_file": round(whole["overhead_bytes"] / size, 4),
                       "overhead_fraction_of_gpu_bytes": round(whole["overhead_bytes"] / whole["gpu_bytes"], 4)},
    }, indent=2))
    model.close()


if __name__ == "__main__":
    main()
