"""Text in, text out: greedy and sampled generation, stop strings, streaming, statistics, chat, arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mdst
from mdst.text.chat import TemplateError
from mdst.generate import TextStream
from mdst.text.sampling import Sampler, SamplingParams
from metrics import rel_l2, report

GEMMA_TEMPLATE = (Path(__file__).parent / "data" / "chat" / "google-gemma-3-it.jinja").read_text()


@pytest.fixture(scope="module")
def smol(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=256) as m:
        yield m


@pytest.fixture(scope="module")
def smol_cpu(smollm2_path):
    with mdst.load(smollm2_path, device="cpu", context_length=256) as m:
        yield m


def test_greedy_is_the_argmax_chain(smol):
    prompt = "The capital of France is"
    text = smol.generate(prompt, max_tokens=10)
    ids = smol.tokenize(prompt)
    with smol.session() as s:
        toks = [int(np.argmax(s.prefill(ids)))]
        for _ in range(9):
            toks.append(int(np.argmax(s.prefill([toks[-1]]))))
    assert text == smol.detokenize(toks)
    assert "Paris" in text


def test_decode_ahead_matches_step_by_step_and_interleaves(smol):
    """The GPU runs a step ahead (token kept on the device); tokens match one step at a time, and
    two sessions decoding in turn (sharing the engine's step buffer) do not disturb each other."""
    ids = smol.tokenize("The capital of France is")
    other = smol.tokenize("Water boils at")

    def tokens(prompt: list[int], ahead: bool) -> list[int]:
        with smol.session() as s:
            return list(s.decode(int(s.prefill(prompt, greedy=True)), 12, lambda: "argmax", ahead=ahead))

    want, want_other = tokens(ids, False), tokens(other, False)
    assert tokens(ids, True) == want
    with smol.session() as a, smol.session() as b:
        da = a.decode(int(a.prefill(ids, greedy=True)), 12, lambda: "argmax", ahead=True)
        db = b.decode(int(b.prefill(other, greedy=True)), 12, lambda: "argmax", ahead=True)
        got = [(next(da), next(db)) for _ in range(12)]
    assert [x for x, _ in got] == want and [y for _, y in got] == want_other


def test_stopping_a_decode_early_leaves_the_cache_consistent(smol):
    """Leaving after 3 tokens leaves a step done past them; feeding on from there matches a fresh session."""
    ids = smol.tokenize("One, two, three,")
    with smol.session() as s:
        first = int(s.prefill(ids, greedy=True))
        steps = s.decode(first, 10, lambda: "argmax", ahead=True)
        seen = [next(steps) for _ in range(3)]
        steps.close()
        assert s.n_past == len(ids) + 3 and s.written == len(ids) + 4
        got = s.prefill([seen[-1], 42])
    with smol.session() as f:
        want = f.prefill(ids + [first] + seen + [42])
    # f16 KV cache: rows cached by decode's kernels here and by prefill's there differ in f32 summation order
    # before their f16 rounding, which flips some roundings (1.5e-3 on logits of ~15; with an f32 cache the two
    # paths agree to 4e-5); a stale or skipped position would be off by far more
    assert np.abs(got - want).max() < 5e-3


def test_seed_reproduces_and_differs(smol):
    kw = dict(max_tokens=16, temperature=1.0, top_k=50, top_p=0.95)
    a = smol.generate("Once upon a time", seed=1, **kw)
    assert a == smol.generate("Once upon a time", seed=1, **kw)
    assert a != smol.generate("Once upon a time", seed=2, **kw)


@pytest.mark.parametrize("kw", [dict(temperature=0.7, seed=3), dict(temperature=1.2, top_k=8, min_p=0.05, seed=4),
                                dict(temperature=0.9, repeat_penalty=1.3, presence_penalty=0.5, seed=5)])
def test_gpu_sampling_matches_the_host_chain(smol, smol_cpu, kw):
    """The GPU picks on-device (only ids read back); the CPU engine picks with Sampler on its logits."""
    assert smol.generate("A list of fruits:", max_tokens=20, **kw) == smol_cpu.generate("A list of fruits:",
                                                                                           max_tokens=20, **kw)


def test_greedy_with_penalties_matches_the_host_chain(smol, smol_cpu):
    """Greedy with penalties (or a logit bias) runs the sampling chain at temperature 0: the best candidate."""
    kw = dict(max_tokens=8, temperature=0, repeat_penalty=1.5)
    assert smol.generate("1, 2, 3, 4,", **kw) == smol_cpu.generate("1, 2, 3, 4,", **kw)


def test_stop_strings_end_generation_and_are_not_returned(smol):
    full = smol.generate("1, 2, 3, 4,", max_tokens=20)
    stop = full.split(",")[2] + ","   # a piece the greedy continuation is known to contain
    text = smol.generate("1, 2, 3, 4,", max_tokens=20, stop=[stop, "never appears"])
    assert stop not in text and full.startswith(text)
    assert smol.last_stats["finish_reason"] == "stop"


def test_stream_pieces_join_to_the_text_and_stats(smol):
    whole = smol.generate("Tell me about the sea.", max_tokens=24)
    pieces = list(smol.generate("Tell me about the sea.", max_tokens=24, stream=True))
    assert "".join(pieces) == whole and all(isinstance(p, str) for p in pieces)
    st = smol.last_stats
    assert st["finish_reason"] in ("stop", "length") and st["generated_tokens"] <= 24
    for key in ("prompt_tokens", "generated_tokens", "prefill_tokens_per_s", "decode_tokens_per_s"):
        assert st[key] >= 0


def test_text_stream_never_splits_a_character():
    t = TextStream(["STOP"])
    data = "héllo 🌍 wörld".encode()
    out = [t.push(data[i:i + 1]) for i in range(len(data))]  # one byte a token
    assert "".join(out) + t.flush() == "héllo 🌍 wörld"
    assert "\ufffd" not in "".join(out)  # no piece ever held half a character
    t = TextStream(["STOP"])
    assert t.push(b"abc ST") == "abc " and t.push(b"O") == "" and t.push(b"Pxyz") == "" and t.stopped


def test_closing_a_stream_leaves_the_model_usable(smol):
    it = smol.generate("Count: one, two,", max_tokens=30, stream=True)
    next(it)
    it.close()
    assert smol.last_stats["finish_reason"] == "cancelled"
    assert "Paris" in smol.generate("The capital of France is", max_tokens=8)


def test_a_second_generation_in_the_same_thread_during_a_stream_is_refused(smol):
    it = smol.generate("Hello", max_tokens=5, stream=True)
    next(it)
    with pytest.raises(mdst.MdstError, match="still inside another generate"):
        smol.generate("Hi", max_tokens=2)
    it.close()


def test_context_full_ends_with_length(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=24) as m:
        m.generate("1, 2, 3, 4, 5, 6, 7,", max_tokens=100)  # counting goes on past the context
        assert m.last_stats["finish_reason"] == "length"
        assert m.last_stats["prompt_tokens"] + m.last_stats["generated_tokens"] <= 24


def test_prompt_longer_than_context(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=24) as m:
        long = "word " * 40
        with pytest.raises(ValueError, match=r"prompt has \d+ tokens but the context holds 24"):
            m.generate(long, max_tokens=2)
        assert isinstance(m.generate(long, max_tokens=2, truncate=True), str)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(max_tokens=0), ValueError, "max_tokens"), (dict(max_tokens=2.5), TypeError, "max_tokens"),
    (dict(temperature=-0.1), ValueError, "temperature"), (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"), (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"), (dict(top_k=-1), ValueError, "top_k"),
    (dict(min_p=2.0), ValueError, "min_p"), (dict(repeat_penalty=0), ValueError, "repeat_penalty"),
    (dict(stop=[""]), ValueError, "stop"), (dict(stop=[1]), TypeError, "stop"), (dict(seed=-3), ValueError, "seed"),
])
def test_bad_arguments_name_themselves(smol, kw, exc, match):
    with pytest.raises(exc, match=match):
        smol.generate("Hello", **{"max_tokens": 2, **kw})
    assert "Paris" in smol.generate("The capital of France is", max_tokens=8)  # still usable


def test_prompt_must_be_text(smol):
    with pytest.raises(TypeError, match="prompt"):
        smol.generate(42)
    with pytest.raises(TypeError, match="prompt"):
        smol.generate([1, 2])


def test_sampler_settings_are_llama_cpp_order():
    logits = np.array([5.0, 4.9, 1.0, 0.5, -3.0], np.float32)
    greedy = Sampler.pick(logits, Sampler(SamplingParams()).next_draw([]))
    assert greedy == 0
    draw = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0)).next_draw([])
    assert Sampler.pick(logits, draw) in (0, 1)
    pen = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0)).next_draw([0, 0])
    assert Sampler.pick(logits, pen) == 1  # 5 / 2 < 4.9


def test_chat_smollm2(smol):
    reply = smol.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                      max_tokens=20)
    assert "Paris" in reply and smol.last_stats["finish_reason"] == "stop"
    streamed = "".join(smol.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                                 max_tokens=20, stream=True))
    assert streamed == reply


def test_chat_gemma3_with_a_given_template(gemma_path, gpu):
    with mdst.load(gemma_path, device="gpu", context_length=256) as g:
        with pytest.raises(TemplateError, match="chat template"):
            g.chat([{"role": "user", "content": "Hi"}])
        reply = g.chat([{"role": "user", "content": "Hi"}], template=GEMMA_TEMPLATE, max_tokens=6)
        assert isinstance(reply, str)
        ids = g.tokenize(mdst.text.chat.render(GEMMA_TEMPLATE, [{"role": "user", "content": "Hi"}], bos_token="<bos>",
                                          eos_token="<eos>"), add_bos=False)
        assert ids[0] == g.tokenizer.bos_id and ids[1] != g.tokenizer.bos_id  # one BOS, from the template
        assert g.last_stats["prompt_tokens"] == len(ids)


# ---- logprobs, logit_bias, embeddings --------------------------------------------------------------------------

def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("device", ["gpu", "cpu"])
@pytest.mark.parametrize("kw", [{}, dict(temperature=0.9, top_k=20, seed=7)])
def test_logprobs_are_log_softmax_of_the_logits(smol, smol_cpu, device, kw):
    """Each token's logprob and its top 5 equal log_softmax(logits(prefix)); the text is the one without logprobs."""
    m = smol if device == "gpu" else smol_cpu
    prompt = "The capital of France is"
    text = m.generate(prompt, max_tokens=5, logprobs=True, top_logprobs=5, **kw)
    assert text == m.generate(prompt, max_tokens=5, **kw) and len(text.logprobs) == 5
    ids = m.tokenize(prompt)
    toks = [lp.token for lp in text.logprobs]
    assert m.detokenize(toks) == text
    ref = log_softmax(m.logits(ids + toks)[len(ids) - 1:-1])
    # on the GPU, logits() is prefill's flash attention and a logprob comes from decode's split attention:
    # the same f32 arithmetic summed in other orders, then rounded into the f16 cache (4e-4 here)
    tol = 1e-3 if device == "gpu" else 1e-4
    for lp, row in zip(text.logprobs, ref):
        assert abs(lp.logprob - row[lp.token]) < tol
        top_ids = [t for t, _ in lp.top]
        assert len(top_ids) == 5 and set(top_ids) == set(np.argsort(-row)[:5].tolist())
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)
        np.testing.assert_allclose(values, row[top_ids], atol=tol)
        assert lp.logprob <= values[0] + 1e-9 and lp.text == m.detokenize([lp.token])
        if not kw:   # greedy: the chosen token is the most likely one
            assert lp.token == top_ids[0]


def test_streamed_logprobs_cover_the_streamed_text(smol_cpu):
    pieces = list(smol_cpu.generate("Tell me about the sea.", max_tokens=6, stream=True, logprobs=True))
    whole = smol_cpu.generate("Tell me about the sea.", max_tokens=6, logprobs=True)
    assert "".join(pieces) == whole
    streamed = [lp for p in pieces for lp in p.logprobs]
    assert [lp.token for lp in streamed] == [lp.token for lp in whole.logprobs]
    # the second run reuses the cached prompt, so its last position is computed in another step shape
    np.testing.assert_allclose([lp.logprob for lp in streamed], [lp.logprob for lp in whole.logprobs], atol=1e-4)
    assert all(lp.top == () for lp in whole.logprobs)   # top_logprobs=0


def test_chat_returns_logprobs(smol_cpu):
    messages = [{"role": "user", "content": "Say hi."}]
    reply = smol_cpu.chat(messages, max_tokens=4, logprobs=True, top_logprobs=2)
    assert reply == smol_cpu.chat(messages, max_tokens=4)
    assert "".join(lp.text for lp in reply.logprobs) == reply and all(len(lp.top) == 2 for lp in reply.logprobs)


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_logit_bias_forbids_and_forces_tokens(smol, smol_cpu, device):
    """Greedy and sampled picks honour the bias (on the GPU: the penalize kernel before argmax/top-k)."""
    m = smol if device == "gpu" else smol_cpu
    prompt = "The capital of France is"
    plain = m.generate(prompt, max_tokens=4, logprobs=True)
    first = plain.logprobs[0].token
    banned = m.generate(prompt, max_tokens=4, logit_bias={first: -100}, logprobs=True)
    assert banned.logprobs[0].token != first
    forced = m.tokenize(" banana", add_bos=False)[0]
    for kw in ({}, dict(temperature=0.8, seed=1)):
        text = m.generate(prompt, max_tokens=4, logit_bias={forced: 100}, **kw)
        assert text == m.detokenize([forced] * 4)
    # the GPU's on-device pick and the host's pick from read-back logits agree under a bias
    assert m.generate(prompt, max_tokens=4, logit_bias={first: -100}) == banned


@pytest.mark.parametrize("kw,exc,match", [
    (dict(logit_bias={49152: 1.0}), ValueError, "outside the vocabulary"),
    (dict(logit_bias={1: 100.5}), ValueError, r"\[-100, 100\]"), (dict(logit_bias={-1: 1.0}), ValueError, "logit_bias"),
    (dict(logit_bias={"x": 1.0}), ValueError, "logit_bias"), (dict(logit_bias=[1, 2]), TypeError, "logit_bias"),
    (dict(logit_bias={1: float("inf")}), ValueError, "logit_bias"), (dict(logprobs=1), TypeError, "logprobs"),
    (dict(logprobs=True, top_logprobs=21), ValueError, "top_logprobs"),
    (dict(top_logprobs=2), ValueError, "logprobs=True"), (dict(logprobs=True, top_logprobs=1.5), TypeError, "top_"),
])
def test_bad_logprobs_and_logit_bias_name_themselves(smol_cpu, kw, exc, match):
    with pytest.raises(exc, match=match):
        smol_cpu.generate("Hello", max_tokens=2, **kw)


def reference_hidden(m, ids: list[int]) -> np.ndarray:
    """The LM head's input: the numpy path's final-norm output of the recorded all-rows graph."""
    from mdst import reference
    graph = m.engine.graphs["all"]
    head = len(graph.nodes) - 1   # the LM head's matmul
    seen = {}
    reference.run(graph, m.engine.weights, m.engine.new_cache(), np.array(ids), 0,
                  lambda i, node, value: seen.update(h=value.copy()) if node.out is graph.nodes[head].inputs[0] else 0)
    return seen["h"]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_embed_pools_the_final_hidden_states(smol, smol_cpu, device):
    """Embeddings pool the LM head's input; on the numpy path it is the reference graph's, on lavapipe it
    matches that as closely as the logits do (f32 sums in another order), and gives the GPU's own logits."""
    m = smol if device == "gpu" else smol_cpu
    texts = ["The sea is blue.", "Paris"]
    hidden = []
    for t in texts:
        with m.session() as s:
            hidden.append(s.hidden(m.tokenize(t)))
    ids = m.tokenize(texts[0])
    head = smol_cpu.engine.weights[smol_cpu.engine.graphs["all"].output_matrix()]
    assert rel_l2(hidden[0] @ head.T, m.logits(ids)) < 1e-4
    rel = rel_l2(hidden[0], reference_hidden(smol_cpu, ids))
    report(f"smollm2 hidden states {device} vs numpy reference", rel_l2=rel)
    assert rel < (1e-3 if device == "gpu" else 1e-6)
    unit = m.embed(texts)   # mean, unit length
    want = np.stack([h.mean(0) for h in hidden])
    assert unit.shape == (2, 576) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-4)
    for pooling, row in (("cls", 0), ("last", -1)) if device == "cpu" else ():   # pooling is host code
        got = m.embed(texts[0], pooling=pooling, normalize=False)
        assert got.shape == (576,)
        np.testing.assert_allclose(got, hidden[0][row], atol=1e-4)


def test_embed_reads_the_files_pooling_type(smol_cpu, monkeypatch):
    assert np.array_equal(smol_cpu.embed("Paris"), smol_cpu.embed("Paris", pooling="mean"))  # no pooling_type: mean
    monkeypatch.setitem(smol_cpu.gguf.metadata, "llama.pooling_type", 3)
    assert np.array_equal(smol_cpu.embed("Paris"), smol_cpu.embed("Paris", pooling="last"))
    for bad, exc in ((dict(texts=[]), ValueError), (dict(texts=5), TypeError), (dict(texts="x", pooling="max"),
                                                                                  ValueError)):
        with pytest.raises(exc):
            smol_cpu.embed(**bad)
