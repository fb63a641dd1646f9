"""Serving: winnow against plain vLLM and a naive client-side pipeline."""
