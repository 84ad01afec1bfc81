"""`MdstLM`: an mdst model as lm-evaluation-harness's model "mdst".

lm_eval finds models only in its own registry (0.4.x reads no plugin entry point), so importing this module
registers "mdst"; `python -m mdst.eval` is lm_eval's command line after that import, and `mdst eval` calls
its Python API. Requests run one at a time (lm_eval's batch_size is accepted and ignored): log-likelihoods
are read from `Session.feed`'s rows, in one session whose cache keeps the prefix that consecutive
requests share (requests are sorted by their tokens, so a question's choices follow one another and its
prompt is computed once); generation is `mdst.generate.run`, greedy unless the task samples.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

from ..errors import MdstError

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
except ImportError as e:   # the optional extra
    raise MdstError("lm-evaluation-harness is not installed; pip install 'mdst[eval]'") from e

from ..generate import run
from ..model import Model
from ..quality.perplexity import token_nll
from ..text.sampling import SamplingParams

log = logging.getLogger("mdst")

DEVICES = ("gpu", "cpu", "auto")
ROWS_AT_ONCE = 256        # scored rows read back per feed: bounds the host's logits (256 x vocab x 4 bytes)
DEFAULT_MAX_GEN_TOKS = 256   # lm_eval's own default for generate_until tasks
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "min_p", "seed")
MODEL_ARGS_HELP = "pretrained=PATH,device=gpu|cpu|auto[,kv_type=f32|f16|q8_0,context_length=N]"


@register_model("mdst")
class MdstLM(TemplateLM):
    """An mdst model for lm_eval: `--model mdst --model_args pretrained=PATH,device=gpu` (see MODEL_ARGS_HELP).

    `pretrained` is what `mdst.load` takes (a path, a packaged model's short name, a Hub name) or an
    already loaded `mdst.Model` (then no other load option).
    """

    def __init__(self, pretrained: str | os.PathLike | Model | None = None, device: str | None = None,
                 kv_type: str | None = None, context_length: int | None = None,
                 batch_size: int | str | None = None, max_batch_size: int | None = None, **unknown: Any):
        super().__init__()
        if unknown:
            raise ValueError(f"unknown model_args for mdst: {', '.join(sorted(unknown))}; it takes {MODEL_ARGS_HELP}")
        if pretrained is None:
            raise ValueError(f"model_args for mdst need pretrained=PATH (a GGUF file); {MODEL_ARGS_HELP}")
        if device is not None and device not in DEVICES:
            raise ValueError(f"device={device!r} is not an mdst device; use device=gpu, cpu or auto "
                             "(in model_args, instead of lm_eval's --device)")
        if isinstance(pretrained, Model):
            if (device, kv_type, context_length) != (None, None, None):
                raise ValueError("pretrained is an already loaded mdst.Model: device, kv_type and context_length "
                                 "were chosen when it was loaded; leave them out")
            self.model = pretrained
        else:
            import mdst
            self.model = mdst.load(pretrained, device=device or "auto", kv_type=kv_type,
                                   context_length=context_length)
        tok = self.model.tokenizer
        if tok.eos_id is None and tok.bos_id is None:
            raise ValueError("this model's tokenizer has neither a BOS nor an EOS token, which lm_eval needs "
                             "as the context of texts scored from their start")

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "MdstLM":
        """From lm_eval's `--model_args` string and its other options (see `lm_eval_options`)."""
        return cls(**lm_eval_options(simple_parse_args_string(arg_string), additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> "MdstLM":
        """From lm_eval's model_args dict and its other options (see `lm_eval_options`)."""
        return cls(**lm_eval_options(arg_dict, additional_config))

    # ---- what TemplateLM asks ------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        """The end-of-text token (EOS, else BOS)."""
        tok = self.model.tokenizer
        return tok.eos_id if tok.eos_id is not None else tok.bos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context becomes: BOS where the model has one, else EOS (as lm_eval's HF model)."""
        tok = self.model.tokenizer
        return tok.bos_id if tok.bos_id is not None else tok.eos_id

    @property
    def max_length(self) -> int:
        """Tokens a request may span: the loaded context length."""
        return self.model.context_length

    @property
    def tokenizer_name(self) -> str:
        """Names the model file, for lm_eval's request caches."""
        return os.path.basename(self.model.path)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids of `string`, with BOS where the model adds one unless add_special_tokens says otherwise."""
        return self.model.tokenize(string, add_bos=add_special_tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether it is the greedy continuation) for each request."""
        out: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: requests[i][1] + requests[i][2])
        with self.model.session() as s:
            for i in order:
                key, context, continuation = requests[i]
                out[i] = score_continuation(s, context, continuation)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, out[i])
        return out

    # ---- the other two request kinds ---------------------------------------------------------------
    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """log P(text) of each request's whole text, in windows of the context length (lm_eval's rolling windows)."""
        out = []
        with self.model.session() as s:
            for req in requests:
                (text,) = req.args
                windows = get_rolling_token_windows(token_list=self.tok_encode(text, add_special_tokens=False),
                                                    prefix_token=self.prefix_token_id,
                                                    max_seq_len=self.max_length, context_len=1)
                total = sum(score_continuation(s, *make_disjoint_window(w))[0] for w in windows)
                self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
                out.append(total)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Each request's continuation, ended by its `until` strings (not included) or max_gen_toks tokens."""
        out = [""] * len(requests)
        # in the order of their prompts, so the default session's cache keeps what neighbours share (few-shot)
        for i in sorted(range(len(requests)), key=lambda i: requests[i].args[0]):
            context, gen_kwargs = requests[i].args
            out[i] = self._generate(context, dict(gen_kwargs or {}))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), out[i])
        return out

    def _generate(self, context: str, kwargs: dict[str, Any]) -> str:
        bad = sorted(set(kwargs) - set(GEN_KWARGS))
        if bad:
            raise ValueError(f"generation kwargs {', '.join(bad)} are not supported by mdst; it takes "
                             f"{', '.join(GEN_KWARGS)}")
        until = kwargs.get("until") or []
        stops = [until] if isinstance(until, str) else [u for u in until if u]
        max_tokens = int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        sampling = {k: kwargs[k] for k in ("top_k", "top_p", "min_p", "seed") if k in kwargs}
        ids = self.tok_encode(context)
        room = self.max_length - min(max_tokens, self.max_length // 2)   # as lm_eval's HF model: keep the end
        return run(self.model, ids[-room:], params=SamplingParams(temperature, **sampling), max_tokens=max_tokens,
                   stop=stops)


def lm_eval_options(model_args: dict[str, Any], additional: dict | None) -> dict[str, Any]:
    """model_args with lm_eval's own options (batch_size, max_batch_size, device) where model_args lacks them.

    lm_eval's command line always passes its --device (default "cuda:0"): it counts only when it names an
    mdst device and model_args has no device=, so device=gpu in model_args never collides with it.
    """
    extra = {k: v for k, v in (additional or {}).items() if v is not None and k not in model_args}
    if extra.get("device") not in DEVICES:
        extra.pop("device", None)
    return {**model_args, **extra}


def score_continuation(session: Any, context: Sequence[int], continuation: Sequence[int]) -> tuple[float, bool]:
    """(log P(continuation | context), whether each continuation token is the argmax) in `session`, reusing
    the cached prefix it shares with context; a request longer than the context length keeps its end."""
    ctx_len = session.model.context_length
    if len(continuation) > ctx_len:
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the context length of "
                         f"{ctx_len}; load with a larger context_length")
    if not continuation:
        return 0.0, True
    ids = np.asarray([*context, *continuation][-(ctx_len + 1):], dtype=np.int64)
    inputs, targets = ids[:-1], ids[-len(continuation):]
    first = len(inputs) - len(targets)   # the row that predicts the continuation's first token
    kept = session.reuse_prefix(inputs[:first + 1])
    if kept < first:
        session.prefill(inputs[kept:first])   # rows nobody scores: only the cache is needed
    total, greedy = 0.0, True
    for a in range(first, len(inputs), ROWS_AT_ONCE):
        rows = session.feed(inputs[a:a + ROWS_AT_ONCE])
        want = targets[a - first:a - first + len(rows)]
        total -= float(token_nll(rows, want).sum())
        greedy = greedy and bool((rows.argmax(axis=1) == want).all())
    return total, greedy


def lm_eval_cli(argv: list[str]) -> int:
    """lm_eval's command line (`lm-eval run ...` or the older `lm_eval --model ...`) with "mdst" registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
    return 0
