"""A forced tool call as a grammar: what `tool_choice="required"` or a named function lets the model write.

For the formats whose calls are one JSON object `{"name": NAME, ARGS_KEY: {...}}` between fixed text, the reply
is constrained (through llguidance, as structured output is) to exactly one call of an allowed tool (any of
them for "required", the named one otherwise), its arguments kept to that tool's `parameters` JSON schema.
The prompt ends with the call's `opening` (text the template may write as control tokens, which the prompt's
tokenization turns into them) and the grammar covers the rest. Hermes/Qwen `<tool_call>`, Mistral's JSON list
`[TOOL_CALLS][...]`, Granite `<|tool_call|>[...]` and Llama 3.x JSON are covered; other formats have no
grammar here, and a forced call there only starts with the format's opening (see tool_prompt).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .grammar import JSON_OPTIONS, lark_rules
from .tool_calls import ToolCallFormat


@dataclasses.dataclass(frozen=True)
class CallShape:
    """How a format writes one JSON-object call: opening + {"name": ..., args_key: ...} + closing."""
    opening: str
    args_key: str
    closing: str


SHAPES = {
    "hermes": CallShape("<tool_call>\n", "arguments", "\n</tool_call>"),
    "mistral": CallShape("[TOOL_CALLS][", "arguments", "]"),
    "granite": CallShape("<|tool_call|>[", "arguments", "]"),
    "llama3": CallShape("", "parameters", ""),
}


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _arguments_schema(function: dict) -> Any:
    """A function's parameters schema, with mdst's compact JSON layout (an object if it gives none)."""
    schema = function.get("parameters")
    if not isinstance(schema, dict):
        schema = {"type": "object"}
    return {**schema, "x-guidance": JSON_OPTIONS}


def forced_call(fmt: ToolCallFormat, tools: list, name: str | None) -> tuple[str, str] | None:
    """(prompt opening, llguidance grammar) that make the reply one call of `name` (None: any of `tools`) in
    `fmt`; None for a format mdst has no grammar for."""
    shape = SHAPES.get(fmt.name)
    if shape is None:
        return None
    functions = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    rules = [f"start: call {_lark_string(shape.closing)}" if shape.closing else "start: call",
             "call: " + " | ".join(f"call_{i}" for i in range(len(functions)))]
    for i, function in enumerate(functions):
        head = f'{{"name": {json.dumps(function["name"], ensure_ascii=False)}, "{shape.args_key}": '
        rules.append(f'call_{i}: {_lark_string(head)} args_{i} "}}"')
        rules.append(f"args_{i}: %json {json.dumps(_arguments_schema(function), ensure_ascii=False)}")
    names = ", ".join(f["name"] for f in functions)
    return shape.opening, lark_rules("\n".join(rules), f"the parameters schema of tool {names} is not valid or "
                                                      "not supported")
