"""Split a GGUF file the way llama.cpp's gguf-split does (its binary is not available here): gguf-py's writer
puts all metadata in the first part and split.no / split.count / split.tensors.count in every part."""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np

from mdst.dev.llamacpp import _copy_metadata
from mdst.format.gguf import GGUFFile, split_path


def split_gguf(src: str | Path, prefix: str | Path, parts: int) -> list[Path]:
    """Write `src` as `parts` files PREFIX-0000i-of-0000N.gguf (tensors spread evenly); returns their paths."""
    with GGUFFile(src) as f:
        w = gguf.GGUFWriter(f"{prefix}.gguf", f.architecture, split_max_tensors=math.ceil(len(f.tensors) / parts))
        _copy_metadata(w, f)
        if "general.file_type" in f.metadata:
            w.add_file_type(f.metadata["general.file_type"])
        for t in f:
            raw = np.frombuffer(bytes(f.tensor_bytes(t.name)), np.uint8)
            w.add_tensor(t.name, raw.reshape(*reversed(t.shape[1:]), t.row_bytes),
                         raw_dtype=gguf.GGMLQuantizationType(t.type.id))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    paths = [Path(split_path(str(prefix), i, parts)) for i in range(parts)]
    assert all(p.exists() for p in paths), f"gguf-py wrote other names than {paths}"
    return paths
