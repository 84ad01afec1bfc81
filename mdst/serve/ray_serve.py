"""`mdst serve --ray`: the same OpenAI routes as a Ray Serve deployment, one model replica per GPU (or process).

Ray Serve's HTTP proxy takes the requests and routes each to a replica; every replica loads the model once and
serves create_app's routes with its own scheduler, so replicas share nothing but the cluster. A replica asks Ray
for one GPU when the model runs on the GPU (--device gpu), none otherwise. Ray is not a dependency of mdst:
install the `ray` extra (`pip install 'mdst[ray]'`) on every machine of the cluster.
"""

from __future__ import annotations

import os
import socket
from typing import Any

REPLICA_HEADER = "x-mdst-replica"   # which replica answered (host:pid), on every response


def replica_id() -> str:
    """This process's name among the replicas: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ReplicaHeader:
    """ASGI middleware that names the answering replica in a response header."""

    def __init__(self, app: Any, name: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode(), name.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), self.header])
            await send(message)

        await self.app(scope, receive, named if scope["type"] == "http" else send)


class Replica:
    """One model and its OpenAI app, in a Ray Serve replica (the class Ray Serve deploys; see `application`)."""

    def __init__(self, model: str, load_options: dict, model_name: str, chat_template: str | None, max_batch: int):
        import mdst

        self.model = mdst.load(model, **load_options)
        self.options = {"model_name": model_name, "chat_template": chat_template, "max_batch": max_batch}

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's app, built once the model is loaded."""
        from .server import create_app

        return ReplicaHeader(create_app(self.model, **self.options), replica_id())

    def __del__(self) -> None:
        model = getattr(self, "model", None)   # absent if loading failed
        if model is not None:
            model.close()


def application(model: str, *, replicas: int, load_options: dict, model_name: str, chat_template: str | None = None,
                max_batch: int = 1) -> Any:
    """The Ray Serve application of `replicas` replicas of `model` (mdst.load's `load_options`), for serve.run."""
    from ray import serve

    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
    gpus = 1 if load_options.get("device") == "gpu" else 0
    deployment = serve.deployment(serve.ingress()(Replica), name="mdst", num_replicas=replicas,
                                  ray_actor_options={"num_gpus": gpus, "num_cpus": 1})
    return deployment.bind(model, load_options, model_name, chat_template, max_batch)


def run(app: Any, *, host: str, port: int, address: str | None) -> None:
    """Serve `app` on the Ray cluster at `address` (None: start a local one) at http://host:port until interrupted."""
    import ray
    from ray import serve

    ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="mdst", route_prefix="/", blocking=True)
