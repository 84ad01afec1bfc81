"""How fast the host can move file bytes to the GPU through mapped MAP_WRITE staging buffers, as
JSON lines: preadv into a MAP_WRITE buffer mapped through wgpu-native, then a GPU copy out of it,
for several buffer counts, chunk sizes and filling threads. Weight loading and paging use one
thread and two 2 MiB buffers (mdst/memory/weights.py), well under this ceiling: four buffers
filled by four threads there measured no faster, so the staging fill is not what bounds them.

On a discrete GPU MAP_WRITE buffers may live in device memory the CPU writes over PCIe (BAR), so
this is the host-to-GPU path's ceiling, not the file's. Each configuration runs twice in one process
and the second is kept (first touches of fresh buffers are slower). Linux (preadv) only.
Usage: python benchmarks/staging_fill.py FILE [--mib 256]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

MIB = 1 << 20


def rate(gpu, fd: int, file_size: int, buffers: int, chunk: int, threads: int, total: int) -> float:
    """GB/s moving `total` bytes: each thread fills its share of the buffers in turn and queues the copies."""
    import wgpu

    from mdst.gpu import native

    dev, usage = gpu.device, wgpu.BufferUsage
    staging = [dev.create_buffer(size=chunk, usage=usage.MAP_WRITE | usage.COPY_SRC) for _ in range(buffers)]
    target = dev.create_buffer(size=chunk * buffers, usage=usage.STORAGE | usage.COPY_DST)
    reps = total // chunk

    def work(first: int) -> None:   # buffers first, first + threads, ...: this thread's alone
        for i in range(first, reps, threads):
            k, at = i % buffers, (i * chunk) % (file_size - chunk)
            native.fill(dev, staging[k], chunk, lambda mem: os.preadv(fd, [mem], at), 60.0)
            enc = dev.create_command_encoder()
            enc.copy_buffer_to_buffer(staging[k], 0, target, k * chunk, chunk)
            dev.queue.submit([enc.finish()])

    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    gpu.wait_idle()
    seconds = time.perf_counter() - t0
    for b in staging + [target]:
        b.destroy()
    return total / seconds / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file", help="any large file (a GGUF); it should be in the page cache")
    ap.add_argument("--mib", type=int, default=256, help="bytes moved per configuration")
    args = ap.parse_args()

    from mdst.gpu import native
    from mdst.gpu.device import resolve

    if not native.can_map_directly():
        raise SystemExit("this wgpu build lacks the entry points for mapping through wgpu-native")
    gpu = resolve("gpu")
    fd, size = os.open(args.file, os.O_RDONLY), os.path.getsize(args.file)
    host = bytearray(2 * MIB)
    t0 = time.perf_counter()
    for i in range(64):
        os.preadv(fd, [memoryview(host)], (i * 2 * MIB) % (size - 2 * MIB))
    print(json.dumps({"benchmark": "staging_fill", "adapter": gpu.profile.name, "what": "preadv into host memory",
                      "gb_per_s": round(64 * 2 * MIB / (time.perf_counter() - t0) / 1e9, 2)}))
    for buffers, chunk_mib, threads in [(2, 2, 1), (4, 2, 1), (2, 8, 1), (4, 8, 1), (4, 2, 2), (4, 2, 4), (8, 2, 8)]:
        figures = [rate(gpu, fd, size, buffers, chunk_mib * MIB, threads, args.mib * MIB) for _ in range(2)]
        print(json.dumps({"benchmark": "staging_fill", "adapter": gpu.profile.name, "buffers": buffers,
                          "chunk_mib": chunk_mib, "threads": threads, "gb_per_s": round(figures[1], 2),
                          "first_gb_per_s": round(figures[0], 2)}))


if __name__ == "__main__":
    main()
