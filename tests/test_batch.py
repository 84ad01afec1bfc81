"""Batched decode (mdst.runtime.batch): every sequence of a batch gets the tokens it gets alone.

Sequences join and leave mid-way (continuous batching) at different positions, with their own
settings and seeds, on both engines; a sliding-window family (Gemma 3, past its window) and LFM2
(a convolution state per sequence) from synth, and SmolLM2 through `Model.generate(list)`.
"""

from __future__ import annotations

import numpy as np
import pytest

import mdst
from mdst import reference
from mdst.memory.kv_cache import CpuKVCache
from mdst.text.sampling import Sampler, SamplingParams
from metrics import rel_l2
from test_families import synthetic_gguf

PRESETS = ("gemma3-tiny", "lfm2-tiny")
CONTEXT = 64
PARAMS = (SamplingParams(), SamplingParams(temperature=0.9, seed=1), SamplingParams(temperature=0.7, top_k=5, seed=2))


def prompts(n_vocab: int) -> list[list[int]]:
    """Three prompts of awkward lengths (the longest past Gemma 3 tiny's window of 8)."""
    rng = np.random.default_rng(11)
    return [[int(t) for t in rng.integers(0, n_vocab, n)] for n in (3, 11, 20)]


def alone(model: mdst.Model, ids: list[int], params: SamplingParams, count: int) -> list[int]:
    """`count` tokens from a session of its own, as generate() picks them."""
    sampler, history = Sampler(params), list(ids)

    def pick():
        return "argmax" if params.greedy else sampler.next_draw(history)

    with model.session() as s:
        s.prefill(ids[:-1], greedy=True)   # the last token alone, as generate() (and Batch.add) feed it
        tok = int(s.prefill(ids[-1:], greedy=params.greedy, draw=None if params.greedy else pick()))
        out = [tok]
        history.append(tok)
        for tok in s.decode(tok, count - 1, pick):
            out.append(int(tok))
            history.append(int(tok))
    return out


@pytest.fixture(scope="module")
def synth_models(cache_dir, request):
    """(preset, device) -> a Q8_0 synth model, loaded once per module."""
    models: dict[tuple[str, str], mdst.Model] = {}

    def get(preset: str, device: str) -> mdst.Model:
        if (preset, device) not in models:
            if device == "gpu":
                request.getfixturevalue("gpu")
            models[preset, device] = mdst.load(synthetic_gguf(cache_dir, preset, "Q8_0"), device=device,
                                               kv_type="f32", context_length=CONTEXT)
        return models[preset, device]

    yield get
    for m in models.values():
        m.close()


@pytest.mark.parametrize("device", ("cpu", "gpu"))
@pytest.mark.parametrize("preset", PRESETS)
def test_continuous_batch_equals_alone(synth_models, preset, device, monkeypatch):
    m = synth_models(preset, device)
    if device == "gpu":   # several sequences' one-token steps all take the batched plan
        each = m.engine._step_each
        monkeypatch.setattr(m.engine, "_step_each", lambda caches, *a: each(caches, *a) if len(caches) == 1
                            else pytest.fail("a step of several sequences took the one-row plans"))
    ps = prompts(m.n_vocab)
    want = [alone(m, ids, p, 24) for ids, p in zip(ps, PARAMS)]
    got: dict[int, list[int]] = {}
    batch = m.batch(3)
    a, tok = batch.add(ps[0], PARAMS[0])
    got[a] = [tok]
    for _ in range(3):   # the first sequence runs alone, then the others join at other positions
        got[a].append(batch.step()[a])
    for ids, p in zip(ps[1:], PARAMS[1:]):
        sid, tok = batch.add(ids, p)
        got[sid] = [tok]
    order = batch.ids
    for i in range(20):
        if i == 10:
            batch.remove(order[1])   # leaves mid-way; the others go on
        for sid, tok in batch.step().items():
            got[sid].append(tok)
    batch.close()
    assert len(batch) == 0
    for sid, w in zip(order, want):
        assert got[sid] == w[:len(got[sid])], f"sequence {sid} differs from its alone-run"
    assert [len(got[s]) for s in order] == [24, 11, 21]
    if device == "gpu":
        assert {k[1] for k in m.engine.plans if k[0] == "batch"} == {2, 4}   # three sequences, then two


@pytest.mark.parametrize("preset", PRESETS)
def test_sequences_of_two_pools_step_together(synth_models, preset):
    """Sequences whose caches sit in different KV pools share a step: a submit a pool, each its own rows of the
    batched plan (here pool 2's sequences are the step's first and last), every token as alone."""
    m = synth_models(preset, "gpu")
    eng, ps = m.engine, prompts(m.n_vocab)
    lone = eng.batch_cache(room=1)   # a pool of one slot; then one of two
    order = [eng.batch_cache(room=2), lone, eng.batch_cache()]
    assert order[0].pool is order[2].pool and order[0].pool is not lone.pool
    toks = [int(eng.step(c, np.array(ids), 0, "last", "argmax")[0]) for c, ids in zip(order, ps)]
    positions = [len(ids) for ids in ps]
    want = [alone(m, ids, SamplingParams(), 4) for ids in ps]
    got = [[t] for t in toks]
    for _ in range(3):
        toks = eng.step_batch(order, [np.array([t]) for t in toks], positions, ["argmax"] * 3).tolist()
        positions = [p + 1 for p in positions]
        for g, t in zip(got, toks):
            g.append(t)
    assert got == want
    for c in order:
        eng.recycle(c)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("cap", (16, 2))
def test_batched_plan_logits(synth_models, preset, cap, monkeypatch):
    """The batched plan's logits rows equal the numpy reference's for each sequence (within the GPU's 1e-3), at
    three positions, sampled and greedy rows in one step; with cap 2, three sequences take two submits."""
    m, ref = synth_models(preset, "gpu"), synth_models(preset, "cpu")
    eng = m.engine
    monkeypatch.setattr(eng, "batch_rows", lambda: cap)
    ps, more = prompts(m.n_vocab), [5, 7, 9]
    caches = [eng.batch_cache(room=len(ps)) for _ in ps]   # slots of one pool
    assert len({id(c.pool) for c in caches}) == 1
    for c, ids in zip(caches, ps):
        eng.step(c, np.array(ids), 0, "last", "argmax")
    draw = Sampler(PARAMS[1]).next_draw([])
    picks = ["argmax", draw, "argmax"]
    got = eng.step_batch(caches, [np.array([t]) for t in more], [len(ids) for ids in ps], picks)
    plan = eng.batch_plan(3 if cap > 2 else 1)   # the last submit's plan holds the last sequences' logits
    chain = plan.dispatches[plan.draw_from:]   # the draws' chain: once over all rows, not once a sequence
    assert [d.spec.name for d in chain].count("sample") == 1 and all(d.block is None for d in chain)
    logits = np.concatenate([np.frombuffer(eng.gpu.queue.read_buffer(o.buffer), np.float32)
                             .reshape(-1, o.cols)[:plan.rows] for o in plan.outputs], axis=1)
    want = [reference.run(ref.engine.graphs["all"], ref.engine.weights, CpuKVCache.allocate(ref.engine.layout),
                          np.array(ids + [t]), 0)[-1] for ids, t in zip(ps, more)]
    firsts = range(3) if cap > 2 else [2]   # rows of the last submit: row i % cap is sequence i
    for i in firsts:
        assert rel_l2(logits[i % cap], want[i]) < 1e-3, f"sequence {i}"
    assert got[0] == np.argmax(want[0]) and got[2] == np.argmax(want[2])
    assert got[1] == Sampler.pick(want[1], draw)
    for c in caches:
        eng.recycle(c)


@pytest.mark.parametrize("preset", PRESETS)
def test_reference_batched_step_logits(synth_models, preset):
    """One numpy forward over several sequences' rows (prefill chunks and single tokens) == each alone."""
    m = synth_models(preset, "cpu")
    eng, ps = m.engine, prompts(m.n_vocab)
    graph = eng.graphs["all"]
    alone_caches = [CpuKVCache.allocate(eng.layout) for _ in ps]
    want = [reference.run(graph, eng.weights, c, np.array(ids), 0) for c, ids in zip(alone_caches, ps)]
    caches = [CpuKVCache.allocate(eng.layout) for _ in ps]
    got = reference.run_batch(graph, eng.weights, caches, [np.array(ids) for ids in ps], [0, 0, 0])
    assert rel_l2(got, np.concatenate(want)) < 1e-4
    # then one token each, at three different positions
    more = [np.array([5]), np.array([7]), np.array([9])]
    want = [reference.run(graph, eng.weights, c, t, len(ids)) for c, t, ids in zip(alone_caches, more, ps)]
    got = reference.run_batch(graph, eng.weights, caches, more, [len(ids) for ids in ps])
    for g, w in zip(got, want):
        assert rel_l2(g, w[0]) < 1e-4


@pytest.fixture(scope="module")
def smollm2_gpu(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        yield m


SMOL_PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time, in a land far"]


@pytest.mark.parametrize("device", ("cpu", "gpu"))
def test_generate_list_equals_each_alone(request, device):
    m = request.getfixturevalue("smollm2_cpu" if device == "cpu" else "smollm2_gpu")
    kw = {"max_tokens": 6, "temperature": 0.8, "seed": 3, "repeat_penalty": 1.3, "stop": ["\n\n"]}
    want = [m.generate(p, **kw) for p in SMOL_PROMPTS]
    assert m.generate(SMOL_PROMPTS, **kw) == want
    assert len(m.last_stats["finish_reason"]) == len(SMOL_PROMPTS)


def test_generate_list_streams(smollm2_cpu):
    """Streamed (prompt index, piece) pairs join into the texts generate(list) returns."""
    kw = {"max_tokens": 6, "temperature": 0.8, "seed": 4}
    texts = [""] * len(SMOL_PROMPTS)
    for i, piece in smollm2_cpu.generate(SMOL_PROMPTS, stream=True, **kw):
        texts[i] += piece
    assert texts == smollm2_cpu.generate(SMOL_PROMPTS, **kw)


def test_generate_list_bad_input(smollm2_cpu):
    with pytest.raises(TypeError, match="list of str"):
        smollm2_cpu.generate([])
    with pytest.raises(ValueError, match="one prompt"):
        smollm2_cpu.generate(["a", "b"], logprobs=True)
    batch = smollm2_cpu.batch()
    with pytest.raises(ValueError, match="empty"):
        batch.add([], SamplingParams())
    batch.close()


def test_max_batch_caps_the_batch_and_reuses_caches(smollm2_path, monkeypatch):
    """max_batch sequences at once: one more is refused before anything is allocated, and a finished sequence's
    cache serves the next one, which still gets its tokens alone."""
    with mdst.load(smollm2_path, device="cpu", max_batch=2) as m:
        made = []
        new_cache = m.engine.new_cache
        monkeypatch.setattr(m.engine, "new_cache", lambda: made.append(new_cache()) or made[-1])
        ids = prompts(m.n_vocab)
        batch = m.batch()
        a, _ = batch.add(ids[0], SamplingParams())
        batch.add(ids[1], SamplingParams())
        with pytest.raises(ValueError, match="max_batch"):
            batch.add(ids[2], SamplingParams())
        assert len(batch) == 2 and len(made) == 2
        batch.step()
        batch.remove(a)
        c, first = batch.add(ids[2], SamplingParams())
        assert len(made) == 2   # the finished sequence's cache
        got = [first] + [batch.step()[c] for _ in range(3)]
        batch.close()
        assert got == alone(m, ids[2], SamplingParams(), 4)
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ValueError, match="max_batch"):
            mdst.load(smollm2_path, device="cpu", max_batch=bad)


def test_max_batch_caches_count_in_the_memory_check(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=256) as one, \
            mdst.load(smollm2_path, device="gpu", context_length=256, max_batch=3) as four:
        assert four.predicted.bytes_by_kind["kv"] == 4 * one.predicted.bytes_by_kind["kv"]
        limit = (one.predicted.total + four.predicted.total) // 2
    with pytest.raises(mdst.OutOfMemoryError, match="a smaller max_batch") as e:
        mdst.load(smollm2_path, device="gpu", context_length=256, max_batch=3, gpu_memory_limit=limit)
    assert "now 3" in str(e.value)


def test_generate_list_past_max_batch_waits_its_turn(smollm2_path):
    """More prompts than max_batch: the rest join as earlier ones finish, each still its alone text."""
    kw = {"max_tokens": 5, "temperature": 0.8, "seed": 5}
    with mdst.load(smollm2_path, device="cpu", max_batch=2) as m:
        want = [m.generate(p, **kw) for p in SMOL_PROMPTS]
        assert m.generate(SMOL_PROMPTS, **kw) == want
