"""`mdst serve`: an OpenAI-compatible HTTP server (Starlette + uvicorn) over one loaded model.

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (both with
server-sent-event streaming, logprobs and structured output (response_format; llama.cpp's grammar and
json_schema); chat with tools, tool_calls and reasoning_content as
mdst.text.reply splits the reply; `n` choices), POST /v1/embeddings, GET /health, GET /metrics (Prometheus
text). Errors are OpenAI's error JSON.

Model calls block, so they never run on the event loop: mdst.serve.scheduler runs them on its worker thread,
where up to `max_batch` generations decode together (continuous batching). Each request (each of its `n`
choices) reserves its turn there when it arrives; its prompt is checked and tokenized into a `Generation` in a
helper thread meanwhile (so bad input is a 400 before any streaming starts). A request whose client goes away is
cancelled: the scheduler drops it at the next step, which frees its place for the next request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..generate import Generation, prepare, prepare_chat
from ..text.sampling import SamplingParams
from .metrics import Metrics, model_gauges
from .scheduler import Job, Scheduler
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


# ---- waiting for replies --------------------------------------------------------------------------------------

async def results_unless_disconnected(jobs: list[Job], request: Request) -> list[tuple[list, dict]]:
    """Each job's result(), unless the client goes away first: then the generations are cancelled (499)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    results = asyncio.ensure_future(asyncio.gather(*(job.result() for job in jobs)))
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait((results, watcher), return_when=asyncio.FIRST_COMPLETED)
        if results.done():
            return results.result()
        raise ApiError(499, "the client closed the connection before the reply was ready")
    finally:
        results.cancel()  # a cancelled result() cancels its job
        watcher.cancel()
        for job in jobs:
            job.cancel()


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


MAX_CHOICES = 16   # most choices (`n`) one request may ask for


def _common_options(body: dict) -> int:
    """Reject what this server can't honour rather than silently ignore it; the number of choices (`n`)."""
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise ApiError(400, "model must be a string", param="model")
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise ApiError(400, f"n must be an integer from 1 to {MAX_CHOICES}, got {json.dumps(n)}", param="n")
    return n


def _choice_options(options: dict, index: int) -> dict:
    """Choice `index`'s sampler options: with a seed, choice i samples with seed + i (choice 0 is the n=1 reply)."""
    if index and options.get("seed") is not None:
        return dict(options, seed=options["seed"] + index)
    return options


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

def _usage(choices: list[dict]) -> dict:
    """OpenAI's usage of a request from its choices' statistics: the prompt counted once, the completions summed."""
    prompt, completion = choices[0]["prompt_tokens"], sum(s["generated_tokens"] for s in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": choices[0]["cached_tokens"]}}


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
    """A server-sent-event response that cancels its jobs however the response ends (finished or disconnected)."""

    media_type = "text/event-stream"

    def __init__(self, jobs: list[Job], chunks: AsyncIterator[str]):
        super().__init__(chunks, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.jobs = jobs

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for job in self.jobs:
                job.cancel()


class Reply:
    """The fixed fields of one response (id, created, model) and its body or chunks, for one endpoint."""

    def __init__(self, chat: bool, model_name: str, token_bytes: Callable[[int], bytes], logprobs: bool = False):
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name
        self.token_bytes = token_bytes
        self.logprobs = logprobs
        self.offsets: dict[int, int] = {}   # choice -> characters streamed so far (completion logprobs' text_offset)

    def _logprobs(self, logprobs: list[TokenLogprob], index: int) -> dict | None:
        """Choice `index`'s `logprobs` (null unless the request asked for them)."""
        if not self.logprobs:
            return None
        if self.chat:
            return _chat_logprobs(logprobs, self.token_bytes)
        got = _completion_logprobs(logprobs, self.token_bytes, self.offsets.get(index, 0))
        self.offsets[index] = self.offsets.get(index, 0) + sum(len(lp.text) for lp in logprobs)
        return got

    def _envelope(self, choices: list, chunk: bool) -> dict:
        if self.chat:
            obj = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_name,
                "system_fingerprint": f"mdst-{__version__}", "choices": choices}

    def whole(self, results: list[tuple[list, dict]]) -> dict:
        """The non-streaming response: a choice per (pieces, stats) result."""
        choices = []
        for index, (pieces, stats) in enumerate(results):
            scored = [lp for p in pieces for lp in getattr(p, "logprobs", ())]
            choice: dict[str, Any] = {"index": index, "finish_reason": stats["finish_reason"],
                                      "logprobs": self._logprobs(scored, index)}
            if self.chat:
                message = ChatReply.merge(pieces).message
                choice["message"] = message
                choice["finish_reason"] = _finish_reason(stats, bool(message.get("tool_calls")))
            else:
                choice["text"] = "".join(pieces)
            choices.append(choice)
        body = self._envelope(choices, chunk=False)
        body["usage"] = _usage([stats for _, stats in results])
        return body

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False, index: int = 0) -> dict:
        """One streamed chunk of choice `index`: a text piece (a ChatDelta's fields for chat; with its tokens'
        logprobs), the opening role (chat), or the closing finish_reason."""
        scored = getattr(text, "logprobs", ())
        choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason,
                                  "logprobs": self._logprobs(list(scored), index) if scored else None}
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

    async def stream(self, jobs: list[Job], include_usage: bool) -> AsyncIterator[str]:
        """The SSE body: per choice (role,) pieces and its finish_reason; then (usage,) [DONE]. An error event
        ends it if a generation fails. Choices are sent one after the other, in index order."""
        finished = []
        for index, job in enumerate(jobs):
            if self.chat:
                yield _sse(self.chunk("", role=True, index=index))
            called = False
            async for kind, value in job.events():
                if kind == "piece":
                    called = called or bool(getattr(value, "tool_calls", None))
                    yield _sse(self.chunk(value, index=index))
                elif kind == "done":
                    yield _sse(self.chunk(None, _finish_reason(value, called), index=index))
                    finished.append(value)
                else:
                    yield _sse(_internal(value).body())
                    return
        if include_usage:
            final = self._envelope([], chunk=True)
            final["usage"] = _usage(finished)
            yield _sse(final)
        yield _sse("[DONE]")


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


def create_app(model: Any, *, model_name: str, chat_template: str | None = None, max_batch: int = 1) -> Starlette:
    """The OpenAI-compatible ASGI app serving `model` (which the caller keeps and closes).

    chat_template: Jinja template text for /v1/chat/completions (default: the GGUF's own template).
    max_batch: most generations decoding together (mdst.serve.scheduler; 1 runs each alone, in arrival order)."""
    from ..text.chat import template_from_gguf

    template = chat_template if chat_template is not None else template_from_gguf(model.gguf)
    metrics = Metrics()
    scheduler = Scheduler(model, max_batch, metrics)
    created = int(time.time())
    model_card = {"id": model_name, "object": "model", "created": created, "owned_by": "mdst"}

    async def respond(request: Request, body: dict, reply: Reply, choice: Callable[[int], Generation], n: int,
                      fields: tuple[str, ...]) -> Response:
        """Queue `n` generations (choice(i) checks choice i's request) and answer with their choices."""
        stream = _flag(body, "stream")
        include_usage = _include_usage(body) if stream else False
        jobs: list[Job] = []
        try:
            for index in range(n):
                jobs.append(await scheduler.submit(functools.partial(choice, index)))
        except BaseException as e:
            for job in jobs:
                job.cancel()
            if isinstance(e, (ValueError, TypeError)):
                raise _bad_argument(e, fields) from None
            raise
        if stream:
            return EventStream(jobs, reply.stream(jobs, include_usage))
        return JSONResponse(reply.whole(await results_unless_disconnected(jobs, request)))

    async def completions(request: Request) -> Response:
        metrics.received("completions")
        body = await _json_body(request)
        n = _common_options(body)
        _only(body, "echo", (False,), "the prompt is never repeated in the output")
        _only(body, "best_of", (1,), "this server returns one choice per request")
        _only(body, "suffix", ("",), "insertion (fill in the middle) is not implemented")
        prompt = _prompt(body)
        logprobs = _completion_logprobs_options(body)
        sampling = _sampling(body)
        options = dict(stop=body.get("stop"), **logprobs, **_constraint(body),
                       max_tokens=_max_tokens(body, "max_tokens", default=DEFAULT_COMPLETION_MAX_TOKENS))

        def choice(index: int) -> Generation:
            return prepare(model, model.tokenize(prompt), params=SamplingParams(**_choice_options(sampling, index)),
                           **options)

        reply = Reply(False, model_name, model.tokenizer.token_bytes, bool(logprobs))
        return await respond(request, body, reply, choice, n, ("prompt", *sampling, *options))

    async def chat_completions(request: Request) -> Response:
        metrics.received("chat_completions")
        body = await _json_body(request)
        n = _common_options(body)
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

        def choice(index: int) -> Generation:
            return prepare_chat(model, messages, template=template, **tools, **_choice_options(options, index))

        reply = Reply(True, model_name, model.tokenizer.token_bytes, bool(logprobs))
        return await respond(request, body, reply, choice, n, ("messages", *tools, *options))

    async def embeddings(request: Request) -> Response:
        metrics.received("embeddings")
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
            vectors, tokens = await scheduler.call(embed)
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
        return JSONResponse({"status": "ok", "model": model_name, "max_batch": scheduler.max_batch,
                             "batch_size": scheduler.batch_size, "queue_depth": scheduler.queue_depth})

    async def metrics_text(request: Request) -> Response:
        gauges = model_gauges(model, scheduler)
        return Response(metrics.exposition(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = (f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404
                   else f"{request.method} {request.url.path}: {exc.detail}")
        return ApiError(exc.status_code, message, kind="invalid_request_error").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        scheduler.close()

    routes = [
        Route("/v1/models", _guarded(list_models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", _guarded(get_model), methods=["GET"]),
        Route("/v1/completions", _guarded(completions), methods=["POST"]),
        Route("/v1/chat/completions", _guarded(chat_completions), methods=["POST"]),
        Route("/v1/embeddings", _guarded(embeddings), methods=["POST"]),
        Route("/health", _guarded(health), methods=["GET"]),
        Route("/metrics", _guarded(metrics_text), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
