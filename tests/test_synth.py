"""The synthetic GGUF generator: K-quant blocks, tensor tables of real models, and files llama.cpp runs."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from mdst.format.gguf import GGUFFile
from mdst.dev import synth
from mdst.dev.kquants import RANDOM_BLOCK_TYPES, random_blocks

TINY = ["llama-tiny", "qwen3-tiny", "gemma3-tiny", "lfm2-tiny", "ministral3-tiny"]
N_POS = 32
TOKENS = list(range(300, 300 + N_POS))   # byte, merge and special ids: every tiny vocab has them


def run_llama(llama_cpp, path) -> np.ndarray:
    """llama.cpp's logits [N_POS, n_vocab] for TOKENS."""
    # One thread: tiny models gain nothing from more, and spinning threads stall on a busy 2-core machine.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False,
                          n_threads=1, n_threads_batch=1)
    try:
        llm.eval(TOKENS)
        return np.array(llm.scores[:N_POS], dtype=np.float32)
    finally:
        llm.close()


def position_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per position: the largest logit difference, in units of the logits' std."""
    return np.abs(a - b).max(axis=1) / a.std()


# ---------------------------------------------------------------- K-quant blocks

@pytest.mark.parametrize("qtype", sorted(RANDOM_BLOCK_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("std", [0.01, 0.5])
def test_random_blocks_dequantize_to_the_requested_distribution(qtype, std):
    rng = np.random.default_rng(1)
    blocks = random_blocks(qtype, 8192, std, rng)
    w = dequantize(blocks, qtype)
    assert np.isfinite(w).all()
    assert abs(w.mean()) < 0.02 * std
    assert abs(w.std() / std - 1) < 0.02
    assert len(np.unique(w)) > 1000         # many distinct values: scales and codes really vary
    per_block = w.reshape(len(blocks), -1).std(axis=1)
    assert per_block.std() > 0.05 * std     # blocks differ in scale (jittered d, random sub-block scales)


def test_random_blocks_rejects_types_it_cannot_write():
    with pytest.raises(ValueError, match="Q8_0"):
        random_blocks(T.Q8_0, 4, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="std"):
        random_blocks(T.Q4_K, 4, 0.0, np.random.default_rng(0))


# ---------------------------------------------------------------- tensor tables of real models

def test_gemma3_270m_matches_the_real_file(gemma_path):
    """Names, shapes and hyperparameters as in the real Q4_K_M file; types follow its rule."""
    real = GGUFFile(gemma_path)
    ours = {t.name: t for t in synth.plan("gemma3-270m")}
    assert set(ours) == set(real.tensors)
    for name, t in real.tensors.items():
        assert ours[name].shape == tuple(reversed(t.shape)), name
        kind = name.split(".")[-2]
        if kind in ("attn_v", "ffn_down"):
            # llama.cpp gives some of these layers more bits; the synthetic rule gives all of them more.
            assert ours[name].qtype.name in {"Q8_0", "Q6_K"}
            assert t.type.name in {"Q8_0", "Q5_0", "Q6_K", "Q4_K"}
        else:
            assert ours[name].qtype.name == t.type.name, name
    meta = {k: v for k, (v, _) in synth.metadata("gemma3-270m").items()}
    for key, value in real.metadata.items():
        if key.startswith("gemma3."):
            assert meta[key] == pytest.approx(value), key


def test_smollm2_135m_matches_the_real_file(smollm2_path):
    real = GGUFFile(smollm2_path)
    ours = {t.name: t for t in synth.plan("smollm2-135m")}
    assert {n: t.shape for n, t in ours.items()} == {n: tuple(reversed(t.shape)) for n, t in real.tensors.items()}
    meta = {k: v for k, (v, _) in synth.metadata("smollm2-135m").items()}
    for key, value in real.metadata.items():
        if key.startswith("llama."):
            assert meta[key] == pytest.approx(value), key


@pytest.mark.parametrize("preset, total, non_embedding", [
    ("qwen3-0.6b", 0.596e9, 0.44e9),    # Qwen3-0.6B model card: 0.6B, 0.44B non-embedding
    ("qwen3-8b", 8.19e9, 6.95e9),       # Qwen3-8B model card: 8.2B, 6.95B non-embedding
    ("lfm2-1.2b", 1.17e9, None),        # LFM2-1.2B: 1.17B
    ("ministral3-3b", 3.4e9, None),     # Ministral 3 3B: 3.4B language model (tied embeddings)
    ("qwen3-30b-a3b", 30.5e9, 29.9e9),  # Qwen3-30B-A3B model card: 30.5B, 29.9B non-embedding
    ("lfm2-8b-a1b", 8.3e9, None),       # LFM2-8B-A1B model card: 8.3B
])
def test_parameter_counts_match_the_published_models(preset, total, non_embedding):
    table = synth.plan(preset)
    n = sum(t.n_params for t in table)
    assert n == pytest.approx(total, rel=0.01)
    if non_embedding is not None:
        embeddings = sum(t.n_params for t in table if t.name in ("token_embd.weight", "output.weight"))
        assert n - embeddings == pytest.approx(non_embedding, rel=0.01)


def test_q4_k_m_rule():
    table = synth.plan("qwen3-8b", "Q4_K_M")
    for t in table:
        if len(t.shape) == 1:
            expected = T.F32
        elif t.name == "output.weight" or t.name.endswith((".attn_v.weight", ".ffn_down.weight")):
            expected = T.Q6_K
        else:
            expected = T.Q4_K
        assert t.qtype == expected, t.name
    # The size of the reference table's "Qwen3 8B shape" file.
    assert sum(t.nbytes for t in table) / 2**30 == pytest.approx(4.91, abs=0.01)
    tied = {t.name: t.qtype for t in synth.plan("qwen3-0.6b", "Q4_K_M")}
    assert tied["token_embd.weight"] == T.Q6_K and "output.weight" not in tied


def test_q4_k_m_rule_for_experts():
    """Routers stay F32 (llama-quantize keeps them), experts follow the dense rule; biases are F32 vectors."""
    table = {t.name: t for t in synth.plan("lfm2-8b-a1b", "Q4_K_M")}
    assert table["blk.2.ffn_gate_inp.weight"].qtype == T.F32
    assert table["blk.2.ffn_gate_exps.weight"].shape == (32, 1792, 2048)
    assert table["blk.2.ffn_gate_exps.weight"].qtype == table["blk.2.ffn_up_exps.weight"].qtype == T.Q4_K
    assert table["blk.2.ffn_down_exps.weight"].qtype == T.Q6_K
    assert table["blk.2.exp_probs_b.bias"].qtype == T.F32
    assert "blk.1.ffn_gate.weight" in table and "blk.1.ffn_gate_inp.weight" not in table   # 2 dense layers first


def test_dict_mix_and_block_fallback():
    table = {t.name: t.qtype for t in synth.plan("gemma3-270m", {"*attn_v*": "Q8_0", "*": "Q4_K"})}
    assert table["blk.0.attn_v.weight"] == T.Q8_0
    assert table["blk.0.attn_q.weight"] == T.Q5_0        # 640-wide rows: Q4_K falls back like llama-quantize
    assert table["blk.0.attn_output.weight"] == T.Q4_K   # 1024-wide rows
    assert table["blk.0.attn_norm.weight"] == T.F32
    with pytest.raises(ValueError, match="catch-all"):
        synth.plan("qwen3-tiny", {"*attn*": "Q8_0"})
    with pytest.raises(ValueError, match="Q7_K"):
        synth.plan("qwen3-tiny", "Q7_K")


def test_bad_presets_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="qwen3-8b"):
        synth.resolve("qwen9")
    with pytest.raises(ValueError, match="n_layers"):
        synth.resolve("qwen3-tiny", n_layer=2)
    with pytest.raises(ValueError, match="n_kv_heads"):
        synth.resolve("qwen3-tiny", n_kv_heads=3)
    with pytest.raises(ValueError, match="lfm2"):
        synth.resolve("lfm2-tiny", head_dim=32)


# ---------------------------------------------------------------- files llama.cpp runs

@pytest.mark.parametrize("types", synth.MIXES)
@pytest.mark.parametrize("preset", TINY)
def test_tiny_presets_run_in_llama_cpp(llama_cpp, tmp_path, preset, types):
    path = synth.write(tmp_path / "m.gguf", preset, types=types)
    f = GGUFFile(path)
    assert {n: t.type.name for n, t in f.tensors.items()} == {t.name: t.qtype.name for t in synth.plan(preset, types)}
    f.close()
    logits = run_llama(llama_cpp, path)
    assert np.isfinite(logits).all()
    assert (logits.std(axis=1) > 0.5).all()            # not constant: O(1..10) logits
    assert np.abs(logits).max() < 100
    assert (np.abs(np.diff(logits, axis=0)).max(axis=1) > 0.1).all()   # every position sees its own token


@pytest.mark.parametrize("preset", TINY)
def test_wrong_rope_order_twin_is_a_negative_control(llama_cpp, tmp_path, preset):
    """The twin equals the model at position 0 (no rotation yet) and differs clearly at every later one."""
    right = run_llama(llama_cpp, synth.write(tmp_path / "a.gguf", preset, types="Q4_K_M"))
    wrong = run_llama(llama_cpp, synth.write(tmp_path / "b.gguf", preset, types="Q4_K_M", wrong_rope_order=True))
    d = position_diff(right, wrong)
    assert d[0] < 1e-5
    assert (d[1:] > 0.1).all(), d


def test_gemma3_tiny_sliding_window_acts_within_the_test_positions(llama_cpp, tmp_path):
    window = synth.PRESETS["gemma3-tiny"].sliding_window
    local = run_llama(llama_cpp, synth.write(tmp_path / "a.gguf", "gemma3-tiny", types="F32"))
    wide = run_llama(llama_cpp, synth.write(tmp_path / "b.gguf", "gemma3-tiny", types="F32", sliding_window=N_POS))
    d = position_diff(local, wide)
    assert (d[:window] < 1e-4).all() and (d[window:] > 0.05).all(), d


def test_ministral3_tiny_yarn_and_temperature_act_within_the_test_positions(llama_cpp, tmp_path):
    orig = synth.PRESETS["ministral3-tiny"].rope_original_context
    base = run_llama(llama_cpp, synth.write(tmp_path / "a.gguf", "ministral3-tiny", types="F32"))
    # Temperature scaling starts at position original_context_length.
    no_temp = run_llama(llama_cpp, synth.write(tmp_path / "b.gguf", "ministral3-tiny", types="F32",
                                               attn_temperature_scale=0.0))
    d = position_diff(base, no_temp)
    assert (d[:orig] < 1e-4).all() and (d[orig:] > 0.01).all(), d
    # YaRN with factor 1 is plain RoPE: the factor-16 interpolation changes every position after the first.
    no_yarn = run_llama(llama_cpp, synth.write(tmp_path / "c.gguf", "ministral3-tiny", types="F32",
                                               rope_scaling_factor=1.0))
    d = position_diff(base, no_yarn)
    assert d[0] < 1e-4 and (d[1:] > 0.01).all(), d


def test_written_file_is_deterministic_and_seeded(tmp_path):
    a = synth.write(tmp_path / "a.gguf", "lfm2-tiny", types="Q4_K_M", seed=5).read_bytes()
    b = synth.write(tmp_path / "b.gguf", "lfm2-tiny", types="Q4_K_M", seed=5).read_bytes()
    c = synth.write(tmp_path / "c.gguf", "lfm2-tiny", types="Q4_K_M", seed=6).read_bytes()
    assert a == b and len(a) == len(c) and a != c


def test_vocab_is_byte_level_bpe_of_the_exact_size():
    v = synth.vocab(1000)
    assert len(v.tokens) == len(v.token_types) == 1000 and len(set(v.tokens)) == 1000
    assert v.tokens[:256] == list(synth.byte_chars()) and len(set(synth.byte_chars())) == 256
    for merge in v.merges:      # every merge result is a token
        a, b = merge.split(" ")
        assert a + b in v.tokens
    assert v.tokens[v.eos] == "<|im_end|>"


def test_main_writes_a_file(tmp_path, capsys):
    out = tmp_path / "q.gguf"
    rc = synth.main(["qwen3-tiny", str(out), "--types", "*ffn*=Q8_0,*=Q4_K", "--seed", "3", "--set", "n_layers=2",
                     "--set", "tied=false"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    f = GGUFFile(out)
    assert f.metadata["qwen3.block_count"] == 2
    assert f.tensors["blk.1.ffn_up.weight"].type.name == "Q8_0"
    assert f.tensors["output.weight"].type.name == "Q4_K"
    assert not (tmp_path / "q.gguf.partial").exists()
    f.close()


def test_main_reports_bad_arguments(tmp_path, capsys):
    assert synth.main(["qwen9", str(tmp_path / "x.gguf")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert synth.main(["qwen3-tiny", str(tmp_path / "x.gguf"), "--set", "n_layers=two"]) == 2
    assert "n_layers" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert synth.main(["--list"]) == 0
    assert "qwen3-8b" in capsys.readouterr().out
