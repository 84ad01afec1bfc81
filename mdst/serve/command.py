"""`mdst serve`'s command line: load the model and serve it with uvicorn, or deploy replicas on Ray Serve."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import MdstError
from .args import MODEL_HELP, activations_option, hub_options, kv_type_arg, kv_type_options
from .server import create_app


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
    p.add_argument("--max-batch", type=int, default=1, metavar="N",
                   help="most generations decoding together, each engine step advancing all of them (continuous "
                        "batching; requests with logprobs or a grammar run alone). 1 runs requests one at a time, "
                        "reusing a cached prompt prefix (default: 1)")
    p.add_argument("--ray", action="store_true",
                   help="serve through Ray Serve, one model replica per process (per GPU with --device gpu); "
                        "needs the ray extra: pip install 'mdst[ray]'")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="model replicas with --ray (default: 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join with --ray, e.g. auto or ray://HEAD:10001 (default: start a local one)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mdst serve`: load the model and serve it until interrupted."""
    import uvicorn

    import mdst

    args = parser().parse_args(argv)
    name = args.name or os.path.basename(args.model).removesuffix(".gguf")
    try:
        if args.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {args.max_batch}")
        if args.replicas != 1 and not args.ray:
            raise ValueError("--replicas needs --ray (one process serves one model replica)")
        template = None
        if args.chat_template is not None:
            with open(args.chat_template, encoding="utf-8") as f:
                template = f.read()
        # the batch's caches count in the load's memory check (one cache a sequence, each a whole context)
        load_options = dict(quant=args.quant, revision=args.revision, device=args.device,
                            kv_type=kv_type_arg(args, "mdst serve"), activations=args.activations,
                            context_length=args.context, max_batch=args.max_batch if args.max_batch > 1 else None)
        if args.ray:
            return _serve_on_ray(args, load_options, name, template)
        model = mdst.load(args.model, **load_options)
    except (MdstError, ValueError, TypeError, OSError) as e:
        print(f"mdst serve: error: {e}", file=sys.stderr)
        return 2
    with model:
        app = create_app(model, model_name=name, chat_template=template, max_batch=args.max_batch)
        print(f"mdst serve: {name} on {model.backend}, max batch {args.max_batch}, OpenAI API at "
              f"http://{args.host}:{args.port}/v1", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _serve_on_ray(args: argparse.Namespace, load_options: dict, name: str, template: str | None) -> int:
    """`mdst serve --ray`: the replicas load the model; this process only deploys them and waits."""
    try:
        from . import ray_serve

        app = ray_serve.application(args.model, replicas=args.replicas, load_options=load_options, model_name=name,
                                    chat_template=template, max_batch=args.max_batch)
    except ImportError:
        raise ValueError("--ray needs Ray Serve: pip install 'mdst[ray]' (ray[serve])") from None
    print(f"mdst serve: {name}, {args.replicas} replica(s) on Ray, OpenAI API at http://{args.host}:{args.port}/v1",
          file=sys.stderr)
    ray_serve.run(app, host=args.host, port=args.port, address=args.ray_address)
    return 0
