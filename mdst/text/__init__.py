"""Text in, text out: tokenizers, chat templates, sampling settings, and replies split into reasoning, content
and tool calls."""
