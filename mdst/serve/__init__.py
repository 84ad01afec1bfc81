"""Serving and measuring: the OpenAI-compatible server, speed benchmarks, GPU profiles."""
