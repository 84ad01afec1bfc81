"""Quality measures the field reports, computed as llama.cpp's llama-perplexity does.

`perplexity.py`: the text cut into windows, each evaluated from an empty cache, the second half of each
scored; `kld.py`: a reference model's log-probabilities saved for those windows, and the KL divergence,
top-1 agreement and probability shifts of another model against them.
"""

from .kld import BaseLogProbs, KldResult, kl_divergence, save_base
from .perplexity import PerplexityResult, perplexity, text_windows

__all__ = ["BaseLogProbs", "KldResult", "PerplexityResult", "kl_divergence", "perplexity", "save_base",
           "text_windows"]
