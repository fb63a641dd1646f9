"""Reliability: soak tests under load past saturation."""
