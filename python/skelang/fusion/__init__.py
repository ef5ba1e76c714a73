"""SSF (HocSLM): skeleton-language sequential fusion, text descriptions and zero-shot classes."""
