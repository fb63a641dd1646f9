"""Reward training (engine): features that match what the served probe reads, on the default
model."""

from __future__ import annotations

import torch


def test_last_token_feature_is_what_the_served_probe_reads(default_model_dir: str) -> None:
    """The head is trained on the features the server scores: same hidden state, to 1e-4."""
    from winnow.rewards.backbone import Backbone
    from winnow.train.features import FeatureReader

    reader = FeatureReader(default_model_dir)
    prompt = reader.render([{"role": "user", "content": "Calculate 3 + 4."}])
    responses = ["The answer is 7.", "3 + 4 = 8", "The answer is 7.", "7"]
    feats = reader.question(prompt, responses)
    assert feats["last"].shape == (4, 576)
    assert torch.equal(feats["last"][0], feats["last"][2])  # duplicates computed once
    backbone = Backbone(default_model_dir, prefix_cache_bytes=0)
    for i, response in enumerate(responses):
        ids, ends = backbone.encode_segments([prompt, response])
        hidden = backbone.encode_sequences([ids])[0].hidden[ends[-1]]
        assert torch.allclose(feats["last"][i], hidden, atol=1e-4)
    # the answer position, as the served probe finds it, reads the same state as training did
    from winnow.rewards.base import OutcomeItem
    from winnow.rewards.probe import ProbeReward

    probe = ProbeReward.__new__(ProbeReward)
    probe.backbone, probe.position = backbone, "answer"
    for i, response in enumerate(responses):
        job = probe.outcome_job(OutcomeItem(prompt, response))
        hidden = backbone.encode_sequences([job.ids])[0].hidden[job.positions[0]]
        assert torch.allclose(feats["answer"][i], hidden, atol=1e-4)
    first = probe.outcome_job(OutcomeItem(prompt, responses[0]))
    assert first.positions[0] < len(first.ids) - 1  # "7", not the final "."
    parsed = feats["stats"][:, 5]
    assert parsed[0] == 1.0 and parsed[3] == 1.0  # a final answer was found in the text
