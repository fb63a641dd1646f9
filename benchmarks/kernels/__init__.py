"""Kernels: winnow's Triton kernels against their torch references."""
