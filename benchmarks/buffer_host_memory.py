"""Host memory each kind of GPU buffer costs on this adapter, as JSON lines: RSS growth by kind
(anonymous, file-backed, shared) and the mappings it grew in (from /proc/self/smaps).

A discrete GPU's driver may back mappable buffers with pinned host memory, and wgpu's allocator
takes host-visible memory in blocks, so a small readback buffer can cost far more host RSS than
its size; this shows how much, one step at a time. Linux only.
Usage: python benchmarks/buffer_host_memory.py
"""

from __future__ import annotations

import json

import numpy as np

from load_memory import grown, rss_by_mapping, status_bytes

MIB = 1 << 20


def main() -> None:
    import wgpu

    from mdst.gpu.device import resolve

    gpu = resolve("gpu")
    dev, U = gpu.device, wgpu.BufferUsage
    kept: list = []   # every buffer stays alive, so each step adds to the last

    def buffer(size: int, usage: int) -> None:
        kept.append(dev.create_buffer(size=size, usage=usage))

    def mapped_write(size: int) -> None:
        b = dev.create_buffer(size=size, usage=U.MAP_WRITE | U.COPY_SRC)
        b.map_sync(wgpu.MapMode.WRITE, 0, size)
        b.write_mapped(np.ones(size // 4, np.float32), 0)
        b.unmap()
        kept.append(b)

    def filled(size: int) -> None:
        b = dev.create_buffer(size=size, usage=U.STORAGE | U.COPY_DST)
        for off in range(0, size, 2 * MIB):
            dev.queue.write_buffer(b, off, np.ones(min(2 * MIB, size - off) // 4, np.float32))
        kept.append(b)

    def pipeline() -> None:
        code = ("@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n"
                "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3u) { a[i.x] *= 2.0; }")
        kept.append(dev.create_compute_pipeline(layout="auto", compute={
            "module": dev.create_shader_module(code=code), "entry_point": "main"}))

    steps = [("storage 4 KiB, written once", lambda: filled(4096)),
             ("MAP_WRITE 2 MiB, written", lambda: mapped_write(2 * MIB)),
             ("a second MAP_WRITE 2 MiB", lambda: mapped_write(2 * MIB)),
             ("MAP_READ 16 MiB", lambda: buffer(16 * MIB, U.MAP_READ | U.COPY_DST)),
             ("a second MAP_READ 1 MiB", lambda: buffer(MIB, U.MAP_READ | U.COPY_DST)),
             ("storage 20 x 8 MiB, unwritten", lambda: [buffer(8 * MIB, U.STORAGE | U.COPY_DST) for _ in range(20)]),
             ("storage 64 MiB, written through write_buffer", lambda: filled(64 * MIB)),
             ("a first compute pipeline", pipeline)]
    keys = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    for name, step in steps:
        maps, kinds = rss_by_mapping(), {k: status_bytes(k) for k in keys}
        step()
        gpu.wait_idle()
        print(json.dumps({"benchmark": "buffer_host_memory", "adapter": gpu.profile.name, "step": name,
                          **{k: status_bytes(k) - v for k, v in kinds.items()},
                          "grew_in": grown(maps, rss_by_mapping(), 4)}))


if __name__ == "__main__":
    main()
