"""The recorded graph: typed ops (shape rule, numpy reference), the builder families write against, fusion."""
