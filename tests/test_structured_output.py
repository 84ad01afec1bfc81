"""Structured output: JSON schemas, JSON mode and GBNF/Lark grammars, through the library, the server and the CLI."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import openai
import pytest

import mdst
from mdst import cli
from mdst.text.grammar import Constraint, grammar_for

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}}}
SCHEMAS = {
    "nested": {"type": "object", "additionalProperties": False, "required": ["person", "city"],
               "properties": {"person": PERSON, "city": {"type": "string", "maxLength": 10}}},
    "enum": {"type": "object", "additionalProperties": False, "required": ["color", "size"],
             "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"enum": ["S", "M", "L"]}}},
    "array": {"type": "object", "additionalProperties": False, "required": ["pets"],
              "properties": {"pets": {"type": "array", "minItems": 2, "maxItems": 3,
                                      "items": {"type": "string", "maxLength": 8}}}},
    "bounds": {"type": "object", "additionalProperties": False, "required": ["score", "ratio"],
               "properties": {"score": {"type": "integer", "minimum": 3, "maximum": 7},
                              "ratio": {"type": "number", "minimum": -1, "maximum": 1}}},
    "required": {"type": "object", "additionalProperties": False, "required": ["id", "ok"],
                 "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99}, "ok": {"type": "boolean"},
                                "note": {"type": "string", "maxLength": 6}}},
}
YES_NO = {"gbnf": 'root ::= "yes" | "no"', "lark": 'start: "yes" | "no"'}


@pytest.mark.parametrize("name", SCHEMAS)
def test_chat_replies_follow_the_json_schema(smollm2_openai, name):
    schema = SCHEMAS[name]
    r = smollm2_openai.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=60,
        messages=[{"role": "user", "content": f"Give an example of {name} data as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content   # the grammar ended it, not the limit
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_streamed_and_sampled_replies_follow_the_schema(smollm2_openai):
    schema = SCHEMAS["enum"]
    chunks = smollm2_openai.chat.completions.create(
        model="smollm2", temperature=1.0, seed=7, max_tokens=40, stream=True,
        messages=[{"role": "user", "content": "Pick a T-shirt."}],
        response_format={"type": "json_schema", "json_schema": {"name": "shirt", "schema": schema}})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), schema)


def test_json_object_mode_gives_a_json_object(smollm2_openai):
    r = smollm2_openai.completions.create(model="smollm2", prompt="A cat described as JSON:", temperature=0, max_tokens=60,
                               extra_body={"response_format": {"type": "json_object"}})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].text), dict)


def test_llama_cpp_json_schema_field(smollm2_openai):
    r = smollm2_openai.completions.create(model="smollm2", prompt="Someone's name and age:", temperature=0, max_tokens=40,
                               extra_body={"json_schema": PERSON})
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)


@pytest.mark.parametrize("syntax", YES_NO)
def test_grammar_restricts_the_text_exactly(smollm2_openai, syntax):
    for prompt in ("Is the sky green? Answer:", "Is water wet? Answer:"):
        r = smollm2_openai.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=10,
                                   extra_body={"grammar": YES_NO[syntax]})
        assert r.choices[0].text in ("yes", "no") and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "integer", "minimum": 5, "maximum": 1}}}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"grammar": "root ::= undefined-rule"}, "grammar"),
    ({"grammar": 'root ::= "a"', "json_schema": {"type": "object"}}, "json_schema"),
])
def test_bad_constraints_are_400s(smollm2_openai, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        smollm2_openai.completions.create(model="smollm2", prompt="x", max_tokens=4, extra_body=extra)
    assert e.value.body["param"] == param and e.value.body["message"]


@pytest.mark.parametrize("model", ["smollm2_cpu", "smollm2_gpu"])
def test_a_grammar_that_allows_everything_keeps_the_sampled_text(request, model):
    """Constrained steps draw the same uniform numbers as unconstrained ones: an all-allowing grammar changes nothing
    (on the GPU: the masked draw's kernels pick what the free draw's pick)."""
    m = request.getfixturevalue(model)
    options = dict(max_tokens=12, temperature=0.9, seed=11)
    free = m.generate("Once upon a time", **options)
    assert m.generate("Once upon a time", grammar=r"start: /(.|\n)*/", **options) == free


COLOURS = 'root ::= " " ("red" | "green" | "blue" | "yellow") "."'


def test_constrained_greedy_is_the_argmax_of_the_allowed_tokens(smollm2_gpu):
    """On the GPU (lavapipe): the text is the chain of argmaxes over what the grammar allows at each step."""
    m, prompt = smollm2_gpu, "Name a colour:"
    text = m.generate(prompt, max_tokens=10, grammar=COLOURS)
    assert m.last_stats["finish_reason"] == "stop"
    constraint = Constraint(grammar_for(grammar=COLOURS), m.tokenizer)
    picked = []
    with m.session() as s:
        logits = s.prefill(m.tokenize(prompt))
        while not constraint.done:
            picked.append(int(np.argmax(np.where(constraint.allowed(), logits, -np.inf))))
            constraint.advance(picked[-1])
            logits = s.prefill(picked[-1:])
    assert text == m.detokenize(picked) and text in (" red.", " green.", " blue.", " yellow.")


@pytest.mark.parametrize("options", [{}, {"temperature": 0.9, "seed": 5},
                                     {"temperature": 1.3, "top_k": 64, "top_p": 0.95, "repeat_penalty": 1.3, "seed": 2}])
def test_the_gpu_mask_picks_what_the_host_picks(smollm2_gpu, monkeypatch, options):
    """A constrained step on the GPU (the mask uploaded with the draw, only the token read back) picks what the
    host picks from the read-back logits with the same mask and uniform number (logprobs=True takes that path);
    a large bias on a token the grammar forbids outside strings (" Paris") does not bring it back there."""
    from mdst.runtime.engine import GpuEngine
    m = smollm2_gpu
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    kw = dict(max_tokens=24, response_format=fmt, logit_bias={m.tokenize(" Paris", add_bos=False)[0]: 100.0},
              **options)
    reads = []
    read_logits = GpuEngine._read_logits
    monkeypatch.setattr(GpuEngine, "_read_logits", lambda self, *a: reads.append(1) or read_logits(self, *a))
    on_gpu = m.generate("Someone's name and age as JSON:", **kw)
    assert not reads   # token ids only
    on_host = m.generate("Someone's name and age as JSON:", logprobs=True, **kw)
    assert reads   # the host path did read the logits
    assert on_gpu == str(on_host)
    jsonschema.validate(json.loads(on_gpu), PERSON)


def test_mask_bits_follow_the_grammar(smollm2_cpu):
    constraint = Constraint(grammar_for(grammar=YES_NO["gbnf"]), smollm2_cpu.tokenizer)
    words = constraint.bitmask()
    assert words.dtype == np.uint32 and words.size == -(-smollm2_cpu.n_vocab // 32)
    allowed = np.flatnonzero(constraint.allowed())
    assert {smollm2_cpu.detokenize([t]) for t in allowed} <= {"y", "ye", "yes", "n", "no"}
    assert smollm2_cpu.tokenize("yes", add_bos=False)[0] in allowed
    for tok in smollm2_cpu.tokenize("yes", add_bos=False):
        assert not constraint.done
        constraint.advance(tok)
    assert constraint.done   # complete: generation ends here, without waiting for an end-of-generation token


def test_cli_generate_with_a_grammar_and_a_schema(smollm2_path, tmp_path, capsys):
    (tmp_path / "g.gbnf").write_text(YES_NO["gbnf"])
    (tmp_path / "s.json").write_text(json.dumps(PERSON))
    assert cli.main(["generate", "-m", smollm2_path, "--device", "cpu", "--context", "64", "-n", "8",
                     "--grammar", str(tmp_path / "g.gbnf"), "Is fire hot? Answer:"]) == 0
    assert capsys.readouterr().out in ("yes\n", "no\n")
    (tmp_path / "bad.json").write_text('{"type": "integer", "minimum": 5, "maximum": 1}')
    assert cli.main(["generate", "--json-schema", str(tmp_path / "bad.json"), "x"]) == 2
    assert "JSON schema that is not valid" in capsys.readouterr().err
