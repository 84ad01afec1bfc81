"""Command-line options that `mdst` and `mdst serve` share."""

from __future__ import annotations

import argparse
import sys


def kv_type_arg(args: argparse.Namespace, prog: str = "mdst") -> str | None:
    """--kv-type, or what the deprecated --precision stands for (said once on stderr); an error if they disagree."""
    if getattr(args, "precision", None) is not None:
        from ..gpu.device import kv_type_for_precision

        print(f"{prog}: warning: --precision is deprecated and will be removed: it only set the KV cache type "
              "(arithmetic is f32); use --kv-type f32|f16|q8_0", file=sys.stderr)
        args.kv_type = kv_type_for_precision(args.precision, args.kv_type)
        args.precision = None
    return args.kv_type


def kv_type_options(p: argparse.ArgumentParser) -> None:
    """--kv-type, and --precision: its deprecated, hidden alias ("auto": the default)."""
    p.add_argument("--kv-type", default=None, choices=["f32", "f16", "q8_0"],
                   help="KV cache type (arithmetic: --activations) "
                        "(default: f16 where the adapter has shader-f16, else f32)")
    p.add_argument("--precision", default=None, choices=["auto", "f32", "f16"], help=argparse.SUPPRESS)


def activations_option(p: argparse.ArgumentParser) -> None:
    """--activations: what matmuls on quantized weights multiply (mdst.load's activations)."""
    p.add_argument("--activations", default="f32", choices=["f32", "q8"],
                   help="f32: activations as they are; q8: rounded to 8 bits per block of 32 (llama.cpp's q8_1), "
                        "for packed 8-bit integer dot products on the GPU (default: f32)")


MODEL_HELP = ("GGUF file, packaged model name (smollm2-135m, gemma3-270m) or Hugging Face model "
              "(ORG/REPO with --quant, hf://ORG/REPO/FILE.gguf)")


def hub_options(p: argparse.ArgumentParser) -> None:
    """--quant and --revision: which file of a Hugging Face repository."""
    p.add_argument("--quant", default=None, help="quantization to pick in an ORG/REPO, e.g. Q4_K_M")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: main)")
