"""The public API's contract: load options, errors with clear messages, sessions, lifetime."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import mdst
from mdst.errors import GGUFError, MdstError, UnsupportedModelError


@pytest.fixture(scope="module")
def model(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", kv_type="f32", context_length=64) as m:
        yield m


def test_errors_share_one_base():
    for e in (mdst.GGUFError, mdst.UnsupportedModelError, mdst.DeviceError, mdst.OutOfMemoryError):
        assert issubclass(e, MdstError)


def test_unknown_architecture_names_the_supported_ones(tmp_path):
    path = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(UnsupportedModelError, match=r"'bert'.*llama"):
        mdst.load(path, device="cpu")


def test_not_a_gguf_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a model at all")
    with pytest.raises(GGUFError, match="magic"):
        mdst.load(p, device="cpu")
    with pytest.raises(GGUFError, match="cannot open"):
        mdst.load(tmp_path / "missing.gguf", device="cpu")


@pytest.mark.parametrize("kwargs,match", [
    ({"device": "tpu"}, "device must be"),
    ({"kv_type": "f8"}, "kv_type must be"),
    ({"activations": "int8"}, "activations must be one of .f32., .q8."),
    ({"context_length": 0}, "context_length"),
    ({"context_length": "4k"}, "context_length"),
    ({"max_binding_size": 100}, "max_binding_size"),
])
def test_bad_load_options(smollm2_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mdst.load(smollm2_path, **{"device": "gpu", **kwargs})


def test_packaged_short_name_and_cpu_kv_type(smollm2_path):
    with mdst.load("smollm2-135m", device="cpu") as m:
        assert m.path == smollm2_path
        assert m.kv_type == "f32" and m.backend == "cpu (numpy)" and "f32 KV cache" in repr(m)
        with pytest.raises(AttributeError):
            m.kv_type = "f16"   # read-only
        with pytest.warns(DeprecationWarning, match="kv_type"):
            assert m.precision == "f32"


def test_default_kv_type_follows_shader_f16():
    from types import SimpleNamespace

    from mdst.gpu.device import resolve_kv_type

    def gpu(f16):
        return SimpleNamespace(profile=SimpleNamespace(shader_f16=f16, name="test adapter"))

    assert resolve_kv_type(None, gpu(True)) == "f16"
    assert resolve_kv_type(None, gpu(False)) == "f32"
    assert resolve_kv_type(None, None) == "f32"   # numpy
    with pytest.raises(mdst.DeviceError, match="shader-f16"):
        resolve_kv_type("f16", gpu(False))


@pytest.mark.parametrize("precision,kv_type,want", [
    ("f16", None, "f16"), ("f32", None, "f32"), ("auto", None, None),
    ("auto", "q8_0", "q8_0"), ("f16", "f16", "f16"), ("f32", "f32", "f32"),
])
def test_deprecated_precision_maps_to_kv_type(precision, kv_type, want):
    from mdst.gpu.device import kv_type_for_precision

    assert kv_type_for_precision(precision, kv_type) == want


def test_deprecated_precision_warns_and_sets_the_kv_type(smollm2_path):
    with pytest.warns(DeprecationWarning, match="kv_type"):
        m = mdst.load(smollm2_path, device="cpu", precision="f16", context_length=32)
    with m:
        assert m.kv_type == "f16"
    with pytest.warns(DeprecationWarning, match="kv_type"):
        m = mdst.load(smollm2_path, device="cpu", precision="auto", context_length=32)
    with m:
        assert m.kv_type == "f32"   # the default on numpy


@pytest.mark.parametrize("precision,kv_type", [("f32", "q8_0"), ("f32", "f16"), ("f16", "f32")])
def test_deprecated_precision_conflicting_with_kv_type(smollm2_path, precision, kv_type):
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="disagree"):
        mdst.load(smollm2_path, device="cpu", precision=precision, kv_type=kv_type)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="precision must be"):
        mdst.load(smollm2_path, device="cpu", precision="f8")


def test_context_defaults_to_model_maximum_capped(smollm2_path):
    with mdst.load(smollm2_path, device="cpu") as m:
        assert m.context_length == min(m.config.context_length, 4096)


def test_logits_shape_and_id_checks(model):
    ids = model.tokenize("Hello world")
    out = model.logits(ids)
    assert out.shape == (len(ids), model.n_vocab) and out.dtype == np.float32
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 49152\)"):
        model.logits([1, 49152])
    with pytest.raises(ValueError, match="empty"):
        model.logits([])
    with pytest.raises(TypeError, match="tokenize"):
        model.logits("Hello")
    with pytest.raises(TypeError):
        model.logits([[1, 2]])


def test_sessions_are_independent_and_logits_is_stateless(model):
    ids = model.tokenize("The quick brown fox jumps")
    whole = model.logits(ids)
    a, b = model.session(), model.session()
    a.feed(ids[:2])
    b.feed(model.tokenize("Something else entirely"))
    rest = a.feed(ids[2:])
    np.testing.assert_allclose(rest, whole[2:], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.logits(ids), whole)
    a.close(); b.close()


def test_session_context_full_is_a_clear_error(model):
    with model.session() as s:
        s.feed(list(range(1, 61)))
        with pytest.raises(ValueError, match="exceed the context length of 64"):
            s.feed(list(range(1, 10)))
        assert s.n_past == 60
        s.feed([1, 2])  # still usable


def test_detokenize_roundtrip(model):
    text = "Hello, world! 123"
    assert model.detokenize(model.tokenize(text, add_bos=False)) == text


def test_close_frees_and_refuses_use(smollm2_path):
    m = mdst.load(smollm2_path, device="cpu")
    m.close()
    with pytest.raises(MdstError, match="closed"):
        m.session()
