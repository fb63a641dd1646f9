"""Heads on the policy's own hidden states: probe heads that score a state as a reward
(:mod:`.probe`) and value heads that steer decoding (:mod:`.value`), with the inverse that
recovers a state from its logits row."""
