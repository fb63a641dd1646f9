"""The process head's training (engine): the positions a process probe reads, on the default
model's tokenizer and backbone."""

from __future__ import annotations


def test_a_process_probe_reads_each_steps_result_or_its_last_token(default_model_dir: str) -> None:
    from winnow.rewards.backbone import Backbone
    from winnow.rewards.probe import process_positions

    backbone = Backbone(default_model_dir)
    prompt = "<|im_start|>user\nCalculate 5 + -4."
    steps = ["5 + -4 = 11\n\n", "So the answer is 1."]
    at_answer = process_positions(backbone, prompt, steps, "answer")
    at_end = process_positions(backbone, prompt, steps, "last")
    assert at_answer.ids == at_end.ids  # same tokens as the segments the probe always encoded
    tok = backbone.tokenizer
    read = [tok.decode(at_answer.ids[: p + 1]) for p in at_answer.positions]
    assert read[0].endswith("5 + -4 = 11") and read[1].endswith("So the answer is 1")
    assert at_end.positions[-1] == len(at_end.ids) - 1
    assert tok.decode(at_end.ids[: at_end.positions[0] + 1]).endswith("11\n\n")
