"""Compilation of graphs into plans: fixed dispatch lists, bindings and parameters."""
