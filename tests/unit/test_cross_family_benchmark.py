"""`benchmarks rewards cross_family` (#31's off-domain measurement) on two tiny `winnow train fit`
runs of one tiny model: the reward's own held-out questions are its in-domain row, the other
run's questions are measured without the ones sharing a training problem key, and `auto` is the
reward's pick inside its domain and the vote outside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.rewards import cross_family
from tests.support.tiny_lm import tiny_lm
from winnow.engine.base import SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.train.features import FeatureReader, cache_key
from winnow.train.fit import FitConfig, fit_reward
from winnow.train.samples import read_journal
from winnow.train.sampling import EngineSampler

N = 6


def script(prompt: str, index: int, spec: SamplingSpec) -> str:
    """Every third answer is right and plain, the others hedge and are wrong."""
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    value = a * b if "times" in prompt else a + b
    return f"The answer is {value}." if index % 3 == 0 else f"Maybe {value + 1}?"


def _fit(root: Path, model: Path, name: str, rows: list[dict[str, object]]) -> Path:
    questions = root / f"{name}.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = FitConfig(model=str(model), out=str(root / name), questions=str(questions), n=N,
                       max_tokens=32, subsets=20, mlp=False, select_at=(4,), name=name,
                       objectives=("pairwise",), l2_grid=(1e-2,))  # fmt: skip
    fit_reward(config, sampler=EngineSampler(FakeEngine(script)))
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cross")
    model = tiny_lm(root / "model")
    sums = [{"question": f"Calculate {a} + {b}.", "answer": a + b}
            for a in range(10) for b in range(4)]  # fmt: skip
    # another family; "3 + 2" is also one of the sums' problems (same key): left out there
    products = [{"question": f"What is {a} times {b}? Think about it and say it once more.",
                 "answer": a * b} for a in range(2, 8) for b in range(2, 6)]  # fmt: skip
    products.append({"question": "Calculate ( 3 + 2 ).", "answer": 5})
    return model, _fit(root, model, "sums", sums), _fit(root, model, "products", products)


def test_own_heldout_is_the_in_domain_row_and_shared_keys_are_left_out(runs) -> None:
    model, sums, products = runs
    reader = FeatureReader(model)
    reward = sums / "reward"
    own = cross_family.evaluate(reward, sums, [4], reader=reader, subsets=20, seed=0, limit=None)
    held = json.loads((sums / "report.json").read_text())["heldout"]["questions"]
    assert own["questions"] == held and own["left_out_sharing_a_training_key"] == 0
    other = cross_family.evaluate(
        reward, products, [4], reader=reader, subsets=20, seed=0, limit=None
    )
    # 24 products and "( 3 + 2 )": the last shares the key of a training sum when 3 + 2 trained
    from winnow.train.fit import FitConfig, load_rows, split_rows

    cfg = FitConfig.model_validate({**json.loads((sums / "fit.json").read_text())["config"],
                                    "out": str(sums)})  # fmt: skip
    trained = {row.key for row in split_rows(load_rows(cfg), cfg.eval_fraction)[0]}
    shared = int("3+2" in {k.replace(" ", "") for k in trained})
    assert other["left_out_sharing_a_training_key"] == shared
    assert other["questions"] == 25 - shared


def test_auto_is_best_inside_the_domain_and_the_vote_outside(runs) -> None:
    model, sums, products = runs
    reader = FeatureReader(model)
    reward = sums / "reward"
    for run in (sums, products):
        fam = cross_family.evaluate(reward, run, [4], reader=reader, subsets=20, seed=0, limit=None)
        sel = fam["selection"][0]
        inside = fam["in_domain_fraction"]
        if inside == 1.0:
            assert sel["auto"] == pytest.approx(sel["best"])
        elif inside == 0.0:
            assert sel["auto"] == pytest.approx(sel["majority"])
            assert sel["auto_gain"]["value"] == pytest.approx(0.0)
        low, high = sorted((sel["best"], sel["majority"]))
        assert low - 1e-9 <= sel["auto"] <= high + 1e-9 or 0 < inside < 1
    # the products' prompts are far from the sums' on this model: out of the domain
    fam = cross_family.evaluate(reward, products, [4], reader=reader, subsets=20, seed=0, limit=5)
    assert fam["questions"] == 5 and fam["in_domain_fraction"] < 0.5


def test_the_command_writes_figures_and_a_table(runs, tmp_path: Path, capsys) -> None:
    _, sums, products = runs
    out = tmp_path / "cross.json"
    cross_family.main(["--reward", str(sums / "reward"), "--family", f"sums={sums}",
                       "--family", f"products={products}", "--n", "4", "--subsets", "10",
                       "--out", str(out)])  # fmt: skip
    figures = json.loads(out.read_text())
    assert set(figures["families"]) == {"sums", "products"}
    printed = capsys.readouterr().out
    assert "auto - majority" in printed and "| products |" in printed


def test_cached_only_measures_the_questions_already_read(runs) -> None:
    model, sums, products = runs
    reader = FeatureReader(model)
    reward = sums / "reward"
    full = cross_family.evaluate(
        reward, products, [4], reader=reader, subsets=5, seed=0, limit=None
    )
    rows, _ = cross_family.family_questions(sums, products)
    journal = {r.question: r for r in read_journal(products / "samples.jsonl")}
    path = products / "features" / f"{cache_key(journal[rows[0].id])}.pt"  # a measured one's
    gone = path.read_bytes()
    path.unlink()
    try:
        part = cross_family.evaluate(
            reward, products, [4], reader=reader, subsets=5, seed=0, limit=None, cached_only=True
        )
        assert part["questions"] == full["questions"] - 1
        assert not path.exists()  # nothing was read
    finally:
        path.write_bytes(gone)
