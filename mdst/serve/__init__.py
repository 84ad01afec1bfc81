"""Serving and measuring: the OpenAI-compatible server (its scheduler, metrics, command line and Ray Serve
deployment), speed benchmarks, GPU profiles."""
