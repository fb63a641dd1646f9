"""Answers: the answer checker's speed and bounds, and math-verify beside it."""
