"""Graph rewrites that let the GPU do several ops in one dispatch (each saves a dispatch's launch and
a round trip of its output through memory). The numpy reference runs the unfused graph, so every
fusion is checked against it by the model tests.

- gate/up + GLU: `glu(matmul(h, Wg), matmul(h, Wu))` -> one matmul over the two weights stored
  one after the other (`memory.layout.glu_pairs` finds them for the weight layout);
- RMSNorm prologue: `matmul(rms_norm(x, g), W)` -> the matmul normalizes x itself (one-row steps,
  or kernels that take rows in registers; a norm read by several matmuls is computed by each);
- sibling matmuls (one-row plans): matmuls of one input, weight type and row length, stored back
  to back (`memory.layout.sibling_runs`; q, k and v of attention) -> one matmul over the run whose output the
  members' values view at their column offsets;
- residual epilogue: `add(a, matmul(h, W))` -> the matmul adds a;
- post-norm + add: `add(a, rms_norm(b, g))` -> one RMSNorm that adds a (Gemma's post-norms);
- attention inputs: per-head q/k RMSNorm, both RoPEs and the KV-cache append -> the attention's `rope`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from .graph import Graph, Node, Value
from .ops import Add, Attention, ExpertMatmul, Glu, Matmul, RmsNorm, Rope, RopeStore, View


def uses(graph: Graph) -> Counter:
    """How many times each value is read (the graph output counts once)."""
    n: Counter = Counter(v.id for node in graph.nodes for v in node.inputs)
    n[graph.output.id] += 1
    return n


def fuse(graph: Graph, row_fusions: bool, paired: set[str], runs: dict[str, tuple[str, ...]] | None = None) -> Graph:
    """The graph with fusible ops merged. `row_fusions`: the plan's matmul kernels can normalize
    their input and gate their output (one-row and in-register kernels can; tiled GEMMs cannot);
    `paired`: gate weights stored with their up weights; `runs` (one-row plans): sibling matrices
    stored as one, by run name."""
    nodes, next_id = list(graph.nodes), graph._next
    if runs:
        nodes, next_id = _fuse_siblings(nodes, runs, next_id)
    if row_fusions:
        nodes = _fuse_glu(graph, nodes, paired)
        nodes = _fuse_norm_prologue(graph, nodes)
    nodes = _fuse_residual(graph, nodes)
    nodes = _fuse_post_norm_add(graph, nodes)
    nodes = _fuse_attention_inputs(graph, nodes)
    out = Graph(graph.output_rows)
    out.nodes, out.output, out._next = nodes, graph.output, next_id
    return out


def _count(graph: Graph, nodes: list[Node]) -> Counter:
    n: Counter = Counter(v.id for node in nodes for v in node.inputs)
    n[graph.output.id] += 1
    return n


def _producers(nodes: list[Node]) -> dict[int, Node]:
    return {n.out.id: n for n in nodes}


def plain_matmul(n: Node) -> bool:
    """Whether n is a matmul of one matrix with no fusion."""
    return isinstance(n.op, Matmul) and n.op.plain


def _fuse_siblings(nodes: list[Node], runs: dict[str, tuple[str, ...]], next_id: int) -> tuple[list[Node], int]:
    """Each run's members -> one matmul over the run and a view per member; with the next free value id."""
    member = {m: name for name, run in runs.items() for m in run}
    found: dict[str, dict[str, Node]] = {}
    for n in nodes:
        if plain_matmul(n) and n.weights[0] in member:
            found.setdefault(member[n.weights[0]], {})[n.weights[0]] = n
    out = []
    for n in nodes:
        name = member.get(n.weights[0]) if plain_matmul(n) else None
        group = found.get(name) if name else None
        if group is None or len(group) != len(runs[name]) or len({g.inputs[0].id for g in group.values()}) != 1:
            out.append(n)
            continue
        if n is not group[runs[name][0]]:
            continue   # a later member: its view came with the first
        whole = Value(next_id, n.out.rows, sum(group[m].out.cols for m in runs[name]), name)
        next_id += 1
        out.append(Node(Matmul(name, whole.cols, members=runs[name], q8=n.op.q8), n.inputs, whole))
        col0 = 0
        for m in runs[name]:
            out.append(Node(View(col0, group[m].out.cols), (whole,), group[m].out))
            col0 += group[m].out.cols
    return out, next_id


def _fuse_glu(graph: Graph, nodes: list[Node], paired: set[str]) -> list[Node]:
    prod, out, drop = _producers(nodes), [], set()
    for n in nodes:
        if isinstance(n.op, Glu):
            g, u = (prod[v.id] for v in n.inputs)
            both = (type(g.op) is type(u.op) and isinstance(g.op, (Matmul, ExpertMatmul)) and g.op.q8 == u.op.q8)
            if both and g.op.weight in paired:
                drop |= {id(g), id(u)}
                out.append(Node(replace(g.op, up=u.op.weight, act=n.op.act), g.inputs, n.out))
                continue
        out.append(n)
    return [n for n in out if id(n) not in drop]


def _fuse_norm_prologue(graph: Graph, nodes: list[Node]) -> list[Node]:
    prod = _producers(nodes)
    count = _count(graph, nodes)
    readers: Counter = Counter()
    out = []
    for n in nodes:
        src = prod.get(n.inputs[0].id) if isinstance(n.op, Matmul) else None
        if src is not None and isinstance(src.op, RmsNorm) and src.op.dim == src.out.cols and n.op.norm is None:
            n = Node(replace(n.op, norm=src.op.weight, eps=src.op.eps), (src.inputs[0],) + n.inputs[1:], n.out)
            readers[src.out.id] += 1
        out.append(n)
    # a norm all of whose readers now normalize for themselves is not computed any more
    gone = {n.out.id for n in nodes if isinstance(n.op, RmsNorm) and readers[n.out.id] == count[n.out.id]}
    return [n for n in out if n.out.id not in gone]


def _fold_into_add(graph: Graph, nodes: list[Node], fold: Any) -> list[Node]:
    """add(a, b) where one side's producer is read by the add alone: `fold(producer, other side, add)`
    gives the node doing both (which replaces the add; the producer goes), or None to leave them."""
    prod, count = _producers(nodes), _count(graph, nodes)
    out, drop = [], set()
    for n in nodes:
        if isinstance(n.op, Add):
            for mine, other in ((n.inputs[1], n.inputs[0]), (n.inputs[0], n.inputs[1])):
                m = prod.get(mine.id)
                fused = fold(m, other, n) if m is not None and count[mine.id] == 1 else None
                if fused is not None:
                    drop.add(id(m))
                    n = fused
                    break
        out.append(n)
    return [n for n in out if id(n) not in drop]


def _fuse_residual(graph: Graph, nodes: list[Node]) -> list[Node]:
    def fold(m: Node, other: Value, add: Node) -> Node | None:
        if not isinstance(m.op, Matmul) or m.op.res:
            return None
        return Node(replace(m.op, res=True), m.inputs + (other,), add.out)
    return _fold_into_add(graph, nodes, fold)


def _fuse_post_norm_add(graph: Graph, nodes: list[Node]) -> list[Node]:
    def fold(m: Node, other: Value, add: Node) -> Node | None:
        if not isinstance(m.op, RmsNorm) or m.op.dim != m.out.cols or m.op.add:
            return None
        return Node(replace(m.op, add=True), (m.inputs[0], other), add.out)
    return _fold_into_add(graph, nodes, fold)


def _fuse_attention_inputs(graph: Graph, nodes: list[Node]) -> list[Node]:
    prod, count = _producers(nodes), _count(graph, nodes)
    out, drop = [], set()
    for n in nodes:
        if isinstance(n.op, Attention):
            fused = _rope_store(n, prod, count)
            if fused is not None:
                node, gone = fused
                drop |= gone
                out.append(node)
                continue
        out.append(n)
    return [n for n in out if id(n) not in drop]


def _rope_store(att: Node, prod: dict[int, Node], count: Counter) -> tuple[Node, set[int]] | None:
    """An attention node whose q and k come from RoPE (after an optional per-head norm) read by nothing else,
    as one attention node that norms, rotates and stores them itself (`Attention.rope`); and the nodes it
    replaces."""
    q, k, v = att.inputs
    rq, rk = prod.get(q.id), prod.get(k.id)
    if not (rq and rk and isinstance(rq.op, Rope) and rq.op == rk.op and count[q.id] == 1 and count[k.id] == 1):
        return None
    gone = {id(rq), id(rk)}
    srcs, norms = [], []
    for r in (rq, rk):
        src = r.inputs[0]
        m = prod.get(src.id)
        if m is not None and isinstance(m.op, RmsNorm) and m.op.dim == r.op.head_dim and count[src.id] == 1 \
                and not m.op.add:
            gone.add(id(m))
            srcs.append(m.inputs[0])
            norms.append(m.op)
        else:
            srcs.append(src)
            norms.append(None)
    eps = {nm.eps for nm in norms if nm}
    if len(eps) > 1:
        return None
    op = RopeStore(rq.op.spec, rq.op.head_dim, att.op.spec, *(nm.weight if nm else None for nm in norms),
                   eps.pop() if eps else 0.0)
    return Node(replace(att.op, rope=op), (srcs[0], srcs[1], v), att.out), gone
