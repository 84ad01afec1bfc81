"""File and number formats: strict GGUF reading over mmap, tensor dequantization, KV cache rows."""
