"""Reward training (unit): the samples journal and within-question objectives (features that match
what the served probe reads: tests/engine/test_reward_training.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from winnow.engine.fake import FakeEngine
from winnow.train import ranking
from winnow.train.samples import QuestionSamples, Sample, read_journal, sample_questions
from winnow.train.tasks import Problem, split_of


def _train_problems(count: int) -> list[Problem]:
    out, a = [], 0
    while len(out) < count:
        question = f"Calculate {a} + {a + 1}."
        if split_of(question) == "train":
            out.append(Problem("add_sub_1digit", question, str(2 * a + 1)))
        a += 1
    return out


def test_sampling_journals_each_question_and_resumes_without_asking_again(tmp_path: Path) -> None:
    journal = tmp_path / "samples.jsonl"
    items = _train_problems(3)
    engine = FakeEngine(lambda prompt, i, spec: f"The answer is {i}.")
    first = asyncio.run(sample_questions(engine, items[:2], journal, n=4, concurrency=2))
    assert [q.question for q in first] == [p.question for p in items[:2]]
    assert all(len(q.samples) == 4 for q in first)
    assert len(engine.calls) == 2
    # a line cut short by an interrupted write is dropped and its question asked again
    with journal.open("a") as f:
        f.write('{"task": "add_sub_1digit", "question": "cut sh')
    again = asyncio.run(sample_questions(engine, items, journal, n=4, concurrency=2))
    assert len(engine.calls) == 3  # only the third question was new
    assert [q.question for q in again] == [p.question for p in items]
    assert len(read_journal(journal)) == 3
    assert again[2].samples[1].text == "The answer is 1."


def test_sampling_refuses_evaluation_questions(tmp_path: Path) -> None:
    question = next(
        f"Calculate {a} * 3." for a in range(50) if split_of(f"Calculate {a} * 3.") == "eval"
    )
    with pytest.raises(ValueError, match="evaluation-split"):
        asyncio.run(
            sample_questions(
                FakeEngine(), [Problem("mul_1digit", question, "0")], tmp_path / "j.jsonl", n=2
            )
        )


def test_journal_round_trip() -> None:
    q = QuestionSamples("t", "q?", "4", "prompt", [Sample("x", [1, 2], "stop"), Sample("y")])
    back = QuestionSamples.from_json(json.loads(json.dumps(q.to_json())))
    assert back == q


def _synthetic(questions: int = 40, per: int = 16, seed: int = 0):
    """Features = a question offset (what pointwise probes learn) + a direction that marks the
    right answers within each question."""
    g = torch.Generator().manual_seed(seed)
    d = 8
    truth = torch.zeros(d)
    truth[0] = 1.0
    xs, ys, qs = [], [], []
    for q in range(questions):
        offset = torch.randn(d, generator=g) * 3
        y = (torch.rand(per, generator=g) < 0.3).long()
        y[0], y[1] = 1, 0
        x = offset + torch.randn(per, d, generator=g) + 1.5 * y[:, None].float() * truth
        xs.append(x)
        ys.append(y)
        qs.append(torch.full((per,), q))
    return torch.cat(xs), torch.cat(ys), torch.cat(qs)


@pytest.mark.parametrize("objective", ["listwise", "pairwise", "pointwise"])
def test_ranking_objectives_learn_the_within_question_direction(objective: str) -> None:
    x, y, qid = _synthetic()
    head = ranking.fit(x, y, qid, objective, 1e-3)
    within, count = ranking.within_auc(head(x), y, qid)
    assert count == 40
    assert within > 0.8
    cosine = torch.nn.functional.cosine_similarity(head.weight, torch.eye(8)[0], dim=0)
    assert cosine > 0.8


def test_the_mlp_head_learns_the_direction_and_is_what_the_served_probe_computes() -> None:
    from winnow.kernels.dispatch import reward_head
    from winnow.kernels.heads import MLPHead

    x, y, qid = _synthetic()
    head = ranking.calibrated(ranking.fitted(x, y, qid, "mlp", 1e-2), x, y)
    held = _synthetic(seed=1)
    assert ranking.within_auc(head(held[0]), held[1], held[2])[0] > 0.8
    t = head.tensors()
    served = MLPHead(t["w1"], t["b1"], t["w2"], t["b2"])
    rows = reward_head(held[0], torch.arange(len(held[0])), served).reshape(-1)
    assert torch.allclose(rows, head(held[0]), atol=1e-4)
    p = torch.sigmoid(head(x))
    assert abs(float(p.mean()) - float(y.float().mean())) < 0.05


def _xor(n: int = 800, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two informative features whose product's sign is the label (no linear head separates
    them) plus two noise columns on their own scales; soft labels as the step values are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * torch.tensor([1.0, 1.0, 5.0, 0.1]) + 3.0
    value = torch.sigmoid(6 * (x[:, 0] - 3) * (x[:, 1] - 3))
    return x, value


def test_the_pointwise_mlp_learns_soft_labels_a_linear_head_cannot() -> None:
    x, value = _xor()
    qid = torch.arange(len(x)) // 8
    held, held_value = _xor(seed=1)
    hard, held_hard = (value > 0.5).long(), (held_value > 0.5).long()
    mlp = ranking.fit_mlp(x, value, qid, objective="pointwise", hidden=32, dropout=0.0,
                          weight_decay=1e-2, epochs=600)  # fmt: skip
    linear = ranking.fit(x, hard, qid, "pointwise", 1e-3)
    assert ranking.auc(mlp(held).tolist(), held_hard.tolist()) > 0.95
    assert ranking.auc(linear(held).tolist(), held_hard.tolist()) < 0.7
    # BCE on soft labels: the mean probability matches the mean value
    assert abs(float(torch.sigmoid(mlp(x)).mean() - value.mean())) < 0.05


def test_the_mlp_fold_back_to_raw_inputs_is_exact() -> None:
    """Standardisation makes the net the same for any affine rescaling of the features (same
    seed), so the folded heads must agree on correspondingly rescaled inputs."""
    x, value = _xor()
    qid = torch.arange(len(x)) // 8
    scale, shift = torch.tensor([3.0, 0.5, 10.0, 2.0]), torch.tensor([-7.0, 2.0, 0.0, 10.0])
    for objective, y in (("pointwise", value), ("pairwise", (value > 0.5).long())):
        a = ranking.fit_mlp(x, y, qid, objective=objective, epochs=20)
        b = ranking.fit_mlp(x * scale + shift, y, qid, objective=objective, epochs=20)
        assert torch.allclose(a(held := _xor(seed=2)[0]), b(held * scale + shift), atol=1e-2)
    with pytest.raises(ValueError, match="objective"):
        ranking.fit_mlp(x, value, qid, objective="listwise")


def test_calibration_keeps_the_order_and_gives_probabilities() -> None:
    x, y, qid = _synthetic()
    head = ranking.fit(x, y, qid, "pairwise", 1e-3)
    calibrated = ranking.calibrated(head, x, y)
    raw, p = head(x), torch.sigmoid(calibrated(x))
    assert torch.equal(torch.argsort(raw), torch.argsort(calibrated(x)))
    assert abs(float(p.mean()) - float(y.float().mean())) < 0.05


def test_folds_split_questions_not_answers() -> None:
    _, _, qid = _synthetic(questions=23)
    folds = ranking.question_folds(qid, 5)
    assert torch.equal(torch.stack(folds).sum(0), torch.ones(len(qid), dtype=torch.long))
    for test in folds:
        assert not set(qid[test].tolist()) & set(qid[~test].tolist())


def test_auc_counts_ties_half() -> None:
    assert ranking.auc([1.0, 1.0], [1, 0]) == 0.5
    assert ranking.auc([2.0, 1.0, 0.0], [1, 0, 0]) == 1.0
    assert ranking.auc([1.0], [1]) is None
