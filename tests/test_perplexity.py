"""llama-perplexity's method (mdst.quality): PPL against one computed from llama.cpp's logits over the same
windows, KL divergence of a model against its own base file, the CLI end to end, and bad input.

Small windows (CTX tokens, CHUNKS of them) on the CPU path: the windowing, scoring and statistics are host
code; the logits they read are checked against llama.cpp on both paths by the model tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import mdst
from mdst import cli
from mdst.dev import llamacpp
from mdst.dev.texts import license_text
from mdst.errors import BaseFileError
from mdst.quality import BaseLogProbs, kl_divergence, perplexity, save_base, text_windows
from mdst.quality.perplexity import token_nll
from metrics import report

# llama.cpp's Q4_1 dot products quantize the activations to Q8_1, mdst's run in f32 (its Q4_1 PPL equals the F32
# copy's); that moves llama.cpp's PPL by 0.4% over two windows of 256 tokens, by up to 1.5% over shorter texts.
CTX, CHUNKS = 256, 2


@pytest.fixture(scope="module")
def text() -> str:
    return license_text()


@pytest.fixture(scope="module")
def f32_model(smollm2_path, cache_dir):
    with mdst.load(llamacpp.f32_copy(smollm2_path, cache_dir), device="cpu", context_length=CTX) as m:
        yield m


@pytest.fixture(scope="module")
def q_model(smollm2_path):
    with mdst.load(smollm2_path, device="cpu", context_length=CTX) as m:
        yield m


@pytest.fixture(scope="module")
def f32_base(f32_model, text, tmp_path_factory):
    """The F32 copy's base file and the PPL of the same run."""
    path = tmp_path_factory.mktemp("kld") / "f32.kld"
    _, result = save_base(f32_model, text, path, CTX, CHUNKS, batch=100)   # the scored half in two pieces
    return path, result


def llama_cpp_nll(path: str, windows: np.ndarray, cache_dir) -> np.ndarray:
    """NLL of the scored tokens from llama.cpp's logits of each window (llama-perplexity's rows)."""
    first = CTX // 2
    return np.concatenate([token_nll(llamacpp.logits(path, w, cache_dir)[first:CTX - 1], w[first + 1:])
                           for w in windows])


def ppl_and_se(nll: np.ndarray) -> tuple[float, float]:
    """llama-perplexity's estimate from sums of NLL and NLL squared."""
    n, mean = nll.size, nll.sum() / nll.size
    ppl = np.exp(mean)
    return float(ppl), float(ppl * np.sqrt(((nll ** 2).sum() / n - mean ** 2) / (n - 1)))


def test_f32_copy_ppl_matches_llama_cpp(llama_cpp, f32_model, f32_base, text, cache_dir):
    windows = text_windows(f32_model, text, CTX, CHUNKS)
    ref_ppl, ref_se = ppl_and_se(llama_cpp_nll(f32_model.path, windows, cache_dir))
    got = f32_base[1]
    report("smollm2 f32-copy ppl vs llama.cpp", ctx=CTX, windows=got.windows, ppl=got.ppl, llama_cpp=ref_ppl)
    assert got.windows == CHUNKS and got.tokens == CHUNKS * (CTX - 1 - CTX // 2)
    assert got.ppl == pytest.approx(ref_ppl, rel=1e-3)
    assert got.se == pytest.approx(ref_se, rel=1e-2)


def test_q4_1_ppl_matches_llama_cpp(llama_cpp, q_model, smollm2_path, text, cache_dir):
    windows = text_windows(q_model, text, CTX, CHUNKS)
    ref_ppl, _ = ppl_and_se(llama_cpp_nll(smollm2_path, windows, cache_dir))
    running = []
    got = perplexity(q_model, text, CTX, CHUNKS, on_window=lambda r: running.append(r.ppl))
    report("smollm2 q4_1 ppl vs llama.cpp", ctx=CTX, windows=got.windows, ppl=got.ppl, llama_cpp=ref_ppl)
    assert len(running) == CHUNKS and running[-1] == got.ppl
    assert got.ppl == pytest.approx(ref_ppl, rel=1e-2)


def test_kld_of_a_model_against_its_own_base_is_zero(f32_model, f32_base, text):
    """Within float noise: the base run fed its scored halves in two pieces, this run in one (other matmul shapes)."""
    r = kl_divergence(f32_model, text, BaseLogProbs.load(f32_base[0]))
    s = r.summary()
    report("smollm2 f32-copy kld vs its own base", kld_mean=s["kld_mean"], kld_max=s["kld_max"],
           p_diff_max=float(np.abs(r.p_diff).max()))
    assert s["tokens"] == f32_base[1].tokens
    assert abs(s["kld_mean"]) < 1e-7 and np.abs(r.kld).max() < 1e-5
    assert s["same_top"] == 1.0
    assert np.abs(r.p_diff).max() < 1e-4
    assert s["ppl"] == pytest.approx(s["ppl_base"], rel=1e-6)
    assert s["ppl_base"] == f32_base[1].ppl


def test_base_file_for_other_windows_is_rejected(f32_model, f32_base, text, tmp_path):
    base = BaseLogProbs.load(f32_base[0])
    with pytest.raises(BaseFileError, match="holds 2 windows of 256 tokens, this run has 1 of 256"):
        kl_divergence(f32_model, text, base, chunks=1)
    with pytest.raises(BaseFileError, match="other tokens"):
        kl_divergence(f32_model, text[1000:], base)
    with pytest.raises(BaseFileError, match="vocabulary of 49152 tokens, this model has 10"):
        base.check_matches(base.windows, 10)
    cut = tmp_path / "cut.kld"
    BaseLogProbs(base.windows, base.n_vocab, base.top_ids[:-1], base.top_logp[:-1], base.rest_logp[:-1],
                 base.nll[:-1]).save(cut)
    with pytest.raises(BaseFileError, match="truncated or inconsistent"):
        BaseLogProbs.load(cut)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BaseFileError, match="cannot read"):
        BaseLogProbs.load(junk)


def test_gpu_windows_score_as_the_cpu_path(smollm2_path, q_model, text, gpu):
    """Lavapipe: each window's context half through the last-row plans, its scored half through all-row plans."""
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=32) as g:
        got = perplexity(g, text, 32, 2)
    ref = perplexity(q_model, text, 32, 2)
    assert got.tokens == ref.tokens == 2 * 15
    np.testing.assert_allclose(got.nll, ref.nll, atol=2e-4)
    assert got.ppl == pytest.approx(ref.ppl, rel=1e-5)


@pytest.mark.parametrize("ctx, why", [(7, "even"), (6, "at least 8"), (512, "needs at least 1024")])
def test_bad_windows_are_rejected(q_model, text, ctx, why):
    with pytest.raises(ValueError, match=why):
        perplexity(q_model, text[:2000], ctx)


def test_cli_perplexity_and_kld_end_to_end(smollm2_path, q_model, text, tmp_path, capsys):
    text_file, base = tmp_path / "text.txt", tmp_path / "base.kld"
    text_file.write_text(text)
    expected = perplexity(q_model, text, 16, 2)
    args = ["perplexity", smollm2_path, str(text_file), "--device", "cpu"]
    assert cli.main(args + ["--ctx", "16", "--chunks", "2", "--kl-divergence-base", str(base)]) == 0
    out, err = capsys.readouterr()
    assert f"Final estimate: PPL = {expected.ppl:.4f} +/- {expected.se:.5f}" in out
    assert err.startswith("[1]") and f"[2]{expected.ppl:.4f}," in err
    assert cli.main(args + ["--kl-divergence-base", str(base), "--kl-divergence"]) == 0
    out, _ = capsys.readouterr()
    assert "Mean    KLD:   0.000000" in out and "Same top p: 100.000" in out
    assert cli.main(args + ["--kl-divergence-base", str(base), "--kl-divergence", "--ctx", "32"]) == 2
    assert "the base file holds 2 windows of 16 tokens, this run has 2 of 32" in capsys.readouterr().err


def test_cli_rejects_bad_options_before_loading(smollm2_path, tmp_path, monkeypatch, capsys):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(mdst, "load", load)
    text_file = tmp_path / "text.txt"
    text_file.write_text("short")
    for extra, why in [(["--ctx", "7"], "ctx must be an even number"), (["--chunks", "0"], "--chunks must be a positive"),
                       (["--batch", "-1"], "--batch must be a positive int"),
                       (["--kl-divergence"], "pass --kl-divergence-base FILE"),
                       (["--kl-divergence", "--kl-divergence-base", str(text_file)], "cannot read the KL-divergence")]:
        assert cli.main(["perplexity", smollm2_path, str(text_file), *extra]) == 2
        assert why in capsys.readouterr().err
