"""The prompt side of tool use: which tools reach the template, how the conversation is prepared, and how a
call is forced.

`tool_choice` is OpenAI's: "auto" (the model decides), "none" (the tools are left out of the prompt),
"required" or {"type": "function", "function": {"name": ...}}. For the formats mdst.text.tool_grammar covers
(Hermes/Qwen, Mistral's JSON list, Granite, Llama 3.x) "required" and a named function come with a grammar that
makes the reply exactly one call of an allowed tool with arguments valid for its parameters schema ("required"
with parallel_tool_calls gives one call too). For the other formats the reply only starts with the format's
tool-call opening (for a named Mistral `[ARGS]` call `[TOOL_CALLS]NAME[ARGS]`) and the model continues from
inside the call; it may still write something that does not parse, which is then reported as content.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from .chat import TemplateError, render
from .tool_calls import ToolCallFormat, detect, fallback_system_prompt, knows_tools
from .tool_grammar import forced_call

TOOL_CHOICES = ("auto", "none", "required")


@dataclasses.dataclass(frozen=True)
class ToolPrompt:
    """What to render and how to read the reply."""
    messages: list                 # the conversation as the template should see it
    tools: list | None             # the `tools` template variable
    fmt: ToolCallFormat | None     # the format to parse calls in (None: no tools offered)
    opening: str                   # text appended to the prompt that begins the reply (a forced call)
    in_user: list | None = None    # the conversation with the tools described in its first user message instead
                                   # (for templates without a system role, when the description was added)
    grammar: str | None = None     # llguidance grammar the rest of a forced call keeps to (None: unconstrained)


def _function_name(tool: Any, index: int) -> str:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ValueError(f"tools item {index} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                         "\"parameters\": {...}}}")
    return function["name"]


def _forced_name(tool_choice: Any, names: list[str]) -> str | None:
    """None for "required", the function's name for a named choice; ValueError for anything else."""
    if tool_choice == "required":
        return None
    function = tool_choice.get("function") if isinstance(tool_choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or tool_choice.get("type", "function") != "function":
        raise ValueError(f"tool_choice must be one of {list(TOOL_CHOICES)} or {{\"type\": \"function\", "
                         f"\"function\": {{\"name\": ...}}}}, got {json.dumps(tool_choice, default=str)}")
    if name not in names:
        raise ValueError(f"tool_choice names function {name!r}, which is not among the tools ({', '.join(names)})")
    return name


def _object_arguments(message: Mapping) -> Mapping:
    """An assistant message whose tool-call arguments are JSON text, with them as objects (templates `tojson`
    them; llama.cpp does the same)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    converted = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
            try:
                arguments = json.loads(function["arguments"])
            except ValueError:
                arguments = function["arguments"]
            call = {**call, "function": {**function, "arguments": arguments}}
        converted.append(call)
    return {**message, "tool_calls": converted}


def _as_hermes_text(message: Mapping) -> Mapping:
    """An assistant message's tool calls written into its content, for templates that cannot render them."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    written = [message.get("content") or ""]
    for call in calls:
        function = call.get("function", {})
        written.append("<tool_call>\n" + json.dumps({"name": function.get("name"), "arguments":
                                                    function.get("arguments")}, ensure_ascii=False) + "\n</tool_call>")
    rest = {k: v for k, v in message.items() if k != "tool_calls"}
    return {**rest, "content": "\n".join(w for w in written if w)}


def _prepared(message: Any, knows_tools: bool) -> Any:
    """A message as the template should see it: SDK objects as dicts (so their calls convert too), tool-call
    arguments as objects, and calls written as Hermes text for a template that renders no tools."""
    if callable(getattr(message, "model_dump", None)):
        message = message.model_dump()
    if not isinstance(message, Mapping):
        return message
    message = _object_arguments(message)
    return message if knows_tools else _as_hermes_text(message)


def _described(messages: list, tools: list) -> tuple[list, list | None]:
    """The conversation with the tools described in its system message (one is added if it has none), and,
    where one was added, the conversation with the description opening its first user message instead."""
    prompt = fallback_system_prompt(tools)
    first = messages[0] if messages else None
    if isinstance(first, Mapping) and first.get("role") == "system" and isinstance(first.get("content"), str):
        return [{**first, "content": first["content"] + "\n\n" + prompt}, *messages[1:]], None
    in_user = None
    if isinstance(first, Mapping) and first.get("role") == "user" and isinstance(first.get("content"), str):
        in_user = [{**first, "content": prompt + "\n\n" + first["content"]}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages], in_user


def render_prompt(template: str, plan: ToolPrompt, **variables: Any) -> str:
    """The template's rendering of the plan's conversation (with the generation prompt, before the opening);
    a template that refuses the added system message gets the tools described in the first user message."""
    try:
        return render(template, plan.messages, add_generation_prompt=True, tools=plan.tools, **variables)
    except TemplateError:
        if plan.in_user is None:
            raise
        return render(template, plan.in_user, add_generation_prompt=True, tools=plan.tools, **variables)


def tool_prompt(template: str, messages: Sequence[Any], tools: list | None, tool_choice: Any = "auto") -> ToolPrompt:
    """How to render `messages` with `tools` under `tool_choice` for `template`, and how to read the reply."""
    if tools is not None and not isinstance(tools, (list, tuple)):
        raise TypeError(f"tools must be a list of tool definitions, not {type(tools).__name__}")
    tools = list(tools) if tools else None
    names = [_function_name(t, i) for i, t in enumerate(tools or ())]
    if tool_choice is None:
        tool_choice = "auto"
    forcing = tool_choice not in ("auto", "none")
    if forcing and not tools:
        raise ValueError(f"tool_choice {json.dumps(tool_choice, default=str)} needs tools; pass tools=[...]")
    forced = _forced_name(tool_choice, names) if forcing else None
    knows = knows_tools(template)
    if isinstance(messages, (list, tuple)):  # anything else is left for render() to refuse
        messages = [_prepared(m, knows) for m in messages]
    if tools is None or tool_choice == "none":
        return ToolPrompt(messages, None, None, "")
    fmt = detect(template)
    if forcing and fmt is None:
        raise ValueError(f"tool_choice {json.dumps(tool_choice, default=str)} can't be forced for this chat template: "
                         "mdst does not know how it writes tool calls; use tool_choice=\"auto\"")
    opening, grammar = fmt.opening(forced) if forcing else "", None
    if forcing and (constrained := forced_call(fmt, tools, forced)) is not None:
        opening, grammar = constrained
    if knows:
        return ToolPrompt(messages, tools, fmt, opening, grammar=grammar)
    described, in_user = _described(messages, tools)
    return ToolPrompt(described, None, fmt, opening, in_user, grammar)
