"""Rewards: outcome and process reward heads, their evaluation and serving costs."""
