"""Text generation: prompt in, text out (whole or streamed), with stop strings and statistics.

A request is checked and tokenized into a `Generation` first (`prepare`, `prepare_chat`); it then runs alone on
the model's session (`alone`: generate(), chat(), and what reads logits on the host each step), or as one
sequence of a `Batch` (`BatchedGeneration`: generate(list) and the server's batched requests). Both turn
tokens into text through one `TokenText`, so they end where each other would.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .text.grammar import Constraint, grammar_for
from .text.logprobs import Piece, TokenLogprob, check_top_logprobs, score
from .text.reply import ChatDelta, ChatReply, ReplyParser, think_tags
from .text.sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from .model import Model
    from .runtime.batch import Batch


class TextStream:
    """Turns token bytes into text pieces that never split a UTF-8 character and never show a stop string.

    Text that could still become a stop string is held back until it cannot.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; returns the text that is now safe to show."""
        self._pending += self._decoder.decode(piece)
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[:min(hits)], ""
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self._pending.endswith(s[:k])), default=0)
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """Everything still held (generation ended without a stop string)."""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out


class TokenText:
    """One generation's tokens as text, and where it ends: an end-of-generation token, a stop string, a finished
    grammar, max_tokens, or the context's end (the per-token layer of every path: alone, batched, served)."""

    def __init__(self, model: "Model", prompt_tokens: int, max_tokens: int, stops: Sequence[str],
                 constraint: Constraint | None = None):
        self._token_bytes = model.tokenizer.token_bytes
        self._eog = model.tokenizer.eog_ids
        # the last token that fits: one generated where the cache holds the prompt and every token before it
        self._limit = min(max_tokens, model.context_length - prompt_tokens)
        self._constraint = constraint
        self._text = TextStream(stops)
        self.generated = 0
        self.finish_reason: str | None = None   # "stop" or "length" once over

    def take(self, token: int) -> tuple[str | None, str | None]:
        """(the text `token` lets out, or None for an end-of-generation token, which is no part of the text;
        the finish reason if it ends the generation, else None)."""
        if token in self._eog:
            self.finish_reason = "stop"
            return None, self.finish_reason
        self.generated += 1
        piece = self._text.push(self._token_bytes(token))
        if self._text.stopped or (self._constraint is not None and self._constraint.done):
            self.finish_reason = "stop"
        elif self.generated >= self._limit:
            self.finish_reason = "length"
        return piece, self.finish_reason

    def flush(self) -> str:
        """The text still held back, once the generation is over (none after a stop string)."""
        return "" if self._text.stopped else self._text.flush()


def check_stop(stop: Any) -> list[str]:
    """Normalize `stop` (None, a string, or a list of non-empty strings)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise TypeError("stop must be a string or a list of strings")
    if any(s == "" for s in stop):
        raise ValueError("stop strings must not be empty")
    return list(stop)


def check_max_tokens(max_tokens: Any) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be an int, got {type(max_tokens).__name__}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return max_tokens


def generate(model: "Model", prompt: str | Sequence[str], *, max_tokens: int = 128, temperature: float = 0.0, top_k: int = 40,
             top_p: float = 1.0, min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
             presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
             stop: str | Sequence[str] | None = None, stream: bool = False, add_bos: bool | None = None,
             truncate: bool = False, logit_bias: dict[int, float] | None = None, logprobs: bool = False,
             top_logprobs: int = 0, response_format: dict | None = None,
             grammar: str | None = None) -> str | Iterator[str]:
    """Continue `prompt`. Returns the text, or with stream=True an iterator of text pieces.

    Greedy when temperature is 0. `stop` strings end generation and are not returned.
    `logit_bias` ({token id: bias in [-100, 100]}) is added to those logits before sampling.
    With logprobs=True the text (and each streamed piece) is a `Piece`, a str whose `logprobs`
    holds a `TokenLogprob` per token: its log-probability and the `top_logprobs` (0..20) likeliest.
    `response_format` ({"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": {...}}},
    OpenAI's) or `grammar` (GBNF or Lark text) constrain the output; it ends when the grammar is complete.
    A prompt longer than the context is an error unless truncate=True (keeps its end).
    Afterwards `model.last_stats` holds token counts, speeds and the finish reason.

    A list of prompts decodes them together (`Model.batch`) and returns a list of texts, each the text
    that prompt gets alone with the same settings and seed; with stream=True, an iterator of
    (prompt index, text piece) as tokens come. Logprobs and constrained output are single-prompt only.
    """
    params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
                            presence_penalty, frequency_penalty, seed, logit_bias)
    if isinstance(prompt, (list, tuple)):
        if logprobs or response_format is not None or grammar is not None:
            raise ValueError("logprobs, response_format and grammar take one prompt; generate each prompt alone")
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise TypeError("prompt must be a str or a non-empty list of str")
        ids = [model.tokenize(p, add_bos=add_bos) for p in prompt]
        return run_batch(model, ids, params=params, max_tokens=max_tokens, stop=stop, stream=stream,
                         truncate=truncate)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    ids = model.tokenize(prompt, add_bos=add_bos)
    return run(model, ids, stream=stream, params=params, max_tokens=max_tokens, stop=stop, truncate=truncate,
               logprobs=logprobs, top_logprobs=top_logprobs, response_format=response_format, grammar=grammar)


def chat(model: "Model", messages: Sequence[dict], *, stream: bool = False, **options: Any) -> Any:
    """Answer a conversation: render the chat template (the GGUF's, or `template`), generate the reply.

    Returns a `ChatReply` (a str of the content, with `.reasoning_content`, `.tool_calls` and `.message`), or
    with stream=True an iterator of `ChatDelta` pieces (str of content, with the same fields as OpenAI deltas).
    `options` are `prepare_chat`'s (template, tools, tool_choice, max_tokens, stop, logprobs, response_format,
    grammar and generate()'s sampling settings). Generation ends at the model's end-of-turn tokens.
    """
    deltas = alone(model, prepare_chat(model, messages, **options))
    return deltas if stream else ChatReply.merge(deltas)


def prepare_chat(model: "Model", messages: Sequence[dict], *, template: str | None = None, tools: list | None = None,
                 tool_choice: Any = "auto", parallel_tool_calls: bool = True, max_tokens: int = 512,
                 truncate: bool = False, stop: Any = None, logprobs: bool = False, top_logprobs: int = 0,
                 response_format: dict | None = None, grammar: str | None = None, **sampling: Any) -> "Generation":
    """A conversation's reply as a checked `Generation` (its prompt rendered and tokenized, its parser set).

    `tools`/`tool_choice` are OpenAI's (see mdst.text.tool_prompt for how "required" and a named function are
    forced: by a grammar for the common formats, which excludes response_format and grammar). `sampling` takes
    generate()'s sampling options (logit_bias included); with logprobs=True the reply and each piece carry
    `.logprobs` as in generate(); `response_format` and `grammar` constrain the reply's text as in generate().
    """
    from .text.chat import require_template, special_tokens
    from .text.tool_prompt import render_prompt, tool_prompt

    if template is None:
        template = require_template(model.gguf)
    if not isinstance(parallel_tool_calls, bool):
        raise TypeError("parallel_tool_calls must be a bool")
    specials = special_tokens(model.gguf)
    plan = tool_prompt(template, messages, tools, tool_choice)
    if plan.grammar is not None and grammar_for(response_format, grammar) is not None:
        raise ValueError(f"tool_choice {tool_choice!r} constrains the reply to a tool call, and response_format or "
                         "grammar constrain it too; pass one of them")
    text = render_prompt(template, plan, **specials)
    think = think_tags(template)
    parser = ReplyParser(plan.fmt, think, reasoning=bool(think) and not plan.opening and plan.grammar is None and
                         text.rstrip().endswith(think[0]), tools=tools, prefix=plan.opening,
                         parallel_tool_calls=parallel_tool_calls)
    text += plan.opening
    # Templates usually write BOS themselves; never add a second one.
    bos = specials.get("bos_token")
    add_bos = model.tokenizer.add_bos and not (bos and text.startswith(bos))
    ids = model.tokenize(text, add_bos=add_bos, special=True)
    return prepare(model, ids, params=SamplingParams(**sampling), max_tokens=max_tokens, stop=stop,
                   truncate=truncate, logprobs=logprobs, top_logprobs=top_logprobs, response_format=response_format,
                   grammar=grammar, rules=plan.grammar, parser=parser)


@dataclass(eq=False)
class Generation:
    """A checked request for one prompt, not run yet: generate() and chat() run it alone, the server alone or
    in a batch."""

    ids: list[int]                          # the prompt's token ids (fitted to the context)
    params: SamplingParams
    max_tokens: int
    stops: list[str]
    top: int | None = None                  # log-probabilities: the alternatives shown per token (None: none)
    constraint: Constraint | None = None    # the grammar the output keeps to
    parser: ReplyParser | None = None       # a chat reply's: its text into reasoning, content and tool calls

    @property
    def batchable(self) -> bool:
        """Whether a `Batch` can run it: a batch picks each token on the device and never reads logits back."""
        return self.top is None and self.constraint is None


def prepare(model: "Model", ids: list[int], *, params: SamplingParams, max_tokens: int, stop: Any = None,
            truncate: bool = False, logprobs: bool = False, top_logprobs: int = 0, response_format: dict | None = None,
            grammar: str | None = None, rules: str | None = None, parser: ReplyParser | None = None) -> Generation:
    """Check a request on prompt token ids (the shared core of generate() and chat()); `rules`, an llguidance
    grammar mdst built (a forced tool call), stands in for response_format and grammar."""
    max_tokens = check_max_tokens(max_tokens)
    if rules is None:
        rules = grammar_for(response_format, grammar)
    constraint = Constraint(rules, model.tokenizer) if rules is not None else None
    stops = check_stop(stop)
    top = check_top_logprobs(logprobs, top_logprobs)
    check_bias(model, params)
    return Generation(fitted(model, list(ids), truncate), params, max_tokens, stops, top, constraint, parser)


def run(model: "Model", ids: list[int], *, stream: bool = False, **options: Any) -> str | Iterator[str]:
    """Generate from prompt token ids alone (`prepare`'s options): the text, or with stream=True its pieces."""
    gen = prepare(model, ids, **options)
    pieces = alone(model, gen)
    if stream:
        return pieces
    if gen.top is None:
        return "".join(pieces)
    got = list(pieces)
    return Piece("".join(got), tuple(lp for p in got for lp in p.logprobs))


def alone(model: "Model", gen: Generation) -> Iterator[str]:
    """`gen` run by itself on the model's session: its text pieces (ChatDelta pieces for a chat reply)."""
    pieces = _pieces(model, gen)
    return pieces if gen.parser is None else _reply_pieces(pieces, gen.parser)


def _reply_pieces(pieces: Iterator[str], parser: Any) -> Iterator[Any]:
    """The generated text as ChatDelta pieces, as `parser` tells them apart; each delta carries the
    log-probabilities (if any) of the tokens read since the delta before."""
    scored: list[Any] = []

    def of(delta: dict) -> ChatDelta:
        piece = ChatDelta.of(delta)
        piece.logprobs = tuple(scored)
        scored.clear()
        return piece

    try:
        for piece in pieces:
            scored.extend(getattr(piece, "logprobs", ()))
            for delta in parser.push(piece):
                yield of(delta)
        for delta in parser.finish():
            yield of(delta)
        if scored:   # tokens whose text the parser held back and dropped: still reported
            yield of({})
    finally:
        pieces.close()   # a reply left early still records its statistics and frees the model


def check_bias(model: "Model", params: SamplingParams) -> None:
    """ValueError if the logit bias names a token outside the vocabulary."""
    bad = [t for t, _ in params.logit_bias if t >= model.n_vocab]
    if bad:
        raise ValueError(f"logit_bias names token id {bad[0]}, outside the vocabulary [0, {model.n_vocab})")


def fitted(model: "Model", ids: list[int], truncate: bool) -> list[int]:
    """The prompt ids, cut to their end with truncate=True when the context cannot hold them and one more."""
    if not isinstance(truncate, bool):
        raise TypeError("truncate must be a bool")
    if not ids:
        raise ValueError("the prompt is empty (no tokens); pass some text")
    ctx = model.context_length
    if len(ids) >= ctx:
        if not truncate:
            raise ValueError(f"the prompt has {len(ids)} tokens but the context holds {ctx} (and one more is needed "
                             f"to generate); shorten it, load with a larger context_length, or pass truncate=True")
        ids = ids[len(ids) - (ctx - 1):]
    return ids


class BatchedGeneration:
    """A `Generation` as one sequence of a `Batch`: it joins (its prompt prefilled into a cache of its own), turns
    each token the batch picks for it into text pieces (ChatDelta pieces through a chat reply's parser), and
    leaves when over or cancelled (its cache goes back)."""

    def __init__(self, model: "Model", gen: Generation):
        if not gen.batchable:
            raise ValueError("logprobs and grammars read the logits on the host each step; run this generation alone")
        self.gen = gen
        self.text = TokenText(model, len(gen.ids), gen.max_tokens, gen.stops)
        self.seq: int | None = None   # its id in the batch, while it is in one
        self.stats: dict[str, Any] = {"prompt_tokens": len(gen.ids), "generated_tokens": 0, "cached_tokens": 0,
                                      "finish_reason": None}
        self._joined = 0.0

    @property
    def over(self) -> bool:
        """Whether its last token has come (it leaves the batch next)."""
        return self.text.finish_reason is not None

    def join(self, batch: "Batch") -> list[str]:
        """Prefill the prompt as a new sequence of `batch`; the pieces of its first token."""
        t0 = time.perf_counter()
        self.seq, token = batch.add(self.gen.ids, self.gen.params)
        self._joined = time.perf_counter()
        prefill = self._joined - t0
        self.stats.update(prefill_s=prefill, prefill_tokens_per_s=len(self.gen.ids) / prefill if prefill > 0 else 0.0)
        return self.take(token)

    def take(self, token: int) -> list[str]:
        """The pieces `token` lets out (with the rest of the text when it ends the generation)."""
        piece, reason = self.text.take(token)
        texts = [t for t in (piece, self.text.flush() if reason else "") if t]
        parser = self.gen.parser
        if parser is None:
            return texts
        deltas = [d for t in texts for d in parser.push(t)] + (parser.finish() if reason else [])
        return [ChatDelta.of(d) for d in deltas]

    def leave(self, batch: "Batch") -> dict[str, Any]:
        """Leave `batch` (over, or cancelled before): the sequence's cache goes back; the generation's statistics."""
        if self.seq is not None:
            batch.remove(self.seq)
            self.seq = None
            decode, n = time.perf_counter() - self._joined, self.text.generated
            self.stats.update(generated_tokens=n, decode_s=decode,
                              decode_tokens_per_s=(n - 1) / decode if n > 1 and decode > 0 else 0.0)
        self.stats["finish_reason"] = self.text.finish_reason or "cancelled"
        return self.stats


def run_batch(model: "Model", prompts: list[list[int]], *, params: SamplingParams, max_tokens: int,
              stop: Any = None, stream: bool = False, truncate: bool = False) -> list[str] | Iterator[tuple[int, str]]:
    """Generate from several prompts' token ids together: their texts, or (index, piece) as they come."""
    gens = [prepare(model, ids, params=params, max_tokens=max_tokens, stop=stop, truncate=truncate) for ids in prompts]
    pieces = _batch_pieces(model, gens)
    if stream:
        return pieces
    texts = [""] * len(prompts)
    for i, piece in pieces:
        texts[i] += piece
    return texts


def _batch_pieces(model: "Model", gens: list[Generation]) -> Iterator[tuple[int, str]]:
    """(prompt index, text piece) as tokens come; each prompt ends as it would alone. Prompts past the model's
    max_batch wait, in order, for a finished one's place."""
    members = [BatchedGeneration(model, g) for g in gens]
    batch = model.batch(len(members))
    room = batch.engine.max_batch or len(members)
    waiting = list(range(len(members)))
    ready: dict[int, list[str]] = {}   # index -> the pieces of its latest token
    t0 = time.perf_counter()
    t1 = None
    try:
        while True:
            while waiting and len(batch) < room:
                i = waiting.pop(0)
                ready[i] = members[i].join(batch)
            t1 = t1 or time.perf_counter()
            if not ready:
                break
            for i, pieces in ready.items():
                for piece in pieces:
                    yield i, piece
                if members[i].over:
                    members[i].leave(batch)
            index = {m.seq: i for i, m in enumerate(members) if m.seq is not None}
            ready = {index[s]: members[index[s]].take(tok) for s, tok in batch.step().items()}
    finally:
        stats = [m.leave(batch) for m in members]
        t2 = time.perf_counter()
        decode_s = t2 - t1 if t1 is not None else 0.0
        generated = [s["generated_tokens"] for s in stats]
        extra = sum(generated) - len(gens)   # tokens past each prompt's first (which prefill picks)
        model.last_stats = {"prompt_tokens": [len(g.ids) for g in gens], "generated_tokens": generated,
                            "finish_reason": [s["finish_reason"] for s in stats],
                            "prefill_s": (t1 if t1 is not None else t2) - t0, "decode_s": decode_s,
                            "decode_tokens_per_s": extra / decode_s if decode_s > 0 and extra > 0 else 0.0}


def _stepwise(session: Any, new: list[int], sampler: Sampler, history: list[int], k: int | None,
              token_bytes: Any, into: list[TokenLogprob], constraint: Constraint | None) -> Iterator[int]:
    """Tokens picked a step at a time, each step's draw carrying `constraint`'s mask of allowed tokens if any.

    Without `k` the GPU picks (the mask uploaded with the draw, only the token read back); with `k` set the
    logits are read back, the host picks with the same chain (Sampler.pick) and appends the token's
    log-probabilities (of the unmasked logits: the model's distribution) to `into`. Both draw the uniform
    numbers a free generation draws, so without a constraint the text is the one generation on the GPU gives.
    The next step waits for this one's token: its mask depends on it.
    """
    ids = new
    while True:
        draw = sampler.next_draw(history, None if constraint is None else constraint.bitmask())
        if k is None:
            tok = int(session.prefill(ids, draw=draw))
        else:
            logits = session.prefill(ids)
            tok = Sampler.pick(logits, draw)
            into.append(score(logits, tok, k, token_bytes))
        if constraint is not None:
            constraint.advance(tok)
        yield tok
        ids = [tok]


def _pieces(model: "Model", gen: Generation) -> Iterator[str]:
    """Text pieces as tokens come (`Piece`s with their tokens' log-probabilities when `gen.top` is set), the
    output kept to `gen.constraint`'s grammar if any."""
    ids, params, top, constraint = gen.ids, gen.params, gen.top, gen.constraint
    tok_bytes = model.tokenizer.token_bytes
    sampler = Sampler(params)
    text = TokenText(model, len(ids), gen.max_tokens, gen.stops, constraint)
    stats: dict[str, Any] = {"prompt_tokens": len(ids), "generated_tokens": 0, "cached_tokens": 0,
                             "finish_reason": None}
    with model.exclusive() as session:
        t0 = time.perf_counter()
        stats["cached_tokens"] = session.reuse_prefix(ids)
        history = list(ids)

        def pick() -> Any:
            return "argmax" if params.greedy else sampler.next_draw(history)

        new = ids[session.n_past:]
        if len(new) > 1:
            # the prompt's last token goes through a one-row step of its own, as it does when a later request
            # reuses this prompt's cached prefix: the same request twice then picks from the same logits
            session.prefill(new[:-1], greedy=True)
            new = new[-1:]
        scored: list[TokenLogprob] = []   # the log-probabilities of tokens whose text is not out yet
        if top is None and constraint is None:
            tok = int(session.prefill(new, greedy=True) if params.greedy else session.prefill(new, draw=pick()))
            # penalties read the tokens so far, so only penalty-free picks let the GPU run a step ahead
            steps = session.decode(tok, min(gen.max_tokens - 1, model.context_length - session.n_past - 1), pick,
                                   ahead=not params.penalized)
        else:
            steps = _stepwise(session, new, sampler, history, top, tok_bytes, scored, constraint)
            tok = next(steps)
        t1 = time.perf_counter()
        stats["prefill_s"] = t1 - t0

        def out(piece: str) -> str:
            if top is None:
                return piece
            got = Piece(piece, tuple(scored))
            scored.clear()
            return got

        try:
            while True:
                piece, reason = text.take(tok)
                if piece is None:
                    del scored[-1:]   # the end-of-generation token is not part of the text
                else:
                    history.append(tok)
                    if piece:
                        yield out(piece)
                if reason is not None:
                    break
                tok = next(steps)
            rest = text.flush()
            if rest:
                yield out(rest)
        finally:
            steps.close()
            t2 = time.perf_counter()
            new_prompt = len(ids) - stats["cached_tokens"]
            generated = text.generated
            stats.update(generated_tokens=generated, decode_s=t2 - t1, finish_reason=text.finish_reason or "cancelled",
                         prefill_tokens_per_s=new_prompt / stats["prefill_s"] if stats["prefill_s"] > 0 else 0.0,
                         decode_tokens_per_s=(generated - 1) / (t2 - t1) if generated > 1 and t2 > t1 else 0.0)
            model.last_stats = stats
