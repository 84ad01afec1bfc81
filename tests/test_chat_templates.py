"""mdst.text.chat.render against transformers' apply_chat_template(..., tokenize=False), template by template.

Every template llama.cpp keeps in models/templates is rendered on the same conversations (system + user,
multi-turn, tool definitions, tool calls and results, reasoning, content parts, documents, with and without
the generation prompt) by both; the outputs must be equal, or both must fail (mdst with TemplateError).
The clock both read through strftime_now is frozen, so the comparison can't straddle midnight.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import pytest

from conftest import need
from mdst.text import chat
from mdst.text.chat import TemplateError, render, special_tokens, template_from_gguf
from mdst.format.gguf import GGUFFile

DATA = Path(__file__).parent / "data" / "chat"

# llama.cpp's models/templates/*.jinja, every one (test_template_list_is_complete keeps this list in step).
TEMPLATES = [
    "Apertus-8B-Instruct", "Apriel-1.6-15b-Thinker-fixed", "Bielik-11B-v3.0-Instruct", "ByteDance-Seed-OSS",
    "Cohere2MoE", "CohereForAI-c4ai-command-r-plus-tool_use", "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
    "GLM-4.6", "GLM-4.7-Flash", "GigaChat3-10B-A1.8B", "GigaChat3.1-10B-A1.8B", "HuggingFaceTB-SmolLM3-3B",
    "Kimi-K2-Instruct", "Kimi-K2-Thinking", "Kimi-K3", "LFM2-8B-A1B", "LFM2.5-8B-A1B", "LFM2.5-Instruct", "MiMo-VL",
    "MiniMax-M1", "MiniMax-M2", "MiniMax-M3", "Mistral-Small-3.2-24B-Instruct-2506",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "NVIDIA-Nemotron-Nano-v2", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "Qwen-QwQ-32B", "Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B",
    "Qwen3-Coder", "Qwen3.5-4B", "Reka-Edge", "Spark2.5", "StepFun3.5-Flash",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai-DeepSeek-V3.1",
    "deepseek-ai-DeepSeek-V3.2", "deepseek-ai-DeepSeek-V4-Flash-0731", "deepseek-ai-DeepSeek-V4",
    "fireworks-ai-llama-3-firefunction-v2",
    "google-gemma-2-2b-it", "google-gemma-4-31B-it-interleaved", "google-gemma-4-31B-it",
    "ibm-granite-granite-3.3-2B-Instruct", "ibm-granite-granite-4.0", "ibm-granite-granite-4.1",
    "inclusionai-ling-3.0-flash", "llama-cpp-deepseek-r1", "llama-cpp-rwkv-world", "meetkai-functionary-medium-v3.1",
    "meetkai-functionary-medium-v3.2", "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
    "meta-llama-Llama-3.3-70B-Instruct", "microsoft-Phi-3.5-mini-instruct", "mistralai-Ministral-3-14B-Reasoning-2512",
    "mistralai-Mistral-Nemo-Instruct-2407", "moonshotai-Kimi-K2", "muse-glimmer", "openai-gpt-oss-120b",
    "openbmb-MiniCPM5-1B", "poolside-Laguna-S-2.1", "poolside-Laguna-XS-2.1", "poolside-Laguna-XS.2", "tencent-Hy3",
    "unsloth-Apriel-1.5", "unsloth-mistral-Devstral-Small-2507", "upstage-Solar-Open-100B",
]
# The families mdst runs: their templates must render these conversations, not merely fail alike.
MDST_FAMILIES = [
    "Qwen-Qwen3-0.6B", "LFM2-8B-A1B", "LFM2.5-8B-A1B", "LFM2.5-Instruct", "mistralai-Ministral-3-14B-Reasoning-2512",
    "google-gemma-2-2b-it", "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
    "meta-llama-Llama-3.3-70B-Instruct", "HuggingFaceTB-SmolLM3-3B",
]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

SYSTEM = {"role": "system", "content": "You are a concise assistant. Answer in one sentence."}
USER = {"role": "user", "content": "What is the capital of France?"}
ASSISTANT = {"role": "assistant", "content": "The capital of France is Paris."}
USER_2 = {"role": "user", "content": "And Japan's? Answer with ünïcödé ✓, a tab\tand \"quotes\" <b>intact</b>."}
WEATHER_QUESTION = {"role": "user", "content": "What's the weather in Paris right now?"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"}},
    "required": ["city"]}}}
TOOL_CALL = {"id": "call0001a", "type": "function",  # 9 alphanumerics: Mistral's templates insist
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
CALLING_ASSISTANT = {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call0001a", "name": "get_weather",
               "content": '{"temperature": 21, "condition": "sunny"}'}
ANSWER = {"role": "assistant", "content": "It is 21 °C and sunny in Paris."}
DOCUMENTS = [{"title": "Paris", "text": "Paris is the capital and largest city of France."}]

# name -> (messages, extra template variables)
CONVERSATIONS = {
    "system_user": ([SYSTEM, USER], {}),
    "user": ([USER], {}),
    "multi_turn": ([USER, ASSISTANT, USER_2], {}),
    "system_multi_turn": ([SYSTEM, USER, ASSISTANT, USER_2], {}),
    "tools": ([SYSTEM, WEATHER_QUESTION], {"tools": [WEATHER_TOOL]}),
    "tool_call": ([WEATHER_QUESTION, CALLING_ASSISTANT, TOOL_RESULT], {"tools": [WEATHER_TOOL]}),
    "tool_call_answered": ([WEATHER_QUESTION, CALLING_ASSISTANT, TOOL_RESULT, ANSWER, USER_2],
                           {"tools": [WEATHER_TOOL]}),
    # OpenAI-style: content None next to tool_calls (both drop the None key)
    "tool_call_null_content": ([WEATHER_QUESTION, {**CALLING_ASSISTANT, "content": None}, TOOL_RESULT],
                               {"tools": [WEATHER_TOOL]}),
    "reasoning": ([USER, {**ASSISTANT, "reasoning_content": "France's capital: Paris."}, USER_2], {}),
    "content_parts": ([{"role": "user", "content": [{"type": "text", "text": "Describe Paris in a word."}]}], {}),
    "documents": ([USER], {"documents": DOCUMENTS}),
    "thinking_off": ([SYSTEM, USER], {"enable_thinking": False}),
}
# Variables a template needs beyond HF's standard ones (firefunction takes its tools as a JSON string).
TEMPLATE_VARIABLES = {
    "fireworks-ai-llama-3-firefunction-v2": {"functions": json.dumps([WEATHER_TOOL["function"]]),
                                             "datetime": "14 Mar 2025"},
}
FROZEN_NOW = dt.datetime(2025, 3, 14, 15, 9, 26)


class _FrozenClock(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:
        return FROZEN_NOW


@pytest.fixture(scope="module")
def transformers_utils():
    """transformers' chat template module."""
    try:
        import transformers.utils.chat_template_utils as utils
    except ImportError:
        need(False, "transformers is not installed (it is in mdst's test extra: pip install -e .[test])")
    return utils


@pytest.fixture
def frozen_clock(transformers_utils, monkeypatch):
    """strftime_now reads the same fixed time in transformers and in mdst."""
    monkeypatch.setattr(transformers_utils, "datetime", _FrozenClock)
    monkeypatch.setattr(chat, "datetime", _FrozenClock)


@functools.cache
def _hf_tokenizer(special_items: tuple[tuple[str, str], ...]):
    """A real transformers tokenizer, built offline, whose special tokens (bos_token, ...) are `special_items`."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    special = dict(special_items)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(special.values()))}
    unk = special.get("unk_token", next(iter(vocab)))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token=unk)), **special)
    assert tokenizer.special_tokens_map == special
    return tokenizer


def tokenizer_for(special: dict[str, str]):
    return _hf_tokenizer(tuple(special.items()))


@pytest.fixture(scope="module")
def hf(transformers_utils):
    return tokenizer_for(SPECIAL)


@pytest.fixture(scope="module")
def template_dir(llama_cpp_src) -> Path:
    return llama_cpp_src / "models" / "templates"


def _outcome(call):
    try:
        return call()
    except Exception as e:  # noqa: BLE001 (the failure is the outcome being compared)
        return e


def assert_same(tokenizer, template: str, messages: list, add_generation_prompt: bool, variables: dict,
                special: dict[str, str]) -> str | Exception:
    """mdst renders what transformers renders, or raises TemplateError where transformers raises."""
    expected = _outcome(lambda: tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt, **variables))
    if isinstance(expected, Exception):
        with pytest.raises(TemplateError) as error:
            render(template, messages, add_generation_prompt=add_generation_prompt, **special, **variables)
        assert str(expected) in str(error.value)  # failed for the same reason
    else:
        assert render(template, messages, add_generation_prompt=add_generation_prompt, **special,
                      **variables) == expected
    return expected


@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "nogen"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", TEMPLATES)
def test_matches_transformers(hf, frozen_clock, template_dir, name, conversation, add_generation_prompt):
    template = (template_dir / f"{name}.jinja").read_text(encoding="utf-8")
    messages, variables = CONVERSATIONS[conversation]
    variables = {**variables, **TEMPLATE_VARIABLES.get(name, {})}
    expected = assert_same(hf, template, messages, add_generation_prompt, variables, SPECIAL)
    if name in MDST_FAMILIES and conversation in ("system_user", "user", "multi_turn", "system_multi_turn"):
        if name != "google-gemma-2-2b-it" or SYSTEM not in messages:  # Gemma 2 rejects system messages
            assert isinstance(expected, str), f"{name} fails on {conversation}: {expected!r}"


def test_template_list_is_complete(template_dir):
    """Every template llama.cpp ships is in TEMPLATES (so a newer llama.cpp can't add one silently)."""
    assert sorted(p.stem for p in template_dir.glob("*.jinja")) == sorted(TEMPLATES)
    assert set(MDST_FAMILIES) <= set(TEMPLATES)


def test_gemma2_rejects_system_messages_like_transformers(hf, template_dir):
    template = (template_dir / "google-gemma-2-2b-it.jinja").read_text(encoding="utf-8")
    with pytest.raises(TemplateError, match="System role not supported"):
        render(template, [SYSTEM, USER], **SPECIAL)
    assert isinstance(assert_same(hf, template, [SYSTEM, USER], True, {}, SPECIAL), Exception)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    with GGUFFile(smollm2_path) as f:
        yield template_from_gguf(f), special_tokens(f)


@pytest.fixture(scope="module")
def gemma(gemma_path):
    with GGUFFile(gemma_path) as f:
        yield template_from_gguf(f), special_tokens(f)


@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "nogen"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_smollm2_gguf_template(frozen_clock, smollm2, conversation, add_generation_prompt):
    template, special = smollm2
    assert template is not None and "<|im_start|>" in template
    assert special["bos_token"] == "<|im_start|>" and special["eos_token"] == "<|im_end|>"
    messages, variables = CONVERSATIONS[conversation]
    assert_same(tokenizer_for(special), template, messages, add_generation_prompt, variables, special)


@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "nogen"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_gemma3_template_with_gguf_tokens(frozen_clock, gemma, conversation, add_generation_prompt):
    """Gemma 3's template with the special tokens of the Gemma 3 GGUF. The 270M file carries no
    tokenizer.chat_template (test_chat_sandbox checks require_template's error for it), so the template is
    tests/data/chat/google-gemma-3-it.jinja, transcribed from google/gemma-3-*-it's tokenizer_config.json."""
    gguf_template, special = gemma
    assert gguf_template is None
    assert special["bos_token"] == "<bos>" and special["eos_token"] == "<eos>"
    template = (DATA / "google-gemma-3-it.jinja").read_text(encoding="utf-8")
    messages, variables = CONVERSATIONS[conversation]
    expected = assert_same(tokenizer_for(special), template, messages, add_generation_prompt, variables, special)
    if conversation in ("system_user", "user", "multi_turn", "system_multi_turn", "content_parts"):
        assert isinstance(expected, str) and expected.startswith("<bos><start_of_turn>user\n")


def test_strftime_now_reads_the_clock():
    before = dt.datetime.now().strftime("%Y-%m-%d")
    text = render("{{ strftime_now('%Y-%m-%d') }}", [USER])
    assert text in (before, dt.datetime.now().strftime("%Y-%m-%d"))


def test_input_objects_are_rebuilt_like_transformers(hf):
    """Dataclass messages and non-JSON values (placeholders) are seen by the template as transformers shows them."""
    import dataclasses

    @dataclasses.dataclass
    class Message:
        role: str
        content: object

    template = "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}{{ flag }}"
    messages = [Message("user", object()), {"role": "assistant", "content": ("a", 1)}]
    expected = hf.apply_chat_template(messages, chat_template=template, tokenize=False, flag=True)
    assert expected == "user=<object>;assistant=('a', 1);True"
    assert render(template, messages, flag=True) == expected


# transformers' additions to jinja2, and the operations mdst routes through its own checks
EXTRAS_TEMPLATE = """{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}
{% generation %}{{ m.role }}: {{ m.content }}{% endgeneration %}
{% endfor %}
{{ tools|tojson(indent=2, sort_keys=True) }}|{{ {'b': 'é', 'a': [1, 2.5, none, true]}|tojson(separators=(',', ':')) }}
{{ dict(a=1)|items|list }}{{ dict.fromkeys(['x', 'y'], 0) }}{{ messages[0]|dictsort }}
{% set ns = namespace(n=0, s='') %}{% for i in range(5) if i != 3 %}{% if i == 1 %}{% continue %}{% endif %}
{% set ns.n = ns.n + i * 2 - 1 %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }} {{ ns }}
{{ bos_token }}{{ eos_token }}{{ strftime_now('%d %b %Y %H:%M') }}{{ 'a' ~ 1 ~ none ~ [2] }}{{ [1, 2] + [3] }}
{{ '%s-%05.1f-%(x)s' % ('x', 2.5) if false else '%s-%05.1f' % ('x', 2.5) }}{{ '{0:>6}|{1!r}|{0}'.format('ab', 'c') }}
{{ 'x'|center(7) }}|{{ 'a\nb'|indent(3, true) }}|{{ 'aXbX'|replace('X', '--') }}|{{ [1, 'b']|join('+') }}
{{ '%d items'|format(3) }}{{ 'l'.ljust(4, '.') }}{{ '7'.zfill(3) }}{{ 10 ** 3 // 7 / 2 }}{{ ('ab' * 3)[1:4] }}
{{ range(3)|map('string')|join }}{{ range(5)|batch(2)|list }}{{ [3, 1, 2]|sort }}{{ 'x y'.split() }}
{% set block %}captured {{ 40 + 2 }}{% endset %}{{ block|upper }}
{% macro m(a, b=2) %}<{{ a }}{{ b }}{{ varargs }}>{% endmacro %}
{{ m(1) }}{{ m(1, 3, 4) }}{% filter title %}shout {{ 'loud' }}{% endfilter %}
{% autoescape true %}{{ '<b>' ~ m(1) ~ '&' }}{{ '<i>' }}{% endautoescape %}{{ '<u>' ~ 1 }}
"""


def test_transformers_extras(hf, frozen_clock):
    messages = [SYSTEM, USER, ASSISTANT]
    variables = {"tools": [WEATHER_TOOL]}
    expected = hf.apply_chat_template(messages, chat_template=EXTRAS_TEMPLATE, tokenize=False, **variables)
    assert "14 Mar 2025 15:09" in expected and "&lt;b&gt;" in expected and "generation" not in expected
    assert render(EXTRAS_TEMPLATE, messages, add_generation_prompt=False, **SPECIAL, **variables) == expected
