"""Split GGUF models (llama.cpp's gguf-split format) read as one: tensors spread over the parts, the same
bytes and logits as the unsplit file, and every broken set of parts a GGUFError naming the fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import mdst
from gguf_split import split_gguf
from mdst.dev import synth
from mdst.errors import GGUFError
from mdst.format.gguf import GGUFFile, describe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama model, whole and split into 3 parts (returns the whole file and the first part)."""
    d = tmp_path_factory.mktemp("split")
    whole = synth.write(d / "tiny.gguf", "llama-tiny", types="Q8_0", seed=7)
    return whole, split_gguf(whole, d / "tiny", 3)


def test_a_split_model_reads_as_the_whole_file(tiny):
    whole, parts = tiny
    with GGUFFile(whole) as a, GGUFFile(parts[0]) as b:
        assert b.paths == [str(p) for p in parts]
        assert {t.file for t in b} == {0, 1, 2}
        assert b.architecture == a.architecture
        assert {k: v for k, v in b.metadata.items() if not k.startswith("split.")}.keys() == a.metadata.keys()
        assert list(b.tensors) == list(a.tensors)
        for name, t in a.tensors.items():
            assert (b.tensors[name].type, b.tensors[name].shape) == (t.type, t.shape)
            assert bytes(b.tensor_bytes(name)) == bytes(a.tensor_bytes(name)) == bytes(b.read(name))
            b.release_pages(name)
        assert "part 3: " in describe(b)


def test_split_model_logits_equal_the_whole_file(tiny):
    whole, parts = tiny
    with mdst.load(whole, device="cpu", context_length=32) as a, \
            mdst.load(parts[0], device="cpu", context_length=32) as b:
        ids = a.tokenize("The split model")
        np.testing.assert_array_equal(b.logits(ids), a.logits(ids))
        assert b.memory_report()["file_bytes"] == sum(p.stat().st_size for p in parts)


def test_split_model_uploads_to_the_gpu(tiny, gpu, capsys):
    """The weight store reads each tensor from its own part; the load bar is drawn only when asked (no TTY here)."""
    whole, parts = tiny
    with mdst.load(whole, device="gpu", context_length=16) as a:
        assert capsys.readouterr().err == ""   # progress=None and stderr is not a terminal: silent
        with mdst.load(parts[0], device="gpu", context_length=16, progress=True) as b:
            assert "loading tiny-00001-of-00003.gguf" in capsys.readouterr().err
            ids = a.tokenize("Hi there")
            np.testing.assert_array_equal(b.logits(ids), a.logits(ids))


@pytest.mark.parametrize("damage,message", [
    ("missing", "part 3 of 3 is missing"),
    ("second", "open its first part, tiny-00001-of-00003.gguf"),
    ("other split", "says it is part 2 of 2, expected part 2 of 3"),
    ("renamed", "is not named NAME-00001-of-00003.gguf"),
    ("tensor count", "should hold 40 tensors but its 3 parts hold 39"),
])
def test_broken_parts_name_the_fix(tiny, tmp_path, damage, message):
    whole, parts = tiny
    for p in parts:
        shutil.copy(p, tmp_path / p.name)
    first = tmp_path / parts[0].name
    if damage == "missing":
        (tmp_path / parts[2].name).unlink()
    elif damage == "second":
        first = tmp_path / parts[1].name
    elif damage == "other split":
        two = split_gguf(whole, tmp_path / "two", 2)
        shutil.copy(two[1], tmp_path / parts[1].name)
    elif damage == "renamed":
        first = first.rename(tmp_path / "tiny.gguf")
    elif damage == "tensor count":
        data = bytearray(first.read_bytes())
        key = b"split.tensors.count"
        at = data.index(key) + len(key) + 4   # after the key and its value type: the i32 count
        data[at:at + 4] = (40).to_bytes(4, "little", signed=True)
        first.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=message.replace(".", r"\.")):
        GGUFFile(first)
