"""The exceptions mdst raises: one base class, one subclass per kind of problem."""


class MdstError(Exception):
    """Base class of every error mdst raises on purpose."""


class GGUFError(MdstError, ValueError):
    """The file is not a well-formed GGUF file (the message says where and why)."""


class UnsupportedModelError(MdstError):
    """The file is valid GGUF but holds an architecture, tensor type or vocabulary mdst cannot run."""


class DeviceError(MdstError, RuntimeError):
    """No usable WebGPU adapter, a lost device, or a GPU step that did not finish."""


class OutOfMemoryError(MdstError, MemoryError):
    """The model, KV cache and activations do not fit the device or the memory limit."""


class HubError(MdstError):
    """A model could not be found or fetched on the Hugging Face Hub (repository, revision, file or
    quantization not there; offline and not in the cache)."""


class BaseFileError(MdstError, ValueError):
    """A KL-divergence base file that cannot be read or was made for other windows (text, ctx, vocabulary)."""
