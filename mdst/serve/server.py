"""`mdst serve`: an OpenAI-compatible HTTP server (Starlette + uvicorn) over one loaded model.

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (both with
server-sent-event streaming, logprobs and structured output (response_format; llama.cpp's grammar and
json_schema); chat with tools, tool_calls and reasoning_content as
mdst.text.reply splits the reply), POST /v1/embeddings, GET /health. Errors are OpenAI's error JSON.

Model calls block, so they never run on the event loop. Each request reserves its turn in one FIFO worker
thread when it arrives; its prompt is checked and tokenized in a helper thread meanwhile (so bad input is a 400
before any streaming starts), and the worker then runs the generations one at a time in arrival order. A stream
whose client goes away is cancelled: the worker stops after the current token and closes the generator, which
leaves the model ready for the next request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from .args import MODEL_HELP, activations_option, hub_options, kv_type_arg, kv_type_options
from ..errors import MdstError
from ..text.logprobs import MAX_TOP_LOGPROBS, TokenLogprob
from ..text.reply import ChatDelta, ChatReply

log = logging.getLogger("mdst.serve.server")

# Request fields handed to the sampler (OpenAI's, plus llama.cpp's extras).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
                   "frequency_penalty", "seed", "logit_bias")
DEFAULT_TEMPERATURE = 1.0          # OpenAI's default
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}


class ApiError(Exception):
    """A request that gets an OpenAI error response instead of a completion."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status)


def _bad_argument(e: Exception, fields: tuple[str, ...]) -> ApiError:
    """A 400 for a ValueError/TypeError of mdst, naming the request field when the message starts with one."""
    first = str(e).split(" ", 1)[0]
    return ApiError(400, str(e), param=first if first in fields else None)


def _internal(e: BaseException) -> ApiError:
    log.error("request failed", exc_info=e)
    return ApiError(500, f"the server failed: {type(e).__name__}: {e}")


# ---- the generation queue ------------------------------------------------------------------------------------

class Job:
    """One request's generation: its turn is reserved on arrival, its pieces arrive on the event loop."""

    def __init__(self, model: Any, loop: asyncio.AbstractEventLoop):
        self._model = model
        self._loop = loop
        self._pieces: concurrent.futures.Future = concurrent.futures.Future()  # the text iterator, or None
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()

    # -- request side (event loop)
    def start(self, pieces: Iterator[str]) -> None:
        """Hand over the generator to run when this job's turn comes."""
        self._pieces.set_result(pieces)

    def cancel(self) -> None:
        """Stop after the current token (or never start); idempotent."""
        self._cancelled.set()
        if not self._pieces.done():
            self._pieces.set_result(None)

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("piece", text)... then ("done", stats) or ("error", exception). Leaving early cancels the job."""
        try:
            while True:
                kind, value = await self._events.get()
                yield kind, value
                if kind != "piece":
                    return
        finally:
            self.cancel()

    async def result(self) -> tuple[list, dict]:
        """The generated pieces and the generation's statistics."""
        text, stats = [], {}
        async for kind, value in self.events():
            if kind == "error":
                raise value
            if kind == "done":
                stats = value
            else:
                text.append(value)
        return text, stats

    async def result_unless_disconnected(self, request: Request) -> tuple[list, dict]:
        """result(), unless the client goes away first: then the generation is cancelled (499)."""

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        result = asyncio.ensure_future(self.result())
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait((result, watcher), return_when=asyncio.FIRST_COMPLETED)
            if result.done():
                return result.result()
            raise ApiError(499, "the client closed the connection before the reply was ready")
        finally:
            result.cancel()  # a cancelled result() cancels the job
            watcher.cancel()

    # -- worker side (the queue's thread)
    def _emit(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
            self._cancelled.set()

    def run(self) -> None:
        """Run the generation to its end, or until cancelled."""
        pieces = self._pieces.result()
        if pieces is None:
            return
        try:
            if self._cancelled.is_set():
                return
            for piece in pieces:
                self._emit("piece", piece)
                if self._cancelled.is_set():
                    return
            self._emit("done", dict(self._model.last_stats))
        except Exception as e:  # noqa: BLE001 - reported to the client (and logged there); the worker lives on
            self._emit("error", e)
        finally:
            pieces.close()  # a generator stopped early records its statistics and frees the model


class GenerationQueue:
    """Runs generations on one worker thread, one at a time, in the order their turns were reserved."""

    def __init__(self, model: Any):
        self.model = model
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdst-generate")

    async def submit(self, prepare: Callable[[], Iterator[str]], fields: tuple[str, ...]) -> Job:
        """Reserve a turn now, build the generator with `prepare` in a helper thread, and queue it.

        Bad arguments (ValueError/TypeError from mdst) become a 400 ApiError before anything runs."""
        job = Job(self.model, asyncio.get_running_loop())
        self._worker.submit(job.run)
        try:
            pieces = await anyio.to_thread.run_sync(prepare)
        except BaseException as e:
            job.cancel()
            if isinstance(e, (ValueError, TypeError)):
                raise _bad_argument(e, fields) from None
            raise
        job.start(pieces)
        return job

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() on the worker, in turn after the generations queued before it; its result."""
        return await asyncio.wrap_future(self._worker.submit(fn))

    def close(self) -> None:
        """Wait for the running generation and drop the queued ones."""
        self._worker.shutdown(wait=True, cancel_futures=True)


# ---- request parsing ------------------------------------------------------------------------------------------

async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _same(value: Any, allowed: Any) -> bool:
    return value is allowed if allowed is None else type(value) is type(allowed) and value == allowed


def _only(body: dict, name: str, allowed: tuple, why: str) -> None:
    """400 unless body[name] is absent or one of `allowed` (compared with its type: True is not 1)."""
    value = body.get(name)
    if value is not None and not any(_same(value, a) for a in allowed):
        raise ApiError(400, f"{name}={json.dumps(value)} is not supported: {why}", param=name)


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be a boolean, got {json.dumps(value)}", param=name)
    return value


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object like {\"include_usage\": true}", param="stream_options")
    return _flag(options, "include_usage")


def _common_options(body: dict) -> None:
    """Reject what this server can't honour rather than silently ignore it."""
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise ApiError(400, "model must be a string", param="model")
    _only(body, "n", (1,), "this server returns one choice per request")


def _constraint(body: dict) -> dict:
    """generate()'s output constraint: OpenAI's `response_format`, or llama.cpp's `grammar` (GBNF) or
    `json_schema` (a schema object); checked by mdst, whose errors become a 400 naming the field."""
    given = [name for name in ("response_format", "grammar", "json_schema") if body.get(name) is not None]
    if len(given) > 1:
        raise ApiError(400, f"{' and '.join(given)} each constrain the output; send one of them", param=given[1])
    if body.get("json_schema") is not None:
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "json_schema",
                                                                          "schema": body["json_schema"]}}}
    return {name: body[name] for name in given}


def _sampling(body: dict) -> dict:
    """Sampler keyword arguments from the request (null means the default)."""
    options = {name: body[name] for name in SAMPLING_FIELDS if body.get(name) is not None}
    options.setdefault("temperature", DEFAULT_TEMPERATURE)
    return options


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "prompt is required: the text to continue", param="prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string or a list of one string (send one prompt per request)",
                       param="prompt")
    return prompt


def _text_content(content: Any, index: int) -> Any:
    """A message's content; a list of text parts becomes one string (joined with newlines, as llama.cpp does)."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"messages[{index}].content must be a string or a list of content parts",
                       param="messages")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(400, f"messages[{index}] has a content part of type {kind!r}; this server takes text "
                                "parts only ({\"type\": \"text\", \"text\": \"...\"})", param="messages")
        texts.append(part["text"])
    return "\n".join(texts)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages is required: a non-empty list of {\"role\": ..., \"content\": ...} objects",
                       param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object", param="messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {sorted(CHAT_ROLES)}, got {json.dumps(role)}",
                           param="messages")
        # Templates know "system"; OpenAI's "developer" role is its newer name.
        out.append({**message, "role": "system" if role == "developer" else role,
                    "content": _text_content(message.get("content"), i)})
    return out


def _embedding_input(body: dict) -> list[str]:
    """/v1/embeddings' `input`: a string or a non-empty list of strings."""
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "input is required: a string or a non-empty list of strings (token arrays are not "
                            "taken)", param="input")
    return texts


def _tools(body: dict) -> dict:
    """tools, tool_choice and parallel_tool_calls as chat() options (mdst checks the tools themselves)."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "tools must be a list of tool definitions", param="tools")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise ApiError(400, "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                            "\"function\": {\"name\": ...}}", param="tool_choice")
    parallel = body.get("parallel_tool_calls")
    return {"tools": tools or None, "tool_choice": "auto" if choice is None else choice,
            "parallel_tool_calls": True if parallel is None else _flag(body, "parallel_tool_calls")}


def _count(body: dict, name: str) -> int | None:
    """An optional int field in [0, MAX_TOP_LOGPROBS]."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"{name} must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {json.dumps(value)}",
                       param=name)
    return value


def _completion_logprobs_options(body: dict) -> dict:
    """/v1/completions' `logprobs` (how many alternatives per token; absent: none) as generate() options."""
    k = _count(body, "logprobs")
    return {} if k is None else {"logprobs": True, "top_logprobs": k}


def _chat_logprobs_options(body: dict) -> dict:
    """/v1/chat/completions' `logprobs` (bool) and `top_logprobs` (0..20, needs logprobs) as chat() options."""
    on, k = _flag(body, "logprobs"), _count(body, "top_logprobs")
    if k is not None and not on:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return {"logprobs": True, "top_logprobs": k or 0} if on else {}


def _max_tokens(body: dict, *names: str, default: int) -> int:
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return default


# ---- responses ------------------------------------------------------------------------------------------------

def _usage(stats: dict) -> dict:
    return {"prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["generated_tokens"],
            "total_tokens": stats["prompt_tokens"] + stats["generated_tokens"],
            "prompt_tokens_details": {"cached_tokens": stats["cached_tokens"]}}


def _token_json(lp: TokenLogprob | tuple[int, float], token_bytes: Callable[[int], bytes]) -> dict:
    """A token as chat logprobs show it: its text, log-probability and UTF-8 bytes."""
    value, raw = (lp.logprob, lp.bytes) if isinstance(lp, TokenLogprob) else (lp[1], token_bytes(lp[0]))
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": value, "bytes": list(raw)}


def _chat_logprobs(logprobs: list[TokenLogprob], token_bytes: Callable[[int], bytes]) -> dict:
    """OpenAI's chat `logprobs` object: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}."""
    return {"content": [dict(_token_json(lp, token_bytes), top_logprobs=[_token_json(t, token_bytes) for t in lp.top])
                        for lp in logprobs], "refusal": None}


def _completion_logprobs(logprobs: list[TokenLogprob], token_bytes: Callable[[int], bytes], offset: int = 0) -> dict:
    """OpenAI's legacy completion `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.text)
    return {"tokens": [lp.text for lp in logprobs], "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [{token_bytes(t).decode("utf-8", errors="replace"): v for t, v in lp.top}
                             for lp in logprobs],
            "text_offset": offsets}


def _finish_reason(stats: dict, called: bool) -> str:
    """OpenAI's finish_reason: "tool_calls" for a reply that ended by calling tools."""
    return "tool_calls" if called and stats["finish_reason"] == "stop" else stats["finish_reason"]


def _sse(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


class EventStream(StreamingResponse):
    """A server-sent-event response that cancels its job however the response ends (finished or disconnected)."""

    media_type = "text/event-stream"

    def __init__(self, job: Job, chunks: AsyncIterator[str]):
        super().__init__(chunks, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


class Reply:
    """The fixed fields of one response (id, created, model) and its body or chunks, for one endpoint."""

    def __init__(self, chat: bool, model_name: str, token_bytes: Callable[[int], bytes], logprobs: bool = False):
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name
        self.token_bytes = token_bytes
        self.logprobs = logprobs
        self.offset = 0   # characters streamed so far (completion logprobs' text_offset)

    def _logprobs(self, logprobs: list[TokenLogprob]) -> dict | None:
        """The choice's `logprobs` (null unless the request asked for them)."""
        if not self.logprobs:
            return None
        if self.chat:
            return _chat_logprobs(logprobs, self.token_bytes)
        got = _completion_logprobs(logprobs, self.token_bytes, self.offset)
        self.offset += sum(len(lp.text) for lp in logprobs)
        return got

    def _envelope(self, choices: list, chunk: bool) -> dict:
        if self.chat:
            obj = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_name,
                "system_fingerprint": f"mdst-{__version__}", "choices": choices}

    def whole(self, pieces: list, stats: dict) -> dict:
        """The non-streaming response."""
        scored = [lp for p in pieces for lp in getattr(p, "logprobs", ())]
        choice: dict[str, Any] = {"index": 0, "finish_reason": stats["finish_reason"], "logprobs": self._logprobs(scored)}
        if self.chat:
            message = ChatReply.merge(pieces).message
            choice["message"] = message
            choice["finish_reason"] = _finish_reason(stats, bool(message.get("tool_calls")))
        else:
            choice["text"] = "".join(pieces)
        body = self._envelope([choice], chunk=False)
        body["usage"] = _usage(stats)
        return body

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict:
        """One streamed chunk: a text piece (a ChatDelta's fields for chat; with its tokens' logprobs), the
        opening role (chat), or the closing finish_reason."""
        scored = getattr(text, "logprobs", ())
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason,
                                  "logprobs": self._logprobs(list(scored)) if scored else None}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if isinstance(text, ChatDelta):
                delta.update(text.delta())
            elif text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        return self._envelope([choice], chunk=True)

    async def stream(self, job: Job, include_usage: bool) -> AsyncIterator[str]:
        """The SSE body: (role,) pieces, the finish_reason, (usage,) [DONE]; an error event if generation fails."""
        if self.chat:
            yield _sse(self.chunk("", role=True))
        called = False
        async for kind, value in job.events():
            if kind == "piece":
                called = called or bool(getattr(value, "tool_calls", None))
                yield _sse(self.chunk(value))
            elif kind == "done":
                yield _sse(self.chunk(None, _finish_reason(value, called)))
                if include_usage:
                    final = self._envelope([], chunk=True)
                    final["usage"] = _usage(value)
                    yield _sse(final)
                yield _sse("[DONE]")
            else:
                yield _sse(_internal(value).body())


# ---- the application ------------------------------------------------------------------------------------------

def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn every failure of an endpoint into an OpenAI error response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return e.response()
        except Exception as e:  # noqa: BLE001 - a 500 for the client, the server keeps running
            return _internal(e).response()

    return endpoint


def create_app(model: Any, *, model_name: str, chat_template: str | None = None) -> Starlette:
    """The OpenAI-compatible ASGI app serving `model` (which the caller keeps and closes).

    chat_template: Jinja template text for /v1/chat/completions (default: the GGUF's own template)."""
    from ..text.chat import template_from_gguf

    template = chat_template if chat_template is not None else template_from_gguf(model.gguf)
    queue = GenerationQueue(model)
    created = int(time.time())
    model_card = {"id": model_name, "object": "model", "created": created, "owned_by": "mdst"}

    async def respond(request: Request, body: dict, reply: Reply, prepare: Callable[[], Iterator[str]],
                      fields: tuple[str, ...]) -> Response:
        stream = _flag(body, "stream")
        include_usage = _include_usage(body) if stream else False
        job = await queue.submit(prepare, fields)
        if stream:
            return EventStream(job, reply.stream(job, include_usage))
        pieces, stats = await job.result_unless_disconnected(request)
        return JSONResponse(reply.whole(pieces, stats))

    async def completions(request: Request) -> Response:
        body = await _json_body(request)
        _common_options(body)
        _only(body, "echo", (False,), "the prompt is never repeated in the output")
        _only(body, "best_of", (1,), "this server returns one choice per request")
        _only(body, "suffix", ("",), "insertion (fill in the middle) is not implemented")
        prompt = _prompt(body)
        logprobs = _completion_logprobs_options(body)
        options = dict(_sampling(body), stop=body.get("stop"), **logprobs, **_constraint(body),
                       max_tokens=_max_tokens(body, "max_tokens", default=DEFAULT_COMPLETION_MAX_TOKENS))

        def prepare() -> Iterator[str]:
            return model.generate(prompt, stream=True, **options)

        reply = Reply(False, model_name, model.tokenizer.token_bytes, bool(logprobs))
        return await respond(request, body, reply, prepare, ("prompt", *options))

    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        _common_options(body)
        logprobs = _chat_logprobs_options(body)
        if template is None:
            raise ApiError(400, f"model {model_name!r} has no chat template, so chat messages can't be turned "
                                "into a prompt; restart the server with --chat-template FILE (a Jinja chat "
                                "template) or use /v1/completions", code="no_chat_template")
        messages, tools = _messages(body), _tools(body)
        # Without a limit a reply may run to the end of the context, as OpenAI's does.
        options = dict(_sampling(body), stop=body.get("stop"), **logprobs, **_constraint(body),
                       max_tokens=_max_tokens(body, "max_completion_tokens", "max_tokens",
                                              default=model.context_length))

        def prepare() -> Iterator[str]:
            return model.chat(messages, template=template, stream=True, **tools, **options)

        reply = Reply(True, model_name, model.tokenizer.token_bytes, bool(logprobs))
        return await respond(request, body, reply, prepare, ("messages", *tools, *options))

    async def embeddings(request: Request) -> Response:
        body = await _json_body(request)
        texts = _embedding_input(body)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, f"encoding_format must be \"float\" or \"base64\", got {json.dumps(encoding)}",
                           param="encoding_format")
        if body.get("model") is not None and not isinstance(body["model"], str):
            raise ApiError(400, "model must be a string", param="model")

        def embed() -> tuple[Any, int]:
            return model.embed(texts), sum(len(model.tokenize(t)) for t in texts)

        try:
            vectors, tokens = await queue.call(embed)
        except (ValueError, TypeError) as e:
            raise _bad_argument(e, ("input",)) from None
        if "dimensions" in body and body["dimensions"] not in (None, vectors.shape[1]):
            raise ApiError(400, f"dimensions must be {vectors.shape[1]} (this model's), got "
                                f"{json.dumps(body['dimensions'])}", param="dimensions")
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": model_name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card]})

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model_id"]
        if wanted != model_name:
            raise ApiError(404, f"model {wanted!r} is not served here; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return JSONResponse(model_card)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = (f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404
                   else f"{request.method} {request.url.path}: {exc.detail}")
        return ApiError(exc.status_code, message, kind="invalid_request_error").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        queue.close()

    routes = [
        Route("/v1/models", _guarded(list_models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", _guarded(get_model), methods=["GET"]),
        Route("/v1/completions", _guarded(completions), methods=["POST"]),
        Route("/v1/chat/completions", _guarded(chat_completions), methods=["POST"]),
        Route("/v1/embeddings", _guarded(embeddings), methods=["POST"]),
        Route("/health", _guarded(health), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)


# ---- command line ---------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    """Arguments of `mdst serve`."""
    p = argparse.ArgumentParser(prog="mdst serve", description="Serve a model over an OpenAI-compatible HTTP API.")
    p.add_argument("model", help=MODEL_HELP)
    hub_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    kv_type_options(p)
    activations_option(p)
    p.add_argument("--context", type=int, default=None, help="context length (default: min(model max, 4096))")
    p.add_argument("--chat-template", metavar="FILE", default=None,
                   help="Jinja chat template for models whose GGUF has none (or to replace it)")
    p.add_argument("--name", default=None, help="model id reported by the API (default: the file's name)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mdst serve`: load the model and serve it until interrupted."""
    import uvicorn

    import mdst

    args = parser().parse_args(argv)
    try:
        template = None
        if args.chat_template is not None:
            with open(args.chat_template, encoding="utf-8") as f:
                template = f.read()
        model = mdst.load(args.model, quant=args.quant, revision=args.revision, device=args.device,
                          kv_type=kv_type_arg(args, "mdst serve"), activations=args.activations,
                          context_length=args.context)
    except (MdstError, ValueError, TypeError, OSError) as e:
        print(f"mdst serve: error: {e}", file=sys.stderr)
        return 2
    name = args.name or os.path.basename(args.model).removesuffix(".gguf")
    with model:
        app = create_app(model, model_name=name, chat_template=template)
        print(f"mdst serve: {name} on {model.backend}, OpenAI API at http://{args.host}:{args.port}/v1",
              file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
