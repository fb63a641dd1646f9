"""`auto` selection through the server with a fitted reward: the served domain verdict per request.

`cross_family` computes `best_of_n`'s `auto` offline (the domain head on the prompt states read
with transformers). This asks the real thing: `winnow serve --model MODEL --rewards-config
RUN/rewards.json` (the fitted reward read by the engine's tap), `best_of_n` with the default
``selection: "auto"`` through the openai SDK, on questions of each family, and compares each
response's `winnow.details` (`selected_by`, `domain.distance`) with the offline distance of the
same prompt.

    python -m benchmarks rewards auto_live --run RUN_A --family three_term=RUN_A \\
        --family products=RUN_B --questions 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.rewards.cross_family import family_questions
from winnow.clients.launch import free_port, server_process


async def _ask(client: Any, model: str, chat: list[dict[str, str]], reward: str, n: int) -> Any:
    r = await client.chat.completions.create(
        model=model, messages=chat, max_tokens=96, temperature=0.7,
        extra_body={"strategy": {"name": "best_of_n", "n": n, "reward": reward}},
    )  # fmt: skip
    return r.model_extra["winnow"]["details"], r.choices[0].message.content


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the reward's fit directory")
    p.add_argument("--family", action="append", required=True, metavar="NAME=RUN_DIR")
    p.add_argument("--questions", type=int, default=8, help="per family")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--port", type=int, help="default: a free one")
    p.add_argument("--out", type=Path, help="a JSON file of the rows")
    args = p.parse_args(argv)
    from openai import AsyncOpenAI

    from winnow.heads.domain import load_domain
    from winnow.train.features import FeatureReader
    from winnow.train.samples import read_journal

    run = args.run.resolve()
    rewards = json.loads((run / "rewards.json").read_text())
    reward = rewards[0]["name"]
    model_dir = rewards[0]["backbone"]
    domain = load_domain(run / "reward")
    assert domain is not None, "the reward has no domain"
    reader = FeatureReader(model_dir)
    asked: list[tuple[str, Any, Any]] = []
    for spec in args.family:
        name, _, fam = spec.partition("=")
        rows, _ = family_questions(run, Path(fam))
        journal = {r.question: r for r in read_journal(Path(fam) / "samples.jsonl")}
        for row in [r for r in rows if r.id in journal][: args.questions]:
            asked.append((name, row, journal[row.id]))
    offline = domain.distances(reader.prompt_states([rec.prompt for _, _, rec in asked]))
    del reader
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*common.winnow_serve(port), "--model", model_dir, "--rewards-config",
           str(run / "rewards.json"), "--log-level", "warning", "--request-timeout", "1800",
           "--reward-timeout", "900"]  # fmt: skip
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=1800)
    served_model = Path(model_dir).name

    async def every() -> list[Any]:
        return [await _ask(client, served_model, row.chat, reward, args.n)
                for _, row, _ in asked]  # fmt: skip

    with (
        tempfile.TemporaryDirectory() as logs,
        # always stopped, its whole process group (the engine's core process too)
        server_process(cmd, url, Path(logs) / "serve.log", env={"HF_HUB_OFFLINE": "1"}),
    ):
        answers = asyncio.run(every())
    from winnow.answers.final import matches_reference

    out = []
    for (name, row, _), d_off, (details, text) in zip(asked, offline, answers, strict=True):
        served = details.get("domain") or {}
        out.append({
            "family": name, "question": row.text, "selected_by": details.get("selected_by"),
            "served_distance": served.get("distance"), "offline_distance": d_off,
            "offline_in_domain": domain.verdict(d_off).in_domain,
            "right": matches_reference(text or "", row.answer),
        })  # fmt: skip
    agree = sum((r["selected_by"] == "best") == r["offline_in_domain"] for r in out)
    gaps = [abs(r["served_distance"] - r["offline_distance"]) for r in out
            if r["served_distance"] is not None]  # fmt: skip
    head = ["family", "questions", "served in domain", "offline in domain", "right"]
    table = []
    for name in dict.fromkeys(r["family"] for r in out):
        mine = [r for r in out if r["family"] == name]
        table.append([name, len(mine), sum(r["selected_by"] == "best" for r in mine),
                      sum(r["offline_in_domain"] for r in mine),
                      sum(r["right"] for r in mine)])  # fmt: skip
    text = "\n".join([
        f"reward: {common.shown(run / 'reward')} (threshold {domain.meta.threshold:.3f})", "",
        *common.md_table(head, table), "",
        f"served verdict = offline verdict on {agree}/{len(out)} requests; largest distance "
        f"gap {max(gaps) if gaps else float('nan'):.2e}",
    ])  # fmt: skip
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": out, "agree": agree}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
        common.record([args.out, args.out.with_suffix(".md")], script=__file__, argv=argv,
                      wall_s=common.wall_seconds())  # fmt: skip


if __name__ == "__main__":
    main()
