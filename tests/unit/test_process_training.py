"""The process head's training on Monte-Carlo step labels (unit): objectives learn the direction
that orders steps, single-step answers are added with the verdict, the measures can fail."""

from __future__ import annotations

import pytest
import torch

from winnow.train import process
from winnow.train.samples import QuestionSamples, Sample
from winnow.train.steplabels import QuestionSteps, StepSolution


def _synthetic(questions: int = 30, per: int = 10, seed: int = 0) -> process.StepSet:
    """Each step's value follows feature 0; feature 1 is a per-question offset (noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(questions * per, 6, generator=g)
    qid = torch.arange(questions).repeat_interleave(per)
    x[:, 1] += torch.randn(questions, generator=g)[qid] * 3
    value = torch.sigmoid(2 * x[:, 0]).round(decimals=1)
    inter = torch.arange(len(qid)) % 2 == 0
    hard = torch.where(inter, value > 0, value > 0.5).long()
    return process.StepSet(x, value, hard, qid, inter)


@pytest.mark.parametrize("objective", process.OBJECTIVES)
def test_objectives_learn_what_orders_the_steps(objective: str) -> None:
    data = _synthetic()
    head = process.fit(data, objective, l2=1e-3)
    assert head.weight[0] > 3 * head.weight[1:].abs().max()
    held = _synthetic(seed=1)
    m = process.measures(head(held.x), held)
    assert m["soft_label_spearman"] > 0.8
    assert m["within_question_step_auc"] > 0.8  # chance: 0.5


def test_measures_see_a_reversed_head() -> None:
    held = _synthetic(seed=2)
    m = process.measures(-held.x[:, 0], held)
    assert m["step_auc"] < 0.2 and m["soft_label_spearman"] < -0.8


def test_single_step_answers_join_with_the_verdict_and_their_own_state() -> None:
    labelled = [QuestionSteps("t", "q1", "7", "p", [StepSolution(["a\n\n", "b"], [["7"]])])]
    texts = ["The answer is 7.", "x\n\nThe answer is 7.", "The answer is 7.", "The answer is 3."]
    samples = [
        QuestionSamples("t", "q0", "1", "p", [Sample("The answer is 1.")]),  # not labelled
        QuestionSamples("t", "q1", "7", "p", [Sample(t) for t in texts]),
    ]
    last = torch.arange(5, dtype=torch.float).unsqueeze(1).expand(5, 4)
    got = process.single_steps(labelled, samples, last, singles=8)
    assert got.x[:, 0].tolist() == [1.0, 4.0]  # distinct single-step answers of q1 only
    assert got.value.tolist() == [1.0, 0.0]
    assert got.qid.tolist() == [0, 0] and not got.intermediate.any()
    rows = process.step_rows(labelled)
    assert rows == [(0, "p", ["a\n\n", "b"], [1.0, 0.0], [True, False])]


def test_the_mlp_objective_learns_and_serves_through_the_probe_loader(tmp_path) -> None:
    from winnow.heads.probe import head_scorer, load_head, save_head

    data, held = _synthetic(), _synthetic(seed=1)
    head = process.fit_head(data, "mlp", l2=0.1)
    m = process.measures(head(held.x), held)
    assert m["soft_label_spearman"] > 0.8 and m["within_question_step_auc"] > 0.8
    save_head(tmp_path, head.tensors(), {"kind": "process", "output": "sigmoid"})
    served, _ = load_head(tmp_path)
    rows = torch.arange(len(held))
    scores = head_scorer(served, True)(held.x, rows).reshape(-1)
    assert torch.allclose(scores, torch.sigmoid(head(held.x)), atol=1e-5)


def test_journal_features_are_cached_by_the_journals_content(tmp_path, monkeypatch) -> None:
    from winnow.train.steplabels import STEP_JOURNAL

    lines = STEP_JOURNAL.read_text().splitlines()
    journal = tmp_path / "steps.jsonl"
    journal.write_text("\n".join(lines[:3]) + "\n")
    monkeypatch.setattr(process, "FEATURE_CACHE", tmp_path / "cache")
    reads: list[int] = []

    def read(backbone, rows, position):  # what a forward pass would return: one row per step
        reads.append(len(rows))
        labels = process.step_labels(rows)
        labels.x = torch.arange(len(labels), dtype=torch.float).unsqueeze(1)
        return labels

    monkeypatch.setattr(process, "read_features", read)
    first = process.journal_features("train", journal, "answer", lambda: None)
    again = process.journal_features("train", journal, "answer", lambda: None)
    assert len(reads) == 1 and torch.equal(first.x, again.x)
    assert len(first.x) == len(first.value) > 0
    journal.write_text("\n".join(lines[:4]) + "\n")  # the journal grew: the cache misses
    grown = process.journal_features("train", journal, "answer", lambda: None)
    assert len(reads) == 2 and len(grown.value) >= len(first.value)
