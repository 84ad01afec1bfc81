"""Typed ops: every op class has a GPU lowering, and the fused ops' numpy references compute what the
unfused graph computes (so a fusion is checked on the host before any kernel runs it)."""

from __future__ import annotations

import numpy as np
import pytest

from mdst.ir import ops
from mdst import reference
from mdst.ir.fusion import fuse
from mdst.format.gguf import GGUFFile
from mdst.ir.graph import build
from mdst.memory.kv_cache import CacheLayout, CpuKVCache
from mdst.memory.layout import glu_pairs, run_name, sibling_runs
from mdst.models import family
from mdst.compile.plan import LOWERINGS
from mdst.dev import synth

PRESETS = ("llama-tiny", "qwen3-tiny", "ministral3-tiny", "lfm2-tiny", "gemma3-tiny", "qwen3moe-tiny", "lfm2moe-tiny")


def test_every_op_but_view_has_one_lowering():
    classes = set(ops.Op.__subclasses__())
    assert ops.View in classes
    assert set(LOWERINGS) == classes - {ops.View}   # a view binds a range of its input; no kernel


@pytest.mark.parametrize("activations", ["f32", "q8"])
@pytest.mark.parametrize("rows", [1, 7])
@pytest.mark.parametrize("preset", PRESETS)
def test_fused_graph_computes_the_unfused_graph(tmp_path_factory, preset, rows, activations):
    path = tmp_path_factory.mktemp("ops") / f"{preset}.gguf"
    synth.write(path, preset, types="Q8_0", seed=3)
    gguf = GGUFFile(str(path))
    fam = family(gguf.architecture)
    config = fam.Config.from_gguf(gguf)
    graph = build(lambda b: fam.forward(b, config), gguf.tensors, "last", activations)
    pairs = glu_pairs(graph, gguf.tensors)
    runs = {run_name(r): r for r in sibling_runs(graph, gguf.tensors, pairs)}
    fused = fuse(graph, row_fusions=True, paired={g for g, _ in pairs}, runs=runs if rows == 1 else None)
    kinds = {type(n.op) for n in fused.nodes}
    assert len(fused.nodes) < len(graph.nodes)
    assert any(isinstance(n.op, ops.Attention) and n.op.rope for n in fused.nodes)
    assert any(isinstance(n.op, ops.Matmul) and n.op.norm for n in fused.nodes)
    if rows == 1 and runs:
        assert ops.View in kinds
    # q8: every matmul (all on Q8_0 weights) keeps its 8-bit round trip through the fusions
    assert {n.op.q8 for g in (graph, fused) for n in g.nodes if isinstance(n.op, ops.Matmul)} == {activations == "q8"}

    weights = reference.ReferenceWeights(gguf)
    layout = CacheLayout.of(graph, 64, 16)
    caches = [CpuKVCache.allocate(layout), CpuKVCache.allocate(layout)]
    ids = np.random.default_rng(rows).integers(0, synth.PRESETS[preset].n_vocab, 12 + rows)
    for pos0, chunk in ((0, ids[:12]), (12, ids[12:])):   # a prompt, then a step of `rows` rows
        want, got = (reference.run(g, weights, cache, chunk, pos0) for g, cache in zip((graph, fused), caches))
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for a, b in zip(caches[0].k + caches[0].v + caches[0].conv, caches[1].k + caches[1].v + caches[1].conv):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5)
