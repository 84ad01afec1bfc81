"""Engines that run a model's steps: compiled plans on the GPU, the reference graph on numpy."""
