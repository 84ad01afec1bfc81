"""Tool calls and reasoning: formats found from llama.cpp's templates, replies parsed into OpenAI's tool_calls (whole
and streamed), think blocks as reasoning_content, the prompt side (tools rendered like transformers renders them,
tool_choice), and the server end to end with the openai client on SmolLM2."""

from __future__ import annotations

import json

import jsonschema
import llguidance
import openai
import pytest

import mdst
from mdst.text.chat import TemplateError, render
from mdst.text.grammar import engine_tokenizer
from mdst.text.reply import ChatDelta, ChatReply, ReplyParser, think_tags
from mdst.text.tool_calls import FALLBACK, FORMATS, detect, parse
from mdst.text.tool_prompt import render_prompt, tool_prompt
from mdst.serve.server import create_app
from test_chat_templates import SPECIAL, TEMPLATES, WEATHER_QUESTION, WEATHER_TOOL, tokenizer_for
from test_chat_templates import smollm2, template_dir  # noqa: F401 (fixtures)
from test_server import RunningServer

FORMAT = {f.name: f for f in FORMATS}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "The time in a zone.",
                                              "parameters": {"type": "object", "properties": {
                                                  "zone": {"type": "string"}, "days": {"type": "integer"}}}}}
TOOLS = [WEATHER_TOOL, TIME_TOOL]

# The format each llama.cpp template teaches: None where mdst does not read it (replies stay content);
# templates that never render `tools` get the fallback (Hermes).
EXPECTED_FORMAT = {
    "Apertus-8B-Instruct": "apertus", "Apriel-1.6-15b-Thinker-fixed": "tool_calls_json",
    "Bielik-11B-v3.0-Instruct": "hermes", "ByteDance-Seed-OSS": "seed_oss", "Cohere2MoE": "command_r",
    "CohereForAI-c4ai-command-r-plus-tool_use": None, "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "command_r",
    "GLM-4.6": "glm", "GLM-4.7-Flash": "glm", "GigaChat3-10B-A1.8B": None, "GigaChat3.1-10B-A1.8B": None,
    "HuggingFaceTB-SmolLM3-3B": "hermes", "Kimi-K2-Instruct": "kimi_k2", "Kimi-K2-Thinking": "kimi_k2",
    "Kimi-K3": None, "LFM2-8B-A1B": "lfm2", "LFM2.5-8B-A1B": "lfm2", "LFM2.5-Instruct": "lfm2", "MiMo-VL": "hermes",
    "MiniMax-M1": "tool_calls_json", "MiniMax-M2": "minimax_m2", "MiniMax-M3": None,
    "Mistral-Small-3.2-24B-Instruct-2506": "mistral_args", "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": "qwen3_coder",
    "NVIDIA-Nemotron-Nano-v2": "nemotron", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes", "Qwen-QwQ-32B": "hermes",
    "Qwen-Qwen2.5-7B-Instruct": "hermes", "Qwen-Qwen3-0.6B": "hermes", "Qwen3-Coder": "qwen3_coder",
    "Qwen3.5-4B": "qwen3_coder", "Reka-Edge": "hermes", "Spark2.5": "glm", "StepFun3.5-Flash": "qwen3_coder",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": "hermes", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "hermes",
    "deepseek-ai-DeepSeek-V3.1": "hermes", "deepseek-ai-DeepSeek-V3.2": None,
    "deepseek-ai-DeepSeek-V4-Flash-0731": None, "deepseek-ai-DeepSeek-V4": None,
    "fireworks-ai-llama-3-firefunction-v2": "hermes", "google-gemma-2-2b-it": "hermes",
    "google-gemma-4-31B-it-interleaved": None, "google-gemma-4-31B-it": None,
    "ibm-granite-granite-3.3-2B-Instruct": "granite", "ibm-granite-granite-4.0": "hermes",
    "ibm-granite-granite-4.1": "hermes", "inclusionai-ling-3.0-flash": "glm", "llama-cpp-deepseek-r1": "deepseek",
    "llama-cpp-rwkv-world": "hermes", "meetkai-functionary-medium-v3.1": "functionary_v3_1",
    "meetkai-functionary-medium-v3.2": None, "meta-llama-Llama-3.1-8B-Instruct": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3", "meta-llama-Llama-3.3-70B-Instruct": "llama3",
    "microsoft-Phi-3.5-mini-instruct": "hermes", "mistralai-Ministral-3-14B-Reasoning-2512": "mistral_args",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral", "moonshotai-Kimi-K2": "kimi_k2", "muse-glimmer": None,
    "openai-gpt-oss-120b": None, "openbmb-MiniCPM5-1B": None, "poolside-Laguna-S-2.1": "glm",
    "poolside-Laguna-XS-2.1": "glm", "poolside-Laguna-XS.2": "glm", "tencent-Hy3": None,
    "unsloth-Apriel-1.5": "tool_calls_json", "unsloth-mistral-Devstral-Small-2507": "mistral_args",
    "upstage-Solar-Open-100B": None,
}
# Templates that render an assistant's tool calls as something else than the calls the model writes:
# LFM2 and Granite 3.3 render only the content, Seed-OSS writes non-string arguments as Python reprs.
NOT_ROUND_TRIPPED = {"LFM2-8B-A1B", "LFM2.5-Instruct", "ibm-granite-granite-3.3-2B-Instruct", "ByteDance-Seed-OSS"}


@pytest.fixture(scope="module")
def templates(template_dir):
    return {name: (template_dir / f"{name}.jinja").read_text(encoding="utf-8") for name in TEMPLATES}


def calls_of(tool_calls: list[dict]) -> list[tuple[str, object]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls]


def streamed(fmt, text: str, size: int, **options) -> ChatReply:
    """The reply ReplyParser makes of `text` arriving `size` characters at a time."""
    parser = ReplyParser(fmt, **options)
    deltas = [d for i in range(0, len(text), size) for d in parser.push(text[i:i + size])] + parser.finish()
    return ChatReply.merge(ChatDelta.of(d) for d in deltas)


# ---- formats and templates --------------------------------------------------------------------------------------

def test_every_template_has_its_expected_format(templates):
    assert set(EXPECTED_FORMAT) == set(TEMPLATES)
    found = {name: getattr(detect(source), "name", None) for name, source in templates.items()}
    assert found == EXPECTED_FORMAT
    assert detect("{{ messages[0].content }}") is FALLBACK


def _assistant_turn(template: str, calls: list) -> str | None:
    """What `template` writes for an assistant turn of `calls` (after the prompt up to it), or None if it refuses."""
    question, answer = [WEATHER_QUESTION], {"role": "assistant", "content": "", "tool_calls": calls}
    try:
        before = render(template, question, add_generation_prompt=True, tools=TOOLS, **SPECIAL)
        whole = render(template, [*question, answer], add_generation_prompt=False, tools=TOOLS, **SPECIAL)
    except TemplateError:
        return None
    if not whole.startswith(before):  # a template that writes its think block differently in the history
        before = render(template, question, add_generation_prompt=False, tools=TOOLS, **SPECIAL)
    return whole[len(before):]


@pytest.mark.parametrize("name", [n for n, f in EXPECTED_FORMAT.items() if f])
def test_templates_own_tool_calls_parse_back(templates, name):
    """The calls a template writes into the history parse back with the format detected for it."""
    template, fmt = templates[name], detect(templates[name])
    if fmt is None or "tools" not in template or name in NOT_ROUND_TRIPPED:
        pytest.skip("the template's calls are not read, or not rendered as the model writes them")
    calls = [{"id": "call0001a", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}},
             {"id": "call0002b", "type": "function",
              "function": {"name": "get_time", "arguments": {"zone": "Europe/Zürich", "days": 3}}}]
    turn = _assistant_turn(template, calls)
    if turn is None:  # e.g. Llama 3.x: "This model only supports single tool-calls at once!"
        calls = calls[:1]
        turn = _assistant_turn(template, calls)
    if turn is None:
        assert isinstance(_outcome_of_transformers(template, calls), Exception)  # the template's own refusal
        return
    content, parsed = parse(fmt, turn, TOOLS)
    assert calls_of(parsed) == [(c["function"]["name"], c["function"]["arguments"]) for c in calls], turn
    assert calls_of(streamed(fmt, turn, 3, tools=TOOLS).tool_calls) == calls_of(parsed)


def _outcome_of_transformers(template: str, calls: list):
    messages = [WEATHER_QUESTION, {"role": "assistant", "content": "", "tool_calls": calls}]
    try:
        return tokenizer_for(SPECIAL).apply_chat_template(messages, chat_template=template, tokenize=False,
                                                          tools=TOOLS)
    except Exception as e:  # noqa: BLE001 (the failure is the outcome)
        return e


OPENAI_CONVERSATION = [  # as an OpenAI client sends it: arguments as JSON text, content None beside tool calls
    WEATHER_QUESTION,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call0001a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call0001a", "name": "get_weather", "content": '{"temperature": 21}'},
]


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
@pytest.mark.parametrize("name", [n for n in TEMPLATES if n in EXPECTED_FORMAT])
def test_tool_prompt_renders_like_transformers(templates, name, tool_choice):
    """OpenAI-shaped messages with tools render as transformers renders them (with object arguments, the shape
    templates expect), or both fail; tool_choice="none" leaves the tools out."""
    template = templates[name]
    if "tools" not in template:
        pytest.skip("the template renders no tools (the fallback is tested on SmolLM2's template)")
    plan = tool_prompt(template, OPENAI_CONVERSATION, TOOLS, tool_choice)
    as_objects = [OPENAI_CONVERSATION[0], {"role": "assistant", "tool_calls": [
        {**OPENAI_CONVERSATION[1]["tool_calls"][0], "function": {"name": "get_weather",
                                                                 "arguments": {"city": "Paris", "unit": "celsius"}}}]},
                  OPENAI_CONVERSATION[2]]
    tools = TOOLS if tool_choice == "auto" else None
    try:
        expected = tokenizer_for(SPECIAL).apply_chat_template(as_objects, chat_template=template, tokenize=False,
                                                              add_generation_prompt=True, tools=tools)
    except Exception:  # noqa: BLE001
        with pytest.raises(TemplateError):
            render(template, plan.messages, tools=plan.tools, **SPECIAL)
        return
    assert render(template, plan.messages, tools=plan.tools, **SPECIAL) == expected
    assert plan.opening == "" and (plan.fmt is None) == (tool_choice == "none" or EXPECTED_FORMAT[name] is None)


def test_fallback_describes_the_tools_to_a_template_without_them(smollm2_template):
    plan = tool_prompt(smollm2_template, OPENAI_CONVERSATION, TOOLS, "required")
    text = render_prompt(smollm2_template, plan, **SPECIAL) + plan.opening
    assert plan.fmt is FALLBACK and plan.tools is None
    assert text.startswith("<|im_start|>system\n# Tools") and json.dumps(WEATHER_TOOL) in text
    # the earlier call is written the way the model is asked to write calls, and the reply opens one
    earlier = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
    assert f"<tool_call>\n{earlier}\n</tool_call>" in text
    assert text.endswith("<|im_start|>assistant\n<tool_call>\n")
    # without tools too, the earlier call is written out: the template itself can't render a content-less message
    with pytest.raises(TemplateError):
        render(smollm2_template, OPENAI_CONVERSATION, **SPECIAL)
    plain = tool_prompt(smollm2_template, OPENAI_CONVERSATION, None)
    assert f"<|im_start|>assistant\n<tool_call>\n{earlier}\n</tool_call><|im_end|>" in render_prompt(
        smollm2_template, plain, **SPECIAL)


def test_fallback_goes_to_the_user_message_where_a_template_has_no_system_role(templates):
    gemma2 = templates["google-gemma-2-2b-it"]
    plan = tool_prompt(gemma2, [WEATHER_QUESTION], TOOLS)
    text = render_prompt(gemma2, plan, **SPECIAL)
    assert text.startswith("<s><start_of_turn>user\n# Tools") and WEATHER_QUESTION["content"] in text
    with pytest.raises(TemplateError, match="System role not supported"):  # with a system message of its own
        render_prompt(gemma2, tool_prompt(gemma2, [{"role": "system", "content": "Be brief."}, WEATHER_QUESTION],
                                          TOOLS), **SPECIAL)


@pytest.fixture(scope="module")
def smollm2_template(smollm2):
    return smollm2[0]


def test_tool_choice_openings_and_errors(templates):
    qwen = templates["Qwen-Qwen3-0.6B"]
    named = {"type": "function", "function": {"name": "get_time"}}
    # formats with a call grammar: the prompt opens the section, the grammar writes the call
    for choice in (named, "required"):
        plan = tool_prompt(qwen, [WEATHER_QUESTION], TOOLS, choice)
        assert plan.opening == "<tool_call>\n" and plan.grammar is not None
    llama = tool_prompt(templates["meta-llama-Llama-3.1-8B-Instruct"], [WEATHER_QUESTION], TOOLS, named)
    assert llama.opening == "" and llama.grammar is not None
    # a format without one: the named call's opening only
    mistral3 = tool_prompt(templates["mistralai-Ministral-3-14B-Reasoning-2512"], [WEATHER_QUESTION], TOOLS, named)
    assert mistral3.opening == "[TOOL_CALLS]get_time[ARGS]" and mistral3.grammar is None
    assert tool_prompt(qwen, [WEATHER_QUESTION], TOOLS, "auto").grammar is None
    none = tool_prompt(qwen, [WEATHER_QUESTION], TOOLS, "none")
    assert none.tools is None and none.fmt is None
    with pytest.raises(ValueError, match="not among the tools"):
        tool_prompt(qwen, [WEATHER_QUESTION], TOOLS, {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError, match="tool_choice must be one of"):
        tool_prompt(qwen, [WEATHER_QUESTION], TOOLS, "always")
    with pytest.raises(ValueError, match="needs tools"):
        tool_prompt(qwen, [WEATHER_QUESTION], None, "required")
    with pytest.raises(ValueError, match="can't be forced"):
        tool_prompt(templates["openai-gpt-oss-120b"], [WEATHER_QUESTION], TOOLS, "required")
    with pytest.raises(ValueError, match="tools item 0"):
        tool_prompt(qwen, [WEATHER_QUESTION], [{"type": "function"}])
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"$ref": "#/$defs/missing"}}}}}
    with pytest.raises(ValueError, match="parameters schema of tool f"):
        tool_prompt(qwen, [WEATHER_QUESTION], [bad], "required")


# (template, the call each format's grammar should accept after the opening, as the parser reads it)
GRAMMAR_CALLS = {
    "Qwen-Qwen3-0.6B": '{"name": "get_time", "arguments": {"zone": "UTC", "days": 2}}\n</tool_call>',
    "mistralai-Mistral-Nemo-Instruct-2407": '{"name": "get_time", "arguments": {"zone": "UTC", "days": 2}}]',
    "ibm-granite-granite-3.3-2B-Instruct": '{"name": "get_time", "arguments": {"zone": "UTC", "days": 2}}]',
    "meta-llama-Llama-3.1-8B-Instruct": '{"name": "get_time", "parameters": {"zone": "UTC", "days": 2}}',
}


@pytest.mark.parametrize("name", sorted(GRAMMAR_CALLS))
def test_forced_call_grammar_accepts_a_valid_call_only(templates, smollm2_cpu, name):
    """Each covered format's grammar takes a call of an allowed tool with valid arguments (which parses back into
    that call) and nothing else: not another tool's name under a named choice, not arguments off the schema."""
    template, call = templates[name], GRAMMAR_CALLS[name]
    tokenizer = smollm2_cpu.tokenizer

    def accepted(plan, text: str) -> bool:
        matcher = llguidance.LLMatcher(engine_tokenizer(tokenizer), plan.grammar, log_level=0)
        ids = tokenizer.encode(text, add_bos=False, special=False)
        return matcher.validate_tokens(ids) == len(ids) and matcher.consume_tokens(ids) and matcher.is_accepting()

    required = tool_prompt(template, [WEATHER_QUESTION], TOOLS, "required")
    assert accepted(required, call)
    assert calls_of(parse(required.fmt, required.opening + call, TOOLS)[1]) == [("get_time", {"zone": "UTC",
                                                                                          "days": 2})]
    assert not accepted(required, call.replace('"days": 2', '"days": "two"'))    # days is an integer
    assert not accepted(required, call.replace("get_time", "get_tim"))
    named = tool_prompt(template, [WEATHER_QUESTION], TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert not accepted(named, call) and required.opening == named.opening


# ---- parsing replies --------------------------------------------------------------------------------------------

NESTED = {"city": "Zürich", "filters": {"hours": [6, 12], "fields": {"wind": True, "note": "naïve ✓ \"quoted\""}}}
# (format, reply, content, [(name, arguments)])
REPLIES = [
    ("hermes", 'Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(NESTED)
     + '}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "Asia/東京"}}\n</tool_call>',
     "Let me look that up.", [("get_weather", NESTED), ("get_time", {"zone": "Asia/東京"})]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # a } short
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>', []),
    ("hermes", '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", '
     '"arguments": {"city": ', '<tool_call>\n{"name": "get_weather", "arguments": {"city":', [("get_time", {})]),
    ("hermes", "I can't call <tool_call> here, sorry.", "I can't call <tool_call> here, sorry.", []),
    ("qwen3_coder", 'Checking.\n<tool_call>\n<function=get_time>\n<parameter=zone>\n123\n</parameter>\n<parameter=days>'
     '\n3\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSão Paulo'
     '\n</parameter>\n<parameter=filters>\n{"hours": [1]}\n</parameter>\n</function>\n</tool_call>',
     "Checking.", [("get_time", {"zone": "123", "days": 3}), ("get_weather", {"city": "São Paulo",
                                                                             "filters": {"hours": [1]}})]),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + json.dumps(NESTED, ensure_ascii=False)
     + ', "id": "a1b2c3d4e"}, {"name": "get_time", "arguments": {}}]', "",
     [("get_weather", NESTED), ("get_time", {})]),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}', 
     '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}', []),
    ("qwen3_coder", 'Checking.\n<tool_call>\n<function=get_time>\n<parameter=zone>\nUTC\n</parameter>\n</tool_call>',
     'Checking.\n<tool_call>\n<function=get_time>\n<parameter=zone>\nUTC\n</parameter>\n</tool_call>', []),
    ("kimi_k2", '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:0<|tool_call_argument_begin|>'
     '{zone: UTC}<|tool_call_end|><|tool_calls_section_end|>', '<|tool_calls_section_begin|><|tool_call_begin|>'
     'functions.get_time:0<|tool_call_argument_begin|>{zone: UTC}<|tool_call_end|><|tool_calls_section_end|>', []),
    ("mistral_args", 'Sure.[TOOL_CALLS]get_weather[ARGS]' + json.dumps(NESTED, ensure_ascii=False)
     + '[TOOL_CALLS]get_time[CALL_ID]x9Y8z7W6v[ARGS]{"zone": "UTC"}', "Sure.",
     [("get_weather", NESTED), ("get_time", {"zone": "UTC"})]),
    ("llama3", '{"name": "get_weather", "parameters": ' + json.dumps(NESTED) + '}', "", [("get_weather", NESTED)]),
    ("llama3", '<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}; {"name": "get_weather", '
     '"parameters": {"city": "Oslo"}}', "", [("get_time", {"zone": "UTC"}), ("get_weather", {"city": "Oslo"})]),
    ("llama3", '{"answer": 42} is the JSON you asked for.', '{"answer": 42} is the JSON you asked for.', []),
    ("lfm2", 'One moment.<|tool_call_start|>[get_weather(city="Zürich", hours=[6, 12]), get_time(zone="UTC")]'
     '<|tool_call_end|>', "One moment.", [("get_weather", {"city": "Zürich", "hours": [6, 12]}),
                                          ("get_time", {"zone": "UTC"})]),
    ("lfm2", '<|tool_call_start|>[get_weather(city=__import__("os"))]<|tool_call_end|>',
     '<|tool_call_start|>[get_weather(city=__import__("os"))]<|tool_call_end|>', []),
    ("kimi_k2", '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>'
     + json.dumps(NESTED) + '<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>'
     '{}<|tool_call_end|><|tool_calls_section_end|>', "", [("get_weather", NESTED), ("get_time", {})]),
    ("deepseek", 'Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n'
     + json.dumps(NESTED) + '\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>', "Let me check.", [("get_weather", NESTED)]),
    ("deepseek", '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"zone": "UTC"}<｜tool▁call▁end｜>'
     '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Lima"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>', "",
     [("get_time", {"zone": "UTC"}), ("get_weather", {"city": "Lima"})]),
    ("glm", 'Looking.\n<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>Europe/Zürich</arg_value>\n<arg_key>'
     'days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>', "Looking.",
     [("get_time", {"zone": "Europe/Zürich", "days": 2})]),
    ("minimax_m2", '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
     '</invoke>\n<invoke name="get_time">\n<parameter name="days">4</parameter>\n</invoke>\n</minimax:tool_call>', "",
     [("get_weather", {"city": "Paris"}), ("get_time", {"days": 4})]),
    ("command_r", '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": '
     + json.dumps(NESTED) + '}\n]<|END_ACTION|>', "", [("get_weather", NESTED)]),
    ("granite", '<|tool_call|>[{"name": "get_time", "arguments": {"zone": "UTC"}}]', "",
     [("get_time", {"zone": "UTC"})]),
    ("apertus", '<|tools_prefix|>[{"get_weather": {"city": "Bern"}}, {"get_time": {}}]<|tools_suffix|>', "",
     [("get_weather", {"city": "Bern"}), ("get_time", {})]),
    ("tool_calls_json", '<tool_calls>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n{"name": "get_weather", '
     '"arguments": {"city": "Rome"}}\n</tool_calls>', "", [("get_time", {"zone": "UTC"}),
                                                          ("get_weather", {"city": "Rome"})]),
    ("functionary_v3_1", '<function=get_weather>{"city": "Paris"}</function>', "",
     [("get_weather", {"city": "Paris"})]),
]


@pytest.mark.parametrize("fmt,reply,content,calls", REPLIES, ids=[f"{r[0]}-{i}" for i, r in enumerate(REPLIES)])
def test_replies_parse_whole_and_streamed(fmt, reply, content, calls):
    got_content, got_calls = parse(FORMAT[fmt], reply, TOOLS)
    assert (got_content, calls_of(got_calls)) == (content, calls)
    assert all(c["type"] == "function" and c["id"] for c in got_calls)
    for size in (1, 7):
        whole = streamed(FORMAT[fmt], reply, size, tools=TOOLS)
        assert (str(whole), calls_of(whole.tool_calls)) == (content, calls)
        assert whole.message["content"] == (content or None if calls else content)


def test_call_ids_kept_or_made():
    _, (kept,) = parse(FORMAT["mistral_args"], '[TOOL_CALLS]f[CALL_ID]abc123XYZ[ARGS]{}')
    assert kept["id"] == "abc123XYZ"
    _, (made,) = parse(FORMAT["mistral_args"], '[TOOL_CALLS]f[ARGS]{}')
    assert len(made["id"]) == 9 and made["id"].isalnum()  # Mistral's templates accept no other ids
    _, (hermes,) = parse(FORMAT["hermes"], '<tool_call>{"name": "f", "arguments": {}}</tool_call>')
    assert hermes["id"].startswith("call_")


def test_stream_holds_a_possible_opening_until_it_can_tell():
    parser = ReplyParser(FORMAT["hermes"], tools=TOOLS)
    assert parser.push("It is sunny <tool") == [{"content": "It is sunny"}]
    assert parser.push("box> and warm") == [{"content": " <toolbox> and warm"}]
    assert parser.push(" <tool_call>\n{\"name\": \"get_time\",") == []
    end = parser.push(' "arguments": {}}\n</tool_call>') + parser.finish()
    assert [d["tool_calls"][0] for d in end][0]["function"] == {"name": "get_time", "arguments": ""}
    assert end[1] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}


def test_stream_reports_a_call_once_text_follows_it():
    """Calls that stand alone are reported when the next text shows they are complete, not at the end."""
    parser = ReplyParser(FORMAT["hermes"], tools=TOOLS)
    first = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    assert parser.push(first) == []  # the reply may end here, or go on
    early = parser.push('\n<tool_call>\n{"name": "get_weather", "arguments": {"ci')
    assert [d["tool_calls"][0]["index"] for d in early] == [0, 0] and early[1]["tool_calls"][0]["function"] == {
        "arguments": '{"zone": "UTC"}'}
    rest = parser.push('ty": "Oslo"}}\n</tool_call>') + parser.finish()
    assert [d["tool_calls"][0]["index"] for d in rest] == [1, 1]
    # a list of calls (Mistral's JSON list) is complete only at its end
    listed = ReplyParser(FORMAT["mistral"], tools=TOOLS)
    assert listed.push('[TOOL_CALLS][{"name": "get_time", "arguments": {}}, {"name": "g') == []


def test_parallel_tool_calls_false_keeps_the_first():
    reply = REPLIES[0][1]
    assert calls_of(streamed(FORMAT["hermes"], reply, 5, tools=TOOLS, parallel_tool_calls=False).tool_calls) == \
        [("get_weather", NESTED)]


# ---- reasoning --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 4, 1000])
def test_think_block_is_reasoning_content(templates, size):
    think = think_tags(templates["Qwen-Qwen3-0.6B"])
    assert think == ("<think>", "</think>")
    reply = streamed(None, "<think>\nThe user wants Paris.\nSo: Paris.\n</think>\n\nParis is the capital.", size,
                     think=think)
    assert (str(reply), reply.reasoning_content) == ("Paris is the capital.", "The user wants Paris.\nSo: Paris.")
    assert reply.message == {"role": "assistant", "content": "Paris is the capital.",
                             "reasoning_content": "The user wants Paris.\nSo: Paris."}
    # the prompt opened the block (DeepSeek R1, Qwen3 thinking templates): the reply starts inside it
    opened = streamed(None, "Hmm, a<b.</think>Yes.", size, think=think, reasoning=True)
    assert (str(opened), opened.reasoning_content) == ("Yes.", "Hmm, a<b.")
    # cut short inside the block: all of it is reasoning
    cut = streamed(None, "<think>Still thinking", size, think=think)
    assert (str(cut), cut.reasoning_content) == ("", "Still thinking")
    # thinking, then a call
    both = streamed(FORMAT["hermes"], '<think>Need the weather.</think>\n<tool_call>\n{"name": "get_weather", '
                    '"arguments": {"city": "Paris"}}\n</tool_call>', size, think=think, tools=TOOLS)
    assert both.reasoning_content == "Need the weather." and calls_of(both.tool_calls) == [
        ("get_weather", {"city": "Paris"})] and both.message["content"] is None
    # no think tags in the template: a <think> is content
    assert str(streamed(None, "<think>x</think>y", size)) == "<think>x</think>y"


def test_mistral_think_tags(templates):
    think = think_tags(templates["mistralai-Ministral-3-14B-Reasoning-2512"])
    reply = streamed(FORMAT["mistral_args"], '[THINK]Call it.[/THINK][TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}', 3,
                     think=think, tools=TOOLS)
    assert reply.reasoning_content == "Call it." and calls_of(reply.tool_calls) == [("get_time", {"zone": "UTC"})]


# ---- end to end: the server and the openai client on SmolLM2 (CPU) ----------------------------------------------

CITY_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}
E2E = dict(model="smollm2", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[CITY_TOOL],
           tool_choice=FORCED, max_tokens=40, temperature=0)


@pytest.fixture(scope="module")
def forced_reply(smollm2_openai):
    return smollm2_openai.chat.completions.create(**E2E)


def test_forced_tool_call_through_the_openai_client(forced_reply):
    """A named choice comes back as exactly that tool's call, its arguments valid for its schema."""
    choice = forced_reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY_TOOL["function"]["parameters"])


STRICT_TOOLS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}
    for name, properties in [("get_weather", {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}),
                             ("get_time", {"zone": {"type": "string"}, "hours": {"type": "integer"}})]]


def test_required_tool_call_is_one_of_the_tools(smollm2_cpu):
    """tool_choice="required" with two tools gives one call of either, with arguments valid for that tool."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in STRICT_TOOLS}
    reply = smollm2_cpu.chat([{"role": "user", "content": "What time is it in Tokyo?"}], tools=STRICT_TOOLS,
                           tool_choice="required", max_tokens=40, temperature=0)
    (call,) = reply.tool_calls
    assert call["function"]["name"] in schemas and not str(reply)
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    assert smollm2_cpu.last_stats["finish_reason"] == "stop"   # the grammar ended the reply after the call
    with pytest.raises(ValueError, match="response_format or grammar"):
        smollm2_cpu.chat([WEATHER_QUESTION], tools=TOOLS, tool_choice="required",
                       response_format={"type": "json_object"})


def test_streamed_tool_call_chunks(smollm2_openai, forced_reply):
    chunks = list(smollm2_openai.chat.completions.create(stream=True, **E2E))
    whole = forced_reply.choices[0]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    parts = [t for d in deltas for t in d.tool_calls or ()]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.finish_reason]
    first, *rest = parts
    assert first.index == 0 and first.id and first.type == "function" and first.function.name == "get_weather"
    assert first.function.arguments == "" and all(p.index == 0 and p.id is None and p.function.name is None
                                                  for p in rest)
    assert "".join(p.function.arguments for p in rest) == whole.message.tool_calls[0].function.arguments


@pytest.mark.parametrize("extra,param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"tools": "get_weather"}, "tools"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tool_requests_get_400s(smollm2_openai, extra, param):
    body = {**E2E, "tools": [CITY_TOOL], **extra}
    with pytest.raises(openai.BadRequestError) as error:
        smollm2_openai.chat.completions.create(**body)
    assert error.value.body["param"] == param


THINKING_TEMPLATE = """{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{{ '<|im_start|>assistant\\n<think>\\n' }}"""


def test_server_reports_reasoning_content(smollm2_cpu):
    """A template whose generation prompt opens a think block: the reply so far is reasoning, in the message
    and in the stream's deltas, and it is what the model writes after that prompt."""
    import httpx

    messages = [{"role": "user", "content": "Hi"}]
    written = smollm2_cpu.generate(render(THINKING_TEMPLATE, messages), max_tokens=4, add_bos=False)
    assert written.strip()
    running = RunningServer(create_app(smollm2_cpu, model_name="smollm2", chat_template=THINKING_TEMPLATE))
    try:
        body = {"messages": messages, "max_tokens": 4, "temperature": 0}
        reply = httpx.post(running.url + "/v1/chat/completions", json=body, timeout=120).json()
        message = reply["choices"][0]["message"]
        assert message == {"role": "assistant", "content": "", "reasoning_content": written.strip()}
        with httpx.stream("POST", running.url + "/v1/chat/completions", json={**body, "stream": True},
                          timeout=120) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == written.strip()
        assert not any(d.get("content") for d in deltas)
    finally:
        running.stop()


def test_openai_sdk_messages_render_with_object_arguments(templates):
    """A reply's message sent back as the SDK's object: its JSON-text arguments reach the template as an object."""
    from openai.types.chat import ChatCompletionMessage

    llama = templates["meta-llama-Llama-3.1-8B-Instruct"]
    sent = ChatCompletionMessage(role="assistant", content=None, tool_calls=[
        {"id": "call0001a", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}])
    plan = tool_prompt(llama, [WEATHER_QUESTION, sent], TOOLS)
    assert '{"name": "get_time", "parameters": {"zone": "UTC"}}<|eot_id|>' in render(llama, plan.messages,
                                                                                      tools=plan.tools, **SPECIAL)
