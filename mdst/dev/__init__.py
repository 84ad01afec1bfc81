"""Development support: synthetic models, quantizers, llama.cpp comparisons, the browser oracle."""
