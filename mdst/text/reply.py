"""A chat reply split as OpenAI reports it: `reasoning_content`, `content` and `tool_calls`, piece by piece.

`ReplyParser` reads the generated text as it streams and returns OpenAI delta objects. Text that might begin a
think block or a tool-call section is held back until it can tell; a tool-call section is read when the reply
ends (`finish`), and stays content if it does not parse. Whitespace around reasoning and content is trimmed, as
llama.cpp trims it. `ChatDelta` (a streamed piece) and `ChatReply` (the whole reply) are strings of their
content that carry the other fields as attributes, so code that treats replies as text keeps working.
"""

from __future__ import annotations

from typing import Any, Iterable

from .tool_calls import ToolCallFormat, parse_section, section_start

# (opening, closing) of the think blocks templates teach; a template's pair is the one whose opening it contains.
THINK_TAGS = [("<think>", "</think>"), ("[THINK]", "[/THINK]"), ("<seed:think>", "</seed:think>"),
              ("<|START_THINKING|>", "<|END_THINKING|>")]


def think_tags(template: str) -> tuple[str, str] | None:
    """The think-block tags `template` uses, or None."""
    return next((pair for pair in THINK_TAGS if pair[0] in template), None)


def _held(text: str, markers: Iterable[str]) -> int:
    """How many characters at the end of `text` could be the start of one of `markers`."""
    return max((k for m in markers for k in range(1, len(m)) if text.endswith(m[:k])), default=0)


class ReplyParser:
    """Generated text in, OpenAI delta objects out ({"reasoning_content"}, {"content"} or {"tool_calls"})."""

    def __init__(self, fmt: ToolCallFormat | None, think: tuple[str, str] | None = None, reasoning: bool = False,
                 tools: list | None = None, prefix: str = "", parallel_tool_calls: bool = True):
        """fmt: the tool-call format to read (None: no tools); think: the think tags; reasoning: the prompt opened
        a think block; prefix: text the prompt already wrote of the reply (a forced tool-call opening)."""
        self.fmt, self.think, self.tools, self.parallel = fmt, think, tools, parallel_tool_calls
        self.mode = "reasoning" if reasoning and think else "start"
        self.buf = prefix
        self.started = False        # the current mode has emitted text (so leading whitespace is gone)
        self.content_seen = False   # any content emitted (a leading-only opening no longer applies)
        self.calls = 0
        self.gap = ""

    def push(self, text: str) -> list[dict]:
        """Deltas for the text generated so far that can be told apart now."""
        self.buf += text
        return self._advance(final=False)

    def finish(self) -> list[dict]:
        """Deltas for everything still held, once generation has ended."""
        return self._advance(final=True)

    def _switch(self, mode: str) -> None:
        self.mode, self.started = mode, False

    def _advance(self, final: bool) -> list[dict]:
        out: list[dict] = []
        while True:
            if self.mode == "start":
                s = self.buf.lstrip()
                opening = self.think[0] if self.think else None
                if opening and s.startswith(opening):
                    self.buf = s[len(opening):]
                    self._switch("reasoning")
                elif not final and (not s or (opening and opening.startswith(s))):
                    return out
                else:
                    self._switch("content")
            elif self.mode == "reasoning":
                closing = self.think[1]
                i = self.buf.find(closing)
                if i >= 0:
                    self._emit(out, "reasoning_content", self.buf[:i], final=True)
                    self.buf = self.buf[i + len(closing):]
                    self._switch("content")
                    continue
                self.buf = self._emit(out, "reasoning_content", self.buf, final, hold=(closing,))
                return out
            elif self.mode == "content":
                if self.fmt is not None:
                    start = section_start(self.fmt, self.buf.lstrip() if not self.started else self.buf,
                                          at_start=not self.content_seen)
                    if start >= 0:
                        if not self.started:
                            self.buf = self.buf.lstrip()
                        before, self.buf = self.buf[:start], self.buf[start:]
                        self.gap = before[len(before.rstrip()):]  # given back if the section is not a call
                        self._emit(out, "content", before, final=True)
                        self._switch("section")
                        continue
                    s = self.buf.lstrip()
                    if not final and not self.content_seen and s and any(m.startswith(s) for m in self.fmt.leading):
                        return out
                self.buf = self._emit(out, "content", self.buf, final, () if self.fmt is None else self.fmt.openings)
                return out
            else:  # section
                calls, rest = parse_section(self.fmt, self.buf, self.tools)
                if not final and not (self.fmt.standalone and calls and rest.strip()):
                    return out
                # at the end, or calls that text follows (so complete): report them, read on after them
                for call in calls:
                    self._call(out, call)
                if calls:
                    self.buf, self.gap = rest, ""
                if not final:
                    continue  # what follows is read as more calls, or reported as content at the end
                text, self.buf = (self.buf if calls else self.gap + self.buf), ""
                self.started = self.content_seen  # content goes on where it stopped
                self._emit(out, "content", text, final=True)
                return out

    def _emit(self, out: list[dict], field: str, text: str, final: bool, hold: tuple[str, ...] = ()) -> str:
        """Emit `text`, less its leading whitespace at a mode's start and, unless final, what could begin one of
        `hold` and the whitespace before it; returns what was kept back."""
        if not self.started:
            text = text.lstrip()
        if final:
            piece, kept = text.rstrip(), ""
        else:
            piece = text[:len(text) - _held(text, hold)].rstrip()
            kept = text[len(piece):]
        if piece:
            self.started = True
            if field == "content":
                self.content_seen = True
            out.append({field: piece})
        return kept

    def _call(self, out: list[dict], call: dict) -> None:
        """A tool call in OpenAI's streamed shape: its id, type and name, then its arguments (only the first call
        without parallel tool calls)."""
        if self.calls and not self.parallel:
            return
        function = call["function"]
        out.append({"tool_calls": [{"index": self.calls, "id": call["id"], "type": "function",
                                    "function": {"name": function["name"], "arguments": ""}}]})
        out.append({"tool_calls": [{"index": self.calls, "function": {"arguments": function["arguments"]}}]})
        self.calls += 1


class ChatDelta(str):
    """A streamed piece of a chat reply: the string is its content; `reasoning_content` and `tool_calls` (OpenAI's
    delta shape) are set on the pieces that carry them."""

    reasoning_content: str | None = None
    tool_calls: list[dict] | None = None
    logprobs: tuple = ()   # the TokenLogprobs of the tokens read since the piece before (logprobs=True)

    @classmethod
    def of(cls, delta: dict) -> "ChatDelta":
        """The piece for one OpenAI delta object."""
        piece = cls(delta.get("content", ""))
        piece.reasoning_content = delta.get("reasoning_content")
        piece.tool_calls = delta.get("tool_calls")
        return piece

    def delta(self) -> dict:
        """This piece as an OpenAI delta object."""
        out: dict[str, Any] = {}
        if self.reasoning_content is not None:
            out["reasoning_content"] = self.reasoning_content
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if str(self) or not out:
            out["content"] = str(self)
        return out


class ChatReply(str):
    """A whole chat reply: the string is its content; `reasoning_content` (or None), `tool_calls` (a list, empty
    without calls) and `message` (the OpenAI assistant message) carry the rest."""

    reasoning_content: str | None
    tool_calls: list[dict]
    logprobs: tuple   # every generated token's TokenLogprob (empty unless logprobs=True)

    @classmethod
    def merge(cls, pieces: Iterable[Any]) -> "ChatReply":
        """The reply the streamed `pieces` (ChatDelta, or plain text) add up to."""
        content, reasoning, calls, logprobs = [], [], {}, []
        for piece in pieces:
            content.append(str(piece))
            logprobs.extend(getattr(piece, "logprobs", ()))
            if getattr(piece, "reasoning_content", None) is not None:
                reasoning.append(piece.reasoning_content)
            for part in getattr(piece, "tool_calls", None) or ():
                call = calls.setdefault(part["index"], {"id": None, "type": "function",
                                                        "function": {"name": "", "arguments": ""}})
                call["id"] = part.get("id", call["id"])
                call["function"]["name"] += part.get("function", {}).get("name", "")
                call["function"]["arguments"] += part.get("function", {}).get("arguments", "")
        reply = cls("".join(content))
        reply.reasoning_content = "".join(reasoning) if reasoning else None
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        reply.logprobs = tuple(logprobs)
        return reply

    @property
    def message(self) -> dict:
        """The OpenAI assistant message (content None when the reply is only tool calls)."""
        message: dict[str, Any] = {"role": "assistant", "content": str(self) if str(self) or not self.tool_calls
                                   else None}
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message
