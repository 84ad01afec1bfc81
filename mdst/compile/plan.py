"""Compilation of a recorded graph into a `Plan`: a fixed list of GPU dispatches.

A plan is compiled for a number of rows (1 for decode, a power of two up to the prefill chunk)
and an output mode. Compilation picks each op's kernel specialization, assigns activation
buffers by liveness from the shared pool, packs every dispatch's parameters into one uniform
buffer, and fixes the workgroup counts. Bind groups are built once per KV cache and reused for
every step; a step then writes the small step buffer, encodes one compute pass and submits once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..gpu import native
from ..ir.fusion import fuse
from ..ir.graph import Graph, Node, Value
from ..ir.ops import (Add, Attention, AttentionSpec, Embed, ExpertMatmul, Glu, LastRow, Matmul, Mul, RmsNorm, Rope,
                      RopeSpec, RopeStore, Route, ShortConv, View)
from ..kernels import (GRID_TYPES, TYPE_STEPS, KernelSpec, PipelineCache, grid_words, pack_params, weight_align,
                       wgsl_const)
from ..memory.kv_cache import KV_TYPES, CacheLayout, GpuKVCache, KVPool
from ..memory.pool import Liveness
from ..memory.weights import GpuWeight, WeightStore
from ..format.quants import dequantize

_native = native.dispatch_calls()

# Constants the kernels own, read from their WGSL (kernels/README.md).
MAX_GROUPS = wgsl_const("common.wgsl", "MAX_GROUPS")  # workgroups in x before a dispatch spills into y
TOPK_SLICE = wgsl_const("topk.wgsl", "SLICE")  # columns per top-k workgroup
ARGMAX_SLICE = wgsl_const("argmax.wgsl", "SLICE")  # columns per argmax workgroup
GEMM_WG = wgsl_const("matmul_rows.wgsl", "WG")  # matmul_rows: threads a workgroup (a TY x TX grid)
GPU_TOP_K = wgsl_const("common.wgsl", "KMAX")  # candidates a top-k slice keeps
DRAW_WORDS = wgsl_const("common.wgsl", "DRAW_WORDS")  # a draw's fixed words (a batched plan's draws: one a row)
GEMV_WG = 256  # matmul_row: threads per workgroup (lanes per row, rows per group and groups per unit are presets)
# Weights in a unit of matmul_row's step, for the types with a step of their own (the generic step's
# unit is 4 * gemv_chunk weights); the most rows a group of lanes computes.
GEMV_UNIT = {t: wgsl_const(f"quant/{t}.matmul_row.wgsl", "UNIT") for t in TYPE_STEPS["matmul_row"]}
GEMV_MAX_ROWS = wgsl_const("matmul_row.wgsl", "MAX_ROWS")
GEMV_MAX_XR = wgsl_const("matmul_row.wgsl", "MAX_XR")  # matmul_row: the most rows of x (batched decode)
GEMV_Q8_SHORT = 96   # units a row at most (k <= 3,072 in 32-weight units) for Presets.gemv_lanes_q8
GROUP_MAX_EXPERTS = wgsl_const("expert_groups.wgsl", "MAX_EXPERTS")  # experts the grouping of rows takes


def gemm_tile(tr: int = 4, tc: int = 4, ty: int = 16) -> tuple[int, int]:
    """matmul_rows' (rows, outputs) a workgroup: `tr` rows and `tc` outputs a thread on a grid of `ty` thread rows."""
    return ty * tr, GEMM_WG // ty * tc


def gemm_groups(n: int, m: int, tr: int = 4, tc: int = 4, ty: int = 16) -> tuple[int, int, int]:
    """matmul_rows' workgroup count over [m, n] (gemm_tile's arguments)."""
    rows, cols = gemm_tile(tr, tc, ty)
    return (ceil_div(n, cols), ceil_div(m, rows), 1)


GEMM_MIN_SLICE = 256   # matmul_rows: the least k a slice of a split k takes (8 steps of the 64-row tile)


def gemm_slices(rows: int, groups: int, k: int, presets: Any) -> int:
    """matmul_rows' slices of k for a dispatch of `groups` tiles over `rows`: for 64 rows or fewer (a batched
    step, a short prompt), enough for presets.gemm_split_groups workgroups in all (none where it is 0), each
    slice GEMM_MIN_SLICE of k or more."""
    if not presets.gemm_split_groups or rows > gemm_tile()[0]:
        return 1
    return max(1, min(ceil_div(presets.gemm_split_groups, groups), k // GEMM_MIN_SLICE))


def gemm_f16(c: "Compilation") -> bool:
    """Whether matmul_rows runs its f16 variant (step sums in f16, added into f32): the presets', where the adapter
    has shader-f16."""
    return bool(c.presets.gemm_f16 and c.compiler.gpu.profile.shader_f16)


def gemm_block(rows: int, presets: Any) -> tuple[int, int, int]:
    """matmul_rows' (rows, outputs a thread, thread rows TY): the presets' square tiles; for 64 rows or fewer, 4
    rows a thread, and with presets.gemm_short the shortest of the 16-, 32- and 64-row tiles that holds them
    (4 outputs a thread in the short ones: their steps are short already)."""
    if rows > gemm_tile()[0]:
        return presets.gemm_rows, presets.gemm_cols, 16
    ty = next(t for t in (4, 8, 16) if gemm_tile(ty=t)[0] >= rows or t == 16) if presets.gemm_short else 16
    return 4, (presets.gemm_cols if ty == 16 else 4), ty


def gemv_lanes(k: int, wtype: str, presets: Any, q8: bool = False) -> int:
    """matmul_row's threads per row: the preset (with 8-bit activations, short rows' own, if set), fewer where a
    row has fewer units to share out. With 8-bit activations each workgroup first quantizes all of x, a cost
    that fewer lanes a row (more rows a workgroup) share out over more rows; long rows keep the preset."""
    units = k // GEMV_UNIT[wtype] if wtype in GEMV_UNIT else ceil_div(k, 4 * presets.gemv_chunk)
    short = q8 and presets.gemv_lanes_q8 and units <= GEMV_Q8_SHORT
    return min(presets.gemv_lanes_q8 if short else presets.gemv_lanes, 1 << max(0, units - 1).bit_length())


def gemv_rows(n: int, lanes: int, presets: Any, most: int | None = None) -> int:
    """matmul_row's rows per group of lanes (ROWS): `most` (default the one-row preset; a batched step's rows of x
    take batch_gemv_rows), at most `lanes`, and halved while the dispatch would have fewer than
    presets.gemv_threads threads (a short matrix still fills the GPU)."""
    rows = max(1, min(presets.gemv_rows if most is None else most, lanes, GEMV_MAX_ROWS))
    while rows > 1 and ceil_div(n, rows) * lanes < presets.gemv_threads:
        rows //= 2
    return rows


def gemv_groups(n: int, lanes: int, rows: int = 1, wg: int = GEMV_WG) -> tuple[int, int, int]:
    """matmul_row's workgroup count for n output rows, `lanes` a row and `rows` a group of lanes
    (rows * wg / lanes rows a workgroup)."""
    return grid1(ceil_div(n, rows * (wg // lanes)))


def gemv_launch(xr: int, lanes: int, q8: bool, rows: int = 1) -> dict[str, int]:
    """matmul_row's constants for xr > 1 rows of x (batched decode) against `rows` weight rows a group (at most
    16 sums a group: fewer rows where xr is larger): lanes enough for a thread per sum's store; the sums of 9 ..
    16 (4 slots of vec4s) fill 16 KiB of workgroup memory at 256 threads, so 128; with Q8, XQ values a row of x
    quantized at a time, 4 KiB of bytes for all the rows as one row's 4,096."""
    if xr == 1:
        return {"WG": GEMV_WG, "TPR": lanes, "ROWS": rows}
    rows = max(1, min(rows, GEMV_MAX_XR // xr))
    rows = 1 << (rows.bit_length() - 1)   # 1, 2 or 4
    tile = rows * xr
    wg = GEMV_WG if tile <= 8 else GEMV_WG // 2
    out = {"WG": wg, "TPR": min(wg, max(lanes, 1 << (tile - 1).bit_length())), "XR": xr, "ROWS": rows}
    return {**out, "XQ": max(256, 4096 // xr // 256 * 256)} if q8 else out


_plan_keys = itertools.count(1)  # engines keep bind groups per (cache, plan key): unique per process
USES_KV = {"kv_store", "attention", "attention_rows", "rope_store"}  # kernels composed with the cache format (kv/<format>.wgsl)
ATTN_WG = 128  # attention's workgroup: its workgroup memory (QS, SCORES, red) fits WebGPU's 16 KiB at this size
ATTN_MAX_GW, ATTN_QS, ATTN_SCORES = (wgsl_const("attention.wgsl", n) for n in ("MAX_GW", "QS", "SCORES"))
MERGE_MAX_SPLITS = wgsl_const("attention_merge.wgsl", "MAX_SPLITS")
FLASH_KVMAX, FLASH_RED, FLASH_NV = (wgsl_const("attention_rows.wgsl", n) for n in ("KVMAX", "RED", "NV"))
FLASH_MAX_KEYS = 16  # attention_rows: keys a tile at most


def attention_group(heads: int, kv_heads: int, head_dim: int, lanes: int) -> int:
    """Query heads one attention workgroup computes: the most of a KV head's that its workgroup memory holds."""
    if head_dim % 4 or head_dim > 4 * ATTN_WG:
        raise ValueError(f"attention head_dim {head_dim} is not supported: it must be a multiple of 4 and at "
                         f"most {4 * ATTN_WG}")
    group = heads // kv_heads
    fits = min(ATTN_MAX_GW, ATTN_QS // head_dim, ATTN_SCORES // (ATTN_WG // lanes))
    return max(g for g in range(1, group + 1) if group % g == 0 and g <= fits)


def flash_tiles(heads: int, kv_heads: int, head_dim: int, wg: int = ATTN_WG) -> tuple[int, int, int]:
    """attention_rows' (query heads GW, rows BR, keys BC) for a workgroup of `wg` threads: a query vector takes the
    threads that hold its dims (FLASH_NV fours each), the workgroup as many vectors as that leaves, of as many of
    one KV head's query heads as divide the group, and a tile as many keys as its memory holds."""
    attention_group(heads, kv_heads, head_dim, 1)   # the head_dim check
    threads = -(-head_dim // (4 * FLASH_NV))
    if threads > wg:
        raise ValueError(f"attention head_dim {head_dim} needs more than {wg} threads a query vector")
    vectors = wg // threads
    group = heads // kv_heads
    gw = max(g for g in range(1, group + 1) if group % g == 0 and g <= vectors)
    keys = min(FLASH_MAX_KEYS, FLASH_KVMAX // head_dim, FLASH_RED // wg)
    return gw, vectors // gw, keys


def attention_splits(keys: int, presets: Any) -> tuple[int, int]:
    """Decode attention's (least keys a split, splits) over a cache of `keys` positions: enough splits of the
    preset's length for them all, at most `attention_splits` (and the merge's most); the kernel lengthens the
    splits to cover the positions filled so far (reference.split_keys)."""
    cap = min(presets.attention_splits or MERGE_MAX_SPLITS, MERGE_MAX_SPLITS)
    return presets.attention_split, min(cap, ceil_div(keys, presets.attention_split))


def merge_launch(heads: int, head_dim: int, rows: int = 1) -> tuple[dict[str, int], tuple[int, int, int]]:
    """attention_merge's constants and grid: a head's dims in up to 4 workgroups (DQ, a divisor of its fours),
    so that each thread's chain of split loads is that much shorter."""
    dq = next(d for d in (4, 2, 1) if (head_dim // 4) % d == 0)
    return {"HD": head_dim, "DQ": dq}, (heads, rows, dq)


ACTIVATIONS = {act: wgsl_const("common.wgsl", f"ACT_{act.upper()}") for act in ("silu", "gelu_tanh")}


def grid1(groups: int) -> tuple[int, int, int]:
    """A 1-D workgroup count, spilling into y past 65535 (kernels use flat_wg)."""
    groups = max(1, groups)
    return (min(groups, MAX_GROUPS), -(-groups // MAX_GROUPS), 1)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class CacheSlot:
    """A binding resolved when the plan is bound to a cache (its slot of its pool) or, for a batched plan's shared
    dispatches, to a KV pool (whole): buffer `index` of kind "k", "v" or "conv"."""

    index: int
    which: str

    def resolve(self, target: GpuKVCache | KVPool) -> Any:
        return target.binding(self.which, self.index)


# Ops that read a sequence's own state: a batched plan runs them once per sequence, on its row, with its own step
# words and cache. Attention and RoPE run once over all the rows, reading each row's position and pool slot from
# the step's table of sequences (POOL); so does every other op, which reads neither.
PER_SEQUENCE = (ShortConv,)


@dataclass
class SequenceSlot:
    """A binding of a batched plan's per-sequence dispatch, resolved when the plan is bound to a sequence: its
    own buffer `which` ("step": its step words)."""

    which: str


@dataclass
class Dispatch:
    """One compute dispatch."""

    spec: KernelSpec
    pipeline: Any
    resources: list[Any]          # per binding, in binding order: GPU buffer, KV, or (buffer, offset, size)
    workgroups: tuple[int, int, int]
    params: dict[str, Any]
    label: str                    # what it computes, for profiles ("matmul.attn_q", "attention", "add")
    layer: int | None = None      # the block it belongs to (None: before the first or after the last)
    param_offset: int = 0
    block: int | None = None      # batched plans: the per-sequence run it belongs to (None: shared by all rows)
    grid: Any = None              # a GRID_TYPES weight's grid, bound as group 1 (kernels/quant/grid.wgsl)


@dataclass
class Segment:
    """Dispatches [start, end) of a paged plan, run after copying `page_ins` (slot, matrix, part) into slots."""

    start: int
    end: int
    page_ins: list[tuple[int, str, int]]


@dataclass
class OutputPart:
    """Columns [col0, col0 + cols) of the output, held in `buffer` as [rows_out, cols]."""

    buffer: Any
    col0: int
    cols: int


@dataclass
class Plan:
    """A compiled forward step."""

    rows: int
    output_rows: str
    pick: str                     # "logits" (read back), "argmax" or "sample" (read back a token id)
    dispatches: list[Dispatch]
    outputs: list[OutputPart]
    rows_out: int
    out_cols: int
    ids_buffer: Any | None
    scratch: list[Any]            # buffers only this plan uses (token picking)
    param_buffer: Any
    activation_bytes: int         # peak bytes of activation slots this plan holds
    naive_activation_bytes: int   # what one buffer per value would take
    key: int = field(default=0)
    segments: list[Segment] = field(default_factory=list)  # set when the plan reads paged weights
    batched: bool = False         # one row per sequence over a KV pool (Compiler.compile's batch)
    draw_from: int | None = None  # batched plans: dispatches from here on are the sampling chain over every row
    draws: Any = None             # batched plans: [rows, DRAW_WORDS] each row's draw (zeros: it does not draw)
    sampled: Any = None           # batched plans: [rows] the tokens the chain picked

    @property
    def per_sequence(self) -> bool:
        """Whether a batched plan runs dispatches once per sequence."""
        return any(d.block is not None for d in self.dispatches)

    def bind(self, device: Any, target: GpuKVCache | KVPool, store: dict[int, list[Any]],
             own: dict[str, Any] | None = None) -> list[Any]:
        """Each dispatch's bind groups (0, and 1 for a grid) for `target`, built on first use and kept in `store`
        (the caller's, one per cache or pool).

        A batched plan is bound twice over: its shared dispatches once per KV pool (`target` the pool its
        sequences share), its per-sequence ones for each sequence with its cache and `own` buffers
        (SequenceSlot); the other kind's entries are None.
        """
        groups = store.get(self.key)
        if groups is None:
            pooled = isinstance(target, KVPool)
            groups = [self._group(device, d, target, own) if not self.batched or (d.block is None) == pooled
                      else None for d in self.dispatches]
            store[self.key] = groups
        return groups

    @staticmethod
    def _group(device: Any, d: Dispatch, target: GpuKVCache | KVPool, own: dict[str, Any] | None) -> list[Any]:
        entries = []
        for i, r in enumerate(d.resources):
            if isinstance(r, CacheSlot):
                r = r.resolve(target)
            elif isinstance(r, SequenceSlot):
                r = own[r.which]
            if isinstance(r, tuple):
                buf, off, size = r
                entries.append({"binding": i, "resource": {"buffer": buf, "offset": off, "size": size}})
            else:
                entries.append({"binding": i, "resource": {"buffer": r, "offset": 0, "size": r.size}})
        groups = [device.create_bind_group(layout=d.pipeline.get_bind_group_layout(0), entries=entries)]
        if d.grid is not None:
            groups.append(device.create_bind_group(layout=d.pipeline.get_bind_group_layout(1), entries=[
                {"binding": 0, "resource": {"buffer": d.grid, "offset": 0, "size": d.grid.size}}]))
        return groups

    def encode_batch(self, encoder: Any, shared: list[Any], sequences: list[list[Any]], draws: bool) -> None:
        """Record a batched plan in one compute pass: each shared dispatch once (`shared`: its bind groups), each
        per-sequence run once per sequence, one sequence after the other (`sequences`: each one's bind groups;
        their scratch buffers are reused in turn), the sampling chain only where a row `draws`."""
        items, i, n = [], 0, len(self.dispatches) if draws else self.draw_from
        while i < n:
            block = self.dispatches[i].block
            if block is None:
                items.append((self.dispatches[i], shared[i]))
                i += 1
                continue
            j = i
            while j < n and self.dispatches[j].block == block:
                j += 1
            for groups in sequences:
                items.extend((self.dispatches[m], groups[m]) for m in range(i, j))
            i = j
        self._record(encoder, items)

    def encode(self, encoder: Any, groups: list[list[Any]], start: int = 0, end: int | None = None,
               timestamps: Any = None) -> None:
        """Record dispatches [start, end) (default: all) into one compute pass.

        Through wgpu-py's public API each dispatch costs several microseconds of Python; where
        wgpu-native's C entry points are reachable (wgpu is pinned) they are called directly,
        skipping repeated pipelines. The pass itself comes from the public API either way.
        """
        self._record(encoder, zip(self.dispatches[start:end], groups[start:end]), timestamps)

    @staticmethod
    def _record(encoder: Any, items: Any, timestamps: Any = None) -> None:
        """Record (dispatch, bind group) pairs in one compute pass."""
        cp = encoder.begin_compute_pass(timestamp_writes=timestamps) if timestamps else encoder.begin_compute_pass()
        if _native is None:
            for d, g in items:
                cp.set_pipeline(d.pipeline)
                set_groups(cp, g)
                cp.dispatch_workgroups(*d.workgroups)
        else:
            lib, null = _native
            h, last = cp._internal, None
            set_pipeline, set_group = lib.wgpuComputePassEncoderSetPipeline, lib.wgpuComputePassEncoderSetBindGroup
            dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
            for d, g in items:
                if d.pipeline is not last:
                    set_pipeline(h, d.pipeline._internal)
                    last = d.pipeline
                for i, gi in enumerate(g):
                    set_group(h, i, gi._internal, 0, null)
                dispatch(h, *d.workgroups)
        cp.end()


def set_groups(cp: Any, groups: list[Any]) -> None:
    """Set a dispatch's bind groups (Plan.bind's list for it) on a compute pass."""
    for i, g in enumerate(groups):
        cp.set_bind_group(i, g)


class Compiler:
    """Turns graphs into plans for one device, weight store, pool and cache layout. It keeps what plans
    share (RoPE tables); each `compile` call keeps its own state in a `Compilation`."""

    def __init__(self, gpu: Any, pipelines: PipelineCache, weights: WeightStore, pool: Any,
                 step_buffer: Any, draw_buffer: Any, layout: CacheLayout, create_buffer: Any):
        self.gpu, self.pipelines, self.weights, self.pool = gpu, pipelines, weights, pool
        self.step, self.draw = step_buffer, draw_buffer
        self.layout = layout
        self.create = create_buffer
        self._rope_tables: dict[RopeSpec, tuple[GpuWeight, float]] = {}   # one GPU table per distinct spec
        self._store_tables: dict[int, GpuWeight] = {}   # rope_store's frequencies and norms, by layer
        self._grids: dict[str, Any] = {}   # GRID_TYPES' grids, by weight type

    def vector(self, name: str) -> np.ndarray:
        """A small tensor's values on the host (norm weights, RoPE frequency factors)."""
        t = self.weights.gguf.tensors[name]
        return dequantize(self.weights.gguf.tensor_bytes(name), t.type, t.shape).ravel()

    def rope_freqs(self, spec: RopeSpec) -> tuple[np.ndarray, float]:
        """A RoPE spec's per-pair frequencies and magnitude scale."""
        return spec.table(self.vector(spec.freq_factors) if spec.freq_factors else None)

    def rope_table(self, spec: RopeSpec) -> tuple[GpuWeight, float]:
        """The GPU frequency table of a RoPE spec (one per distinct spec)."""
        got = self._rope_tables.get(spec)
        if got is None:
            freq, mscale = self.rope_freqs(spec)
            got = (self.weights.put_vector(f"rope.{len(self._rope_tables)}", freq), mscale)
            self._rope_tables[spec] = got
        return got

    def store_table(self, op: RopeStore) -> GpuWeight:
        """rope_store's table for a layer: RoPE frequencies, then the q and k norm weights (zeros if none)."""
        got = self._store_tables.get(op.attention.layer)
        if got is None:
            hd = op.head_dim
            norms = [self.vector(n) if n else np.zeros(hd, np.float32) for n in (op.q_norm, op.k_norm)]
            got = self.weights.put_vector(f"rope_store.{op.attention.layer}",
                                          np.concatenate([self.rope_freqs(op.rope)[0]] + norms))
            self._store_tables[op.attention.layer] = got
        return got

    def grid(self, wtype: str) -> Any:
        """The GPU buffer of a GRID_TYPES type's grid (one per type)."""
        got = self._grids.get(wtype)
        if got is None:
            got = self._grids[wtype] = self.weights.put_vector(f"grid.{wtype}", grid_words(wtype)).parts[0].buffer
        return got

    def compile(self, graph: Graph, rows: int, pick: str, alloc_rows: int | None = None, presets: Any = None,
                on_node: Callable[[Node, int, Any, int], None] | None = None, batch: bool = False) -> Plan:
        """A plan for `rows` rows (the step may use fewer: the rest is padding), ending as `pick` says:
        "logits", "argmax" (greedy token ids) or "sample" (the sampling chain; last-row graphs only).

        `batch`: a batched decode plan of an all-rows graph, row i one token of sequence i: the PER_SEQUENCE ops
        lower as one-row dispatches bound per sequence (its step words, cache and row), the rest once over all
        rows; it ends in the argmax of every row and, per sequence that draws, the sampling chain over its row.

        Activation buffers are sized for `alloc_rows` (default: rows): plans compiled for every row
        count up to it then ask the pool for the same slots and share them. `presets`: kernel presets
        other than the device's (the oracle compiles the other kind of adapter's plans). `on_node(node,
        dispatches so far, output buffer, output bytes)` is called after each node is lowered.
        """
        alloc_rows = rows if alloc_rows is None else alloc_rows
        c = Compilation(self, presets or self.gpu.profile.presets)
        c.batched, c.alloc_rows = batch, alloc_rows
        graph = fuse(graph, row_fusions=rows == 1 or c.presets.matmul == "by_output",
                     paired=self.weights.layout.paired, runs=self.weights.layout.runs if rows == 1 else None)
        live = c.live
        last = graph.last_uses()
        # Views (fusion.py's sibling matmuls) are column ranges of a run's output, which lives
        # until the last of them is read; RoPE in place on a view is a view too.
        views: dict[int, int] = {}
        for node in graph.nodes:
            if isinstance(node.op, View) or (isinstance(node.op, Rope) and node.inputs[0].id in views):
                views[node.out.id] = views.get(node.inputs[0].id, node.inputs[0].id)
        for v, base in views.items():
            last[base] = max(last[base], last.get(v, -1))
        bufs: dict[int, Any] = {}
        outputs: list[OutputPart] = []
        cap = self.gpu.profile.max_binding_size

        def nrows(v: Value) -> int:
            return rows if v.rows == "n" else 1

        def arows(v: Value) -> int:
            return alloc_rows if v.rows == "n" else 1

        for i, node in enumerate(graph.nodes):
            out = node.out
            c.layer = layer_of(node, c.layer)
            if isinstance(node.op, View):   # one-row plans only: a contiguous range of the run's output
                bufs[out.id] = (bufs[node.inputs[0].id], 4 * node.op.col0, 4 * out.cols)
                continue
            in_place = isinstance(node.op, Rope)
            if in_place and node.inputs[0].id in views:
                bufs[out.id] = bufs[node.inputs[0].id]
            elif in_place and last[node.inputs[0].id] == i:
                live.share(out.id, node.inputs[0].id)
                bufs[out.id] = bufs[node.inputs[0].id]
            elif out is graph.output and arows(out) * out.cols * 4 > cap:
                bufs[out.id] = None  # split output: one buffer per weight part, made below
            else:
                bufs[out.id] = live.take(out.id, arows(out) * out.cols * 4)
            x = [bufs[v.id] for v in node.inputs]
            c.outputs = None
            if out is graph.output:
                outputs = c.outputs = self._output_parts(node, bufs[out.id], arows(out), out.cols, live)
            lowering = LOWERINGS.get(type(node.op))
            if lowering is None:
                raise NotImplementedError(f"no GPU kernel for op {node.op.name!r}")
            per_sequence = batch and isinstance(node.op, PER_SEQUENCE)
            c.block = i if per_sequence else None
            lowering(c, node, x, bufs[out.id], 1 if per_sequence else nrows(out))
            c.block = None
            if on_node is not None:
                on_node(node, len(c.ds), bufs[out.id], nrows(out) * out.cols * 4)
            freed = set()
            for v in node.inputs:
                vid = views.get(v.id, v.id)
                if last.get(vid) == i and vid not in freed and not in_place:
                    live.free(vid)
                    freed.add(vid)

        rows_out = nrows(graph.output)
        ids_buffer, scratch = None, []
        if pick == "argmax":
            ids_buffer, scratch = self._argmax(c, outputs, rows_out)
        elif pick == "sample":
            if rows_out != 1:
                raise ValueError("sampling plans produce one row")
            ids_buffer, scratch = self._sample(c, outputs)
        draw_from = draws = sampled = None
        if batch:
            if pick != "argmax" or graph.output_rows != "all":
                raise ValueError("batched plans run an all-rows graph ending in argmax (and the draws' chain)")
            draw_from = len(c.ds)
            draws = self.create(4 * DRAW_WORDS * rows, "sample.draws")
            sampled, more = self._sample(c, outputs, draws, rows)
            scratch += [draws, *more]
        param_buffer = self._pack(c.ds)
        return Plan(rows, graph.output_rows, pick, c.ds, outputs, rows_out, graph.output.cols, ids_buffer,
                    scratch, param_buffer, live.peak_bytes, live.naive_bytes, key=next(_plan_keys),
                    segments=c.segments(), batched=batch, draw_from=draw_from, draws=draws, sampled=sampled)

    def _output_parts(self, node: Node, buf: Any, rows_out: int, cols: int, live: Liveness) -> list[OutputPart]:
        if buf is not None:
            return [OutputPart(buf, 0, cols)]
        if not isinstance(node.op, Matmul):
            raise RuntimeError("only a matmul output can be split across buffers")
        w = self.weights.weights[node.op.weight]
        return [OutputPart(live.take(-1 - k, rows_out * p.rows * 4), p.row0, p.rows) for k, p in enumerate(w.parts)]

    def _argmax(self, c: Compilation, outputs: list[OutputPart], rows_out: int) -> tuple[Any, list[Any]]:
        """The largest logit of each ARGMAX_SLICE columns of every part, then the best of those per row."""
        slices = [ceil_div(o.cols, ARGMAX_SLICE) for o in outputs]
        best = self.create(rows_out * sum(slices) * 8, "argmax.best")
        ids = self.create(max(16, rows_out * 4), "argmax.ids")
        for o, first, n in zip(outputs, itertools.accumulate([0] + slices[:-1]), slices):
            c.dispatch("argmax", [o.buffer, best, None], (n, rows_out, 1),
                       {"cols": o.cols, "col0": o.col0, "slice0": first, "slices": sum(slices)}, "argmax")
        c.dispatch("argmax_merge", [best, ids, None], (rows_out, 1, 1), {"slices": sum(slices)}, "argmax")
        return ids, [best]

    def _sample(self, c: Compilation, outputs: list[OutputPart], draw: Any = None, rows: int = 1
                ) -> tuple[Any, list[Any]]:
        """Penalties on each logits part (in place), top-k per 2048-column slice, then the chain and the draw, for
        each of `rows` logits rows with its draw in `draw` (by default the step's draw buffer; a batched plan's
        holds a draw a row); returns the buffer of the picked tokens and the scratch."""
        draw = draw or self.draw
        slices = [ceil_div(o.cols, TOPK_SLICE) for o in outputs]
        cand = self.create(rows * sum(slices) * GPU_TOP_K * 8, "sample.cand")
        ids = self.create(max(16, 4 * rows), "sample.ids")
        for o in outputs:
            c.dispatch("penalize", [draw, o.buffer, None], (1, rows, 1), {"cols": o.cols, "col0": o.col0}, "sample")
        for o, first in zip(outputs, itertools.accumulate([0] + slices[:-1])):
            c.dispatch("topk", [draw, o.buffer, cand, None], (ceil_div(o.cols, TOPK_SLICE), rows, 1),
                       {"cols": o.cols, "col0": o.col0, "slice0": first, "slices": sum(slices)}, "sample")
        c.dispatch("sample", [draw, cand, ids, None], (1, rows, 1), {"slices": sum(slices)}, "sample")
        return ids, [cand]

    def _pack(self, ds: list[Dispatch]) -> Any:
        """Write every dispatch's parameters into one uniform buffer; fill in the last binding."""
        align = max(16, int(self.gpu.profile.limits.get("min-uniform-buffer-offset-alignment", 256)))
        blobs = [pack_params(d.spec.name, d.params) for d in ds]
        offsets, total = [], 0
        for b in blobs:
            offsets.append(total)
            total += -(-len(b) // align) * align
        data = bytearray(total)
        for o, b in zip(offsets, blobs):
            data[o:o + len(b)] = b
        buf = self.create(max(total, 16), "params", uniform=True)
        self.gpu.queue.write_buffer(buf, 0, bytes(data))
        for d, o, b in zip(ds, offsets, blobs):
            d.param_offset = o
            d.resources[-1] = (buf, o, len(b))
        return buf


class Compilation:
    """One `Compiler.compile` call's state: the dispatches so far, what each paging slot holds, the layer."""

    def __init__(self, compiler: Compiler, presets: Any):
        self.compiler, self.presets = compiler, presets
        self.ds: list[Dispatch] = []
        self.live = Liveness(compiler.pool)
        self.layer: int | None = None
        self.block: int | None = None   # batched plans: the per-sequence run being lowered (None: shared)
        self.batched = False   # a batched decode plan (Compiler.compile's batch)
        self.alloc_rows = 1    # rows an activation buffer holds (Compiler.compile's alloc_rows)
        self.outputs: list[OutputPart] | None = None   # the output's parts while lowering the output's node
        self._lru: dict[int, tuple[str, int] | None] = {i: None for i in range(len(compiler.weights.slots))}
        self._misses: list[tuple[int, int, str, int]] = []  # (dispatch index, slot, matrix, part)

    def dispatch(self, name: str, resources: list[Any], groups: tuple[int, int, int], params: dict[str, Any],
                 label: str, wtype: str | None = None, f16: bool = False, **constants: int) -> None:
        """Append a dispatch of kernel `name` specialized by `constants` (and the cache format where it reads it);
        `f16`: the f16 variant (for a KV kernel, the cache format decides)."""
        kv = None
        if name in USES_KV:
            kv, f16 = KV_TYPES[self.compiler.layout.kv_type]
        spec = KernelSpec(name, wtype, f16, tuple(sorted(constants.items())), kv)
        self.ds.append(Dispatch(spec, self.compiler.pipelines.get(spec), resources, groups, params, label,
                                self.layer, block=self.block,
                                grid=self.compiler.grid(wtype) if wtype in GRID_TYPES else None))

    @property
    def pool(self) -> dict[str, bool]:
        """The cache kernels' constants: POOL in a batched plan, whose rows read their sequences' positions and
        pool slots from the step's table."""
        return {"POOL": True} if self.batched else {}

    @property
    def step(self) -> Any:
        """The step words a dispatch binds: the step buffer, or in a per-sequence run the sequence's own."""
        return self.compiler.step if self.block is None else SequenceSlot("step")

    def weight(self, name: str, part: int) -> Any:
        """The buffer the next dispatch binds for a weight part: its own, or the least recently used slot."""
        store = self.compiler.weights
        m = store.matrix(name)
        p = m.parts[part]
        align = weight_align(m.type.name)
        if p.offset % align or m.row_bytes % align:
            raise RuntimeError(f"{name} part {part} at byte {p.offset}: {m.type.name} is read in {align}-byte words")  # layout bug
        if not p.paged:
            return p.buffer
        slot = next((s for s, held in self._lru.items() if held == (name, part)), None)
        if slot is None:
            slot = next(iter(self._lru))  # least recently used
            self._misses.append((len(self.ds), slot, name, part))
        del self._lru[slot]
        self._lru[slot] = (name, part)   # now the most recently used
        return store.slots[slot]

    def segments(self) -> list[Segment]:
        """Split a paged plan where a slot must change content (before its first reader)."""
        if not self._misses:
            return []
        starts = sorted({i for i, *_ in self._misses} | {0})
        n = len(self.ds)
        return [Segment(a, b, [(slot, name, part) for i, slot, name, part in self._misses if i == a])
                for a, b in zip(starts, starts[1:] + [n])]


# ---- lowerings: one per op class, each emitting its kernel's dispatches ---------------------------
# Each takes (compilation, node, input buffers, output buffer, rows of the output).

def _embed(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    op: Embed = node.op
    w = c.compiler.weights.weights[op.table]
    for pi, p in enumerate(w.parts):
        c.dispatch("get_rows", [c.weight(w.name, pi), c.compiler.step, y, None], (ceil_div(op.cols // 4, 64), r, 1),
                   {"cols": op.cols, "row0": p.row0, "part_rows": p.rows, "row_bytes": w.row_bytes,
                    "scale": op.scale, "w0": p.offset}, "embed", w.type.name)


def _rms_norm(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    op: RmsNorm = node.op
    w = c.compiler.weights.weights[op.weight]
    n_vec = r * node.out.cols // op.dim
    # a workgroup a vector: 256 threads for a hidden state (each thread's loop over the vector is a chain of
    # loads: benchmarks/dispatch_floor.py), 64 for a head's
    c.dispatch("rms_norm", [x[0], w.parts[0].buffer, y, x[1] if op.add else x[0], None], grid1(n_vec),
               {"dim": op.dim, "n_vec": n_vec, "eps": op.eps}, label_of(node), ADD=op.add,
               WG=256 if op.dim >= 512 else 64)


def _binary(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    n = r * node.out.cols
    c.dispatch("binary", [x[0], x[1], y, None], grid1(ceil_div(n, 64)), {"n": n}, node.op.name,
               OP=0 if isinstance(node.op, Add) else 1)


def _glu(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    n = r * node.out.cols
    c.dispatch("glu", [x[0], x[1], y, None], grid1(ceil_div(n, 64)), {"n": n}, "glu", ACT=ACTIVATIONS[node.op.act])


def _rope(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    op: Rope = node.op
    table, mscale = c.compiler.rope_table(op.spec)
    heads = node.out.cols // op.head_dim
    if y is not x[0]:
        raise RuntimeError("rope runs in place: its input must not be read afterwards")
    c.dispatch("rope", [c.step, table.parts[0].buffer, y, None], (ceil_div(heads * op.spec.n_rot // 2, 64), r, 1),
               {"heads": heads, "head_dim": op.head_dim, "n_rot": op.spec.n_rot, "neox": int(op.spec.neox),
                "mscale": mscale}, "rope", **c.pool)


# attention's ROPE parameters when it is off (its kn, vn and aux bindings then take any buffer)
ATTN_NO_ROPE = {"n_rot": 0, "neox": 0, "mscale": 1.0, "eps": 0.0, "q_norm": 0, "k_norm": 0}


def _rope_params(c: Compilation, op: RopeStore | None) -> dict[str, Any]:
    """The parameters rope_store and attention's ROPE share (ATTN_NO_ROPE without `op`)."""
    if op is None:
        return ATTN_NO_ROPE
    return {"n_rot": op.rope.n_rot, "neox": int(op.rope.neox), "mscale": c.compiler.rope_freqs(op.rope)[1],
            "eps": op.eps, "q_norm": int(op.q_norm is not None), "k_norm": int(op.k_norm is not None)}


def _rope_store(c: Compilation, op: RopeStore, x: list[Any], y: Any, r: int) -> None:
    """Per-head q/k norms, RoPE and the KV-cache append in one dispatch, for attention's many-row plans."""
    s = op.attention
    layout = c.compiler.layout
    li = layout.kv_index(s.layer)
    lk = layout.kv[li]
    c.dispatch("rope_store", [c.step, CacheSlot(li, "k"), CacheSlot(li, "v"), x[0], x[1], x[2], y,
                              c.compiler.store_table(op).parts[0].buffer, None], (s.heads + s.kv_heads, r, 1),
               {"heads": s.heads, "kv_heads": s.kv_heads, "head_dim": op.head_dim, "ring": lk.ring,
                "stride": layout.stride(lk), **_rope_params(c, op)}, "rope_store", **c.pool)


def _attention(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    s: AttentionSpec = node.op.spec
    rope: RopeStore | None = node.op.rope
    layout = c.compiler.layout
    li = layout.kv_index(s.layer)
    lk = layout.kv[li]
    k, v = CacheSlot(li, "k"), CacheSlot(li, "v")
    lanes = c.presets.attention_lanes
    gw = attention_group(s.heads, s.kv_heads, s.head_dim, lanes)
    # a row a sequence (decode, batched or not), and a workgroup for each KV head's query heads: the attention
    # kernel does rope_store's work
    decode = r == 1 or c.batched
    fold = rope is not None and decode and gw * s.kv_heads == s.heads and rope.rope.n_rot % 8 == 0
    q = x[0]
    if rope is not None and not fold:
        q = c.live.take(-id(node) - 1, c.alloc_rows * s.heads * s.head_dim * 4)   # the rotated queries
        _rope_store(c, rope, x, q, r)
    elif rope is None:
        kvb = wgsl_const(f"kv/{KV_TYPES[layout.kv_type][0]}.wgsl", "KVB")  # values an invocation stores
        c.dispatch("kv_store", [c.step, k, v, x[1], x[2], None], (ceil_div(lk.kv_dim // kvb, 64), r, 1),
                   {"kv_dim": lk.kv_dim, "ring": lk.ring, "stride": layout.stride(lk)}, "kv_store", **c.pool)
    params = {"heads": s.heads, "kv_heads": s.kv_heads, "ring": lk.ring, "window": s.window, "scale": s.scale,
              "softcap": s.softcap, "temp_scale": s.temp_scale, "temp_floor": s.temp_floor}
    if not decode and c.presets.prefill_attention == "flash":
        wg = c.presets.flash_threads
        fgw, br, bc = flash_tiles(s.heads, s.kv_heads, s.head_dim, wg)
        c.dispatch("attention_rows", [c.step, k, v, q, y, None], (s.heads // fgw, ceil_div(r, br), 1),
                   params, "attention", WG=wg, GW=fgw, BR=br, BC=bc, HD=s.head_dim)
    else:
        # ROPE's own inputs: the step's keys and values and rope_store's table (the query again where unused)
        extra = [x[1], x[2], c.compiler.store_table(rope).parts[0].buffer] if fold else [q, q, q]
        consts = {"LPK": lanes, "GW": gw, "WG": ATTN_WG, "HD": s.head_dim, **({"ROPE": True} if fold else {}),
                  **c.pool}
        params |= _rope_params(c, rope if fold else None) | {"stride": layout.stride(lk)}
        if decode and c.presets.attention_split:
            # decode: splits of keys in parallel, then a merge (flash-decoding); a batched step's rows share
            # one row's splits, which fill the GPU alike
            split, splits = attention_splits(min(lk.ring, s.window or lk.ring), c.presets)
            splits = ceil_div(splits, r)
            part = c.live.take(-id(node), r * s.heads * splits * (s.head_dim + 2) * 4)
            c.dispatch("attention", [c.step, k, v, q, part, *extra, None], (s.heads // gw, r, splits), params,
                       "attention", SPLIT=split, **consts)
            merge, grid = merge_launch(s.heads, s.head_dim, r)
            c.dispatch("attention_merge", [c.step, part, y, None], grid, {"heads": s.heads, "splits": splits},
                       "attention", **merge)
            c.live.free(-id(node))
        else:
            c.dispatch("attention", [c.step, k, v, q, y, *extra, None], (s.heads // gw, r, 1), params, "attention",
                       **consts)
    if q is not x[0]:
        c.live.free(-id(node) - 1)


def _shortconv(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    op: ShortConv = node.op
    w = c.compiler.weights.weights[op.weight]
    c.dispatch("shortconv", [c.step, x[0], w.parts[0].buffer,
                             CacheSlot(c.compiler.layout.conv_index(op.spec.layer), "conv"), y, None],
               (ceil_div(op.spec.channels, 64), 1, 1), {"channels": op.spec.channels, "kernel": op.spec.kernel},
               "shortconv")


def _last_row(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    c.dispatch("take_row", [c.step, x[0], y, None], (ceil_div(node.out.cols, 64), 1, 1),
               {"cols": node.out.cols}, "last_row")


def _q8_round(c: Compilation, node: Node, x: Any, n: int, key: int) -> Any:
    """Scratch (liveness key `key`, for the caller to free) holding the n values of x through their 8-bit round
    trip (q8_round.wgsl): for kernels that multiply floats, where the one-row matmul rounds x itself."""
    out = c.live.take(key, n * 4)
    c.dispatch("q8_round", [x, out, None], grid1(ceil_div(n // 32, 64)), {"blocks": n // 32}, label_of(node))
    return out


def _matmul(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    """A matmul with its fusions (fusion.py): GLU with `up`, RMSNorm of x first, the residual (last input)."""
    op: Matmul = node.op
    store = c.compiler.weights
    w = store.matrix(op.weight)
    k = node.inputs[0].cols
    glu = ACTIVATIONS[op.act] if op.up is not None else 0
    norm = store.weights[op.norm].parts[0].buffer if op.norm is not None else None
    res = x[-1] if op.res else None
    fused = {"NORM": norm is not None, "RES": res is not None, "GLU": glu}
    q8 = {"Q8": True} if op.q8 else {}   # x through its 8-bit round trip (set only when on: f32 keys unchanged)
    by_output = c.presets.matmul == "by_output"
    gemv = r == 1 or (c.batched and r <= min(c.presets.batch_gemv, GEMV_MAX_XR))
    # the GEMM tile multiplies x's round trip written once, so it keeps f32 activations' tiles
    xin = _q8_round(c, node, x[0], r * k, -id(node) - 1) if op.q8 and not (by_output or gemv) else x[0]
    outputs = c.outputs
    for pi, p in enumerate(w.parts):
        if outputs is not None and len(outputs) > 1:
            target, o0, stride = outputs[pi].buffer, 0, p.rows
        else:
            target, o0, stride = y, p.row0, node.out.cols
        params = {"k": k, "n": p.rows, "row_bytes": w.row_bytes, "o0": o0, "w0": p.offset, "eps": op.eps}
        wbuf = c.weight(w.name, pi)
        spare = x[0]  # bound where a fusion is off: every declared binding needs a buffer
        args = [wbuf, x[0], target, res or spare, norm or spare, None]
        if by_output:
            # CPU adapters: outputs across lanes, rows in registers (see matmul_by_output.wgsl); no more rows a lane
            # than the plan has (a batched step's 4 rows at R = 8 took longer than 4 one-row steps on lavapipe)
            rr = min(r, 8)
            params.update(m=r, y_stride=stride)
            c.dispatch("matmul_by_output", args, (ceil_div(p.rows, 256), ceil_div(r, rr), 1), params, label_of(node),
                       w.type.name, R=rr, **fused, **q8)
            continue
        if r > 1 and (norm is not None or glu):
            raise RuntimeError("the many-row matmul fuses the residual add only")
        if gemv:
            # one row (decode), or a batched decode's few (each weight read once for all of them); a prefill's
            # short chunk and a batched step's more rows take the GEMM tile
            lanes = gemv_lanes(k, w.type.name, c.presets, op.q8)
            launch = gemv_launch(r, lanes, op.q8, gemv_rows(p.rows, lanes, c.presets,
                                                            None if r == 1 else c.presets.batch_gemv_rows))
            params["y_stride"] = stride
            c.dispatch("matmul_row", args, gemv_groups(p.rows, launch["TPR"], launch["ROWS"], launch["WG"]), params,
                       label_of(node), w.type.name, GPT=c.presets.gemv_chunk, **launch, **fused, **q8)
        else:
            params.update(m=r, y_stride=stride)
            del params["eps"]
            tr, tc, ty = gemm_block(r, c.presets)
            f16 = gemm_f16(c)
            gx, gy, _ = gemm_groups(p.rows, r, tr, tc, ty)
            slices = gemm_slices(r, gx * gy, k, c.presets)
            tile = {"TR": tr, "TC": tc, "TY": ty, "STEP_SUMS": f16}
            if slices == 1:
                c.dispatch("matmul_rows", [wbuf, xin, target, res or spare, None], (gx, gy, 1), params,
                           label_of(node), w.type.name, f16, RES=res is not None, **tile)
                continue
            # slices of k into scratch [slices, r, n], then their sum (and the residual) into the target
            parts = c.live.take(-id(node), slices * r * p.rows * 4)
            c.dispatch("matmul_rows", [wbuf, xin, parts, spare, None], (gx, gy, slices),
                       {**params, "o0": 0, "y_stride": p.rows}, label_of(node), w.type.name, f16, **tile)
            c.dispatch("sum_splits", [parts, res or spare, target, None], grid1(ceil_div(r * p.rows, 64)),
                       {"n": p.rows, "m": r, "splits": slices, "o0": o0, "y_stride": stride}, label_of(node),
                       RES=res is not None)
            c.live.free(-id(node))
    if xin is not x[0]:
        c.live.free(-id(node) - 1)


def _route(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    op: Route = node.op
    bias = c.compiler.weights.weights[op.bias].parts[0].buffer if op.bias else x[0]   # x: a spare binding
    c.dispatch("route", [x[0], bias, y, None], grid1(r),
               {"n_expert": node.inputs[0].cols, "k": op.k, "rows": r, "norm": int(op.norm)}, "route",
               SIGMOID=op.gating == "sigmoid", BIAS=op.bias is not None)


def _expert_matmul(c: Compilation, node: Node, x: list[Any], y: Any, r: int) -> None:
    """GPUs: the one-row matmul (decode) or the tiled one over the rows grouped by expert (prefill), each in its
    EXPERTS mode; CPU adapters and expert tensors split across bindings: an invocation per output, a dispatch per
    part (layout.py splits on expert boundaries). A fused `up` (one-row plans) is stored after the gates."""
    op: ExpertMatmul = node.op
    w = c.compiler.weights.matrix(op.weight)
    k = w.shape[0]
    cols = node.inputs[0].cols
    n_expert = sum(p.rows for p in w.parts) // op.n_out
    glu = {"GLU": ACTIVATIONS[op.act], "N_EXPERT": n_expert} if op.up is not None else {}
    q8 = {"Q8": True} if op.q8 else {}   # as _matmul's
    per_output = c.presets.matmul == "by_output" or len(w.parts) > 1 or n_expert > GROUP_MAX_EXPERTS
    if op.q8 and (per_output or r > 1):   # kernels of float x take its round trip; the one-row matmul rounds x
        x = [_q8_round(c, node, x[0], r * cols, -id(node) - 2), *x[1:]]
    if per_output:
        for pi, p in enumerate(w.parts):
            e0 = p.row0 // op.n_out
            params = {"k": k, "n": op.n_out, "row_bytes": w.row_bytes, "w0": p.offset, "e0": e0,
                      "e1": e0 + p.rows // op.n_out, "used": op.k, "x_slot": 0 if cols == k else k,
                      "x_stride": cols, "acc": int(pi > 0)}
            c.dispatch("matmul_experts", [c.weight(w.name, pi), x[0], x[1], y, None],
                       (ceil_div(op.n_out, 64), r, 1 if op.combine else op.k), params, label_of(node), w.type.name,
                       COMBINE=op.combine, **glu)
        if op.q8:
            c.live.free(-id(node) - 2)
        return
    wbuf, w0 = c.weight(w.name, 0), w.parts[0].offset
    experts = {"EXPERTS": op.k, "X_SLOT": cols != k}
    if r == 1:
        lanes = gemv_lanes(k, w.type.name, c.presets, op.q8)
        launch = gemv_launch(1, lanes, op.q8, gemv_rows(op.n_out * (1 if op.combine else op.k), lanes, c.presets))
        gx, gy, _ = gemv_groups(op.n_out, lanes, launch["ROWS"])
        # the route in the residual's binding; x in the unread norm weight's
        c.dispatch("matmul_row", [wbuf, x[0], y, x[1], x[0], None], (gx, gy, 1 if op.combine else op.k),
                   {"k": k, "n": op.n_out, "row_bytes": w.row_bytes, "o0": 0, "w0": w0, "eps": 0.0, "y_stride": 0},
                   label_of(node), w.type.name, GPT=c.presets.gemv_chunk, COMBINE=op.combine, **launch, **experts,
                   **glu, **q8)
        return
    if glu:
        raise RuntimeError("the many-row expert matmul does not gate")   # fusion.py fuses GLU in one-row plans only
    lists = c.live.take(-id(node), (n_expert + 1 + r * op.k) * 4)
    c.dispatch("expert_groups", [x[1], lists, None], (1, 1, 1), {"n_expert": n_expert, "used": op.k, "rows": r},
               label_of(node))
    slots = c.live.take(-id(node) - 1, r * op.k * op.n_out * 4) if op.combine else y
    # 64-row tiles, though an expert gets a fraction of the rows: short tiles without slices of k (the experts'
    # z rules slices out) were slower on the H200
    tc = c.presets.gemm_cols
    f16 = gemm_f16(c)
    c.dispatch("matmul_rows", [wbuf, x[0], slots, lists, None], (*gemm_groups(op.n_out, r, 4, tc)[:2], n_expert),
               {"k": k, "n": op.n_out, "row_bytes": w.row_bytes, "o0": 0, "m": r, "y_stride": op.n_out, "w0": w0},
               label_of(node), w.type.name, f16, TR=4, TC=tc, STEP_SUMS=f16, **experts)
    c.live.free(-id(node))
    if op.combine:
        c.dispatch("expert_combine", [slots, x[1], y, None], grid1(ceil_div(r * op.n_out, 64)),
                   {"n": op.n_out, "used": op.k, "rows": r}, label_of(node))
        c.live.free(-id(node) - 1)
    if op.q8:
        c.live.free(-id(node) - 2)


LOWERINGS: dict[type, Callable[[Compilation, Node, list[Any], Any, int], None]] = {
    Embed: _embed, Matmul: _matmul, RmsNorm: _rms_norm, Add: _binary, Mul: _binary, Glu: _glu, Rope: _rope,
    Attention: _attention, ShortConv: _shortconv, LastRow: _last_row, Route: _route,
    ExpertMatmul: _expert_matmul,
}


def label_of(node: Node) -> str:
    """A profile label: the op and the role of its weight ("matmul.attn_q", "rms_norm.output_norm")."""
    if node.weights:
        parts = node.weights[0].split(".")
        return f"{node.op.name}.{parts[2] if parts[0] == 'blk' and len(parts) >= 3 else parts[0]}"
    return node.op.name


def layer_of(node: Node, current: int | None) -> int | None:
    """The block a node belongs to: from its weights' names or its spec, else the block it follows."""
    for name in node.weights:
        parts = name.split(".")
        if parts[0] == "blk" and len(parts) >= 3 and parts[1].isdigit():
            return int(parts[1])
    spec = getattr(node.op, "spec", None)
    return getattr(spec, "layer", current) if spec is not None else current


STEP_POS0, STEP_ROWS, STEP_ROW0, STEP_SEQS, STEP_TOKENS = (wgsl_const("common.wgsl", f"STEP_{n}")
                                                           for n in ("POS0", "ROWS", "ROW0", "SEQS", "TOKENS"))


def step_words(pos0: int, n_rows: int, ids: Any = (), rows: int | None = None, row0: int = 0,
               table: Any = ()) -> np.ndarray:
    """The step buffer's words for n_rows rows from pos0, sitting at activation row `row0`: the token ids padded
    with zeros to `rows` (the plan's rows; default n_rows), then a batched step's `table` of its rows' (position,
    pool slot), padded likewise."""
    rows = n_rows if rows is None else rows
    data = np.zeros(STEP_TOKENS + rows + (2 * rows if len(table) else 0), dtype=np.uint32)
    data[STEP_POS0], data[STEP_ROWS], data[STEP_ROW0] = pos0, n_rows, row0
    data[STEP_TOKENS:STEP_TOKENS + len(ids)] = ids
    if len(table):
        data[STEP_SEQS] = STEP_TOKENS + rows
        data[STEP_TOKENS + rows:STEP_TOKENS + rows + 2 * len(table)] = np.ravel(table)
    return data


def write_step(queue: Any, step_buffer: Any, ids: np.ndarray, pos0: int, rows: int, table: Any = ()) -> None:
    """Fill the step buffer for a step of `ids` at pos0 (see step_words)."""
    queue.write_buffer(step_buffer, 0, step_words(pos0, len(ids), ids, rows, table=table).tobytes())
