"""Speculative rejection: fewer tokens for best-of-N."""
