"""Adaptive compute: the adaptive strategy's stopping rules, on stored answers."""
