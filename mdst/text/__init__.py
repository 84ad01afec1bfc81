"""Text in, text out: tokenizers, chat templates and sampling settings."""
