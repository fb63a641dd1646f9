"""The playground page (GET /playground, engine) in a real headless browser: Debian's chromium,
driven by Playwright (never `playwright install`: it would download a browser of its own).
`make test` installs chromium when /usr/bin/chromium is missing; without it these tests fail,
they do not skip.

For each strategy the page runs a request with ``trace: true``, and the test checks that what it
drew matches the JSON trace and usage the page received (rows, chosen rows, groups, cards
segments by outcome, tree nodes with pruned branches, token and call counts), then saves a
screenshot under tests/artifacts/playground/ (gitignored). One test on a fake-engine server
with scripted rewards (tests/support/playground.py; here since it needs the browser); one (marker
``engine``) on the real engine and the default rewards. The page without a browser:
tests/unit/test_playground.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.playground import serve_playground

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "playground"
README_SHOTS = ROOT / "benchmarks" / "results" / "playground"
STRATEGIES = ("best_of_n", "best_of_majority", "adaptive", "deepconf", "cards", "tree_search")


# ---- a fake-engine server with scripted rewards named like the real ones --------------------


@pytest.fixture(scope="module")
def playground_server() -> Iterator[tuple[str, str]]:
    with serve_playground() as served:  # tests/support/playground.py
        yield served


# ---- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser: Any, base: str, key: str | None) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(base + "/playground")
    if key is not None:
        page.fill("#api-key", key)
        page.click("#connect")
        page.wait_for_selector("#strategy option[value=best_of_n]", state="attached")
    return page


def run_strategy(page: Any, name: str, params: dict[str, Any], sampling: dict[str, Any]) -> dict:
    """Choose a strategy and its parameters in the page, send, wait; returns what it received."""
    page.select_option("#strategy", name)
    for param, value in params.items():
        selector = f'#params [data-param="{param}"]'
        kind = page.get_attribute(selector, "data-kind")
        if kind == "enum":
            page.select_option(selector, f'"{value}"')
        elif kind == "boolean":
            page.set_checked(selector, bool(value))
        else:
            page.fill(selector, str(value))
    for field, value in sampling.items():
        page.fill(f"#{field}", str(value))
    page.click("#send")
    page.wait_for_function(
        "['done', 'error'].includes(document.getElementById('status').dataset.state)",
        timeout=120_000,
    )
    state = page.evaluate(
        "({trace: playground.trace, usage: playground.usage, answer: playground.answer,"
        " request: playground.request, message: document.getElementById('message').textContent,"
        " status: document.getElementById('status').dataset.state})"
    )
    assert state["status"] == "done", state["message"]
    return state


def attrs(page: Any, selector: str, name: str) -> list[str]:
    return page.eval_on_selector_all(selector, f"els => els.map(e => e.getAttribute('{name}'))")


def check_drawn(page: Any, name: str, state: dict) -> None:
    """What the page drew is what the JSON says."""
    trace, usage = state["trace"], state["usage"]
    assert trace is not None and trace["strategy"] == name
    assert state["request"]["strategy"]["trace"] is True
    assert page.inner_text("#answer") == state["answer"]
    if trace["candidates"]:
        rows = page.query_selector_all("#candidates-table tr.candidate")
        assert len(rows) == len(trace["candidates"])
        assert attrs(page, "#candidates-table tr.candidate", "data-index") == [
            str(c["index"]) for c in trace["candidates"]
        ]
        chosen = attrs(page, "#candidates-table tr.candidate.chosen", "data-index")
        assert sorted(map(int, chosen)) == sorted(trace["winner"])
        groups = attrs(page, "#candidates-table tr.candidate", "data-group")
        assert groups == [
            "" if c["group"] is None else str(c["group"]) for c in trace["candidates"]
        ]
        (winner,) = [c for c in trace["candidates"] if c["chosen"]]
        if CUT_MARK not in winner["text"]:
            assert state["answer"] == winner["text"]  # the streamed answer is the winner
    if trace["groups"]:
        assert len(page.query_selector_all("#groups-table tr.group")) == len(trace["groups"])
        winners = attrs(page, "#groups-table tr.group.winner", "data-id")
        assert winners == [str(g["id"]) for g in trace["groups"] if g["winner"]]
    if trace["waves"]:
        assert len(page.query_selector_all("#waves-table tr.wave")) == len(trace["waves"])
    if name == "cards":
        segments = trace["segments"]
        assert segments
        for outcome in ("accepted", "rejected", "forced"):
            drawn = page.query_selector_all(f"#segments .segment.{outcome}")
            assert len(drawn) == sum(s["outcome"] == outcome for s in segments), outcome
        scored = [s for s in segments if s["score"] is not None]
        assert len(page.query_selector_all("#tau-chart circle.score")) == len(scored)
        points = page.get_attribute("#tau-chart polyline.tau", "points")
        assert len(points.split()) == len(segments)
        taken = "".join(s["text"] for s in segments if s["outcome"] != "rejected")
        assert taken == state["answer"]
    if name == "deepconf":
        curves = [c for c in trace["candidates"] if c["confidence"] and c["confidence"]["curve"]]
        assert curves
        assert len(page.query_selector_all("#confidence-chart polyline.curve")) == len(curves)
        cut = [c for c in curves if c["confidence"]["cut"] is not None]
        assert len(page.query_selector_all("#confidence-chart .cutmark")) == len(cut)
        assert len(page.query_selector_all("#confidence-chart polyline.cut")) == len(cut)
        threshold = page.query_selector_all("#confidence-chart line.threshold")
        assert len(threshold) == (trace["threshold"] is not None)
    if name == "tree_search":
        nodes = trace["nodes"]
        assert len(page.query_selector_all("#tree li.node")) == len(nodes)
        for status in ("kept", "pruned", "finished"):
            drawn = page.query_selector_all(f"#tree li.node.{status}")
            assert len(drawn) == sum(n["status"] == status for n in nodes), status
        (chosen,) = page.query_selector_all("#tree li.node.chosen")
        assert int(chosen.get_attribute("data-id")) in {n["id"] for n in nodes if n["chosen"]}
        # the chosen beam's path runs through no pruned (greyed) branch
        assert chosen.evaluate("e => e.closest('li.node.pruned') === null")
        grey = page.eval_on_selector_all(
            "#tree li.node.pruned", "els => els.map(e => getComputedStyle(e).opacity)"
        )
        assert all(float(o) < 1 for o in grey)
    winnow = usage["winnow"]
    expected = {
        "kept": usage["completion_tokens"],
        "discarded": winnow["discarded_tokens"],
        "generated": winnow["generated_tokens"],
        "engine_calls": winnow["engine_calls"],
        "reward_calls": winnow["reward_calls"],
    }
    for key, value in expected.items():
        assert page.inner_text(f'#usage dd[data-key="{key}"]') == str(value), key
    assert page.inner_text('#usage dd[data-key="wall"]').endswith(" s")
    assert not page.errors, page.errors


CUT_MARK = " […] "


def shoot(page: Any, name: str, copy_to: Path | None = None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy_to / path.name)
    return path


FAKE_RUNS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "best_of_n": ({"n": 6, "selection": "weighted_vote"}, {}),
    "best_of_majority": ({"n": 6}, {}),
    "adaptive": ({"wave": 2, "max_n": 6, "reward": "default", "selection": "weighted_vote"}, {}),
    "deepconf": ({"wave": 2, "max_n": 6}, {}),
    "cards": ({"alpha": 1, "acceptance": "hard", "min_segment_tokens": 2, "max_rejections": 3}, {}),
    "tree_search": ({"n": 4, "beam_width": 2}, {"max-tokens": 300}),
}


def test_playground_draws_each_strategy_on_the_fake_engine(playground_server, browser):
    base, key = playground_server
    started = time.monotonic()
    page = open_page(browser, base, None)  # no key yet: the page asks for one
    page.wait_for_function("document.getElementById('message').textContent.includes('API key')")
    page.fill("#api-key", key)
    page.click("#connect")
    page.wait_for_selector("#strategy option[value=cards]", state="attached")
    assert page.input_value("#strategy") == "best_of_n"
    for name in STRATEGIES:
        params, sampling = FAKE_RUNS[name]
        state = run_strategy(page, name, params, sampling)
        check_drawn(page, name, state)
        if name == "cards":
            outcomes = {s["outcome"] for s in state["trace"]["segments"]}
            assert {"accepted", "rejected"} <= outcomes
        if name == "tree_search":
            assert any(n["status"] == "pruned" for n in state["trace"]["nodes"])
        shoot(page, f"fake-{name}")
    page.close()
    assert time.monotonic() - started < 60


ENGINE_RUNS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "best_of_n": ({"n": 4}, {}),
    "best_of_majority": ({"n": 4, "min_count": 1}, {}),
    "adaptive": ({"wave": 2, "max_n": 4, "reward": "default", "selection": "weighted_vote"}, {}),
    "deepconf": ({"wave": 4, "max_n": 12}, {}),
    "cards": ({"max_rejections": 2, "horizon": 48, "max_segment_tokens": 24}, {}),
    "tree_search": ({"n": 4, "beam_width": 2, "max_depth": 3, "step_tokens": 24}, {}),
}


@pytest.mark.engine
def test_playground_draws_each_strategy_on_the_real_engine(live_server, browser):
    base = live_server.base_url.removesuffix("/v1")
    started = time.monotonic()
    page = open_page(browser, base, live_server.api_key)
    for name in STRATEGIES:
        params, sampling = ENGINE_RUNS[name]
        state = run_strategy(page, name, params, {"max-tokens": 48, "seed": 7, **sampling})
        check_drawn(page, name, state)
        shoot(page, name, copy_to=README_SHOTS)
    page.close()
    print(f"\nplayground on the real engine: {time.monotonic() - started:.1f} s")
