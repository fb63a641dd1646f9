"""Issue 28 on the fake engine: what a request may cost before and after admission.

/v1/rewards goes through admission, drain and /metrics like the other endpoints; nothing that
reads client text runs on the event loop before admission (the strategy's reference is checked
after it, in a worker process; templating and tokenizing run in a thread); requests are bounded
in sequences, prompt characters, stop strings, delimiters and references; an empty API key is
refused at start-up; URLs lose their credentials in /health, error bodies and logs; the schema
and the server agree on booleans, token ids and what may be empty.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.support.health_polls import HealthPolls
from winnow.answers import final as answers
from winnow.engine.base import EngineUnavailable
from winnow.engine.fake import FakeEngine
from winnow.rewards.fake import fake_rewards
from winnow.rewards.registry import RewardSet
from winnow.server import offload
from winnow.server.app import create_app
from winnow.server.background import BackgroundServer
from winnow.server.redaction import RedactingFilter, redact_log_records, redact_url, redact_urls
from winnow.settings import Settings

MESSAGES = [{"role": "user", "content": "2+2?"}]
OUTCOME = {"reward": "default", "items": [{"prompt": "2+2?", "response": "4"}]}
# takes seconds in Python's re before issue 28's linear expressions (a stall, on the loop)
SLOW_REFERENCE = "1" * 333 + "/" + "1" * 665 + "x"


def client(engine: FakeEngine | None = None, *, delay: float = 0.0, **settings: Any) -> TestClient:
    app = create_app(
        Settings(**settings), engine or FakeEngine(), RewardSet(fake_rewards(delay=delay))
    )
    return TestClient(app)


def state_of(c: TestClient) -> Any:
    return c.app.app.state.winnow  # BodyLimit wraps the FastAPI app


def metric(c: TestClient, line: str) -> float | None:
    for row in c.get("/metrics").text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return None


def error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


# ---- 4: /v1/rewards is admitted, drained and counted like the other endpoints -----------------


def test_rewards_get_429_when_admission_is_full_and_are_counted():
    with client(delay=0.5, max_running_requests=1, max_queued_requests=0) as c:
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: c.post("/v1/rewards", json=OUTCOME), range(3)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert error(refused, 429)["code"] == "overloaded"
        state = state_of(c)
        assert state.admission.running == 0 and state.admission.queued == 0
        labels = 'endpoint="rewards",status="{}",strategy="rewards"'
        ok, shed = codes.count(200), codes.count(429)
        assert metric(c, f"winnow_requests_total{{{labels.format(200)}}}") == ok
        assert metric(c, f"winnow_requests_total{{{labels.format(429)}}}") == shed
        assert metric(c, 'winnow_requests_in_flight{strategy="rewards"}') == 0
        assert metric(c, 'winnow_request_latency_seconds_count{strategy="rewards"}') == ok
        # refused before admission, still counted: a bad reward name, a validation error
        c.post("/v1/rewards", json={**OUTCOME, "reward": "nope"})
        c.post("/v1/rewards", json={**OUTCOME, "reward": ""})
        assert metric(c, f"winnow_requests_total{{{labels.format(400)}}}") == 2


def test_rewards_hold_a_running_place_while_they_score():
    with (
        client(delay=0.5, max_running_requests=1, max_queued_requests=0) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        scoring = pool.submit(c.post, "/v1/rewards", json=OUTCOME)
        deadline = time.monotonic() + 10
        while state_of(c).admission.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        # a completion finds no place while the reward request scores
        r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 429, r.text
        assert scoring.result().status_code == 200


def test_draining_refuses_rewards():
    with client() as c:
        assert c.post("/v1/rewards", json=OUTCOME).status_code == 200
        state_of(c).drain.begin()
        r = c.post("/v1/rewards", json=OUTCOME)
        assert error(r, 503)["code"] == "shutting_down"
        labels = 'endpoint="rewards",status="503",strategy="rewards"'
        assert metric(c, f"winnow_requests_total{{{labels}}}") == 1


def test_reward_items_are_bounded_by_the_sequence_cap():
    with client(max_request_sequences=4) as c:
        body = {"reward": "default", "items": [{"prompt": "p", "response": "r"}] * 5}
        e = error(c.post("/v1/rewards", json=body))
        assert e["param"] == "items" and e["code"] == "too_many_sequences"
        assert "--max-request-sequences" in e["message"] and "4" in e["message"]
        body["items"] = body["items"][:4]
        assert c.post("/v1/rewards", json=body).status_code == 200


def test_completion_sequences_are_bounded_per_request():
    with client() as c:  # default cap 256: 64 prompts x 8 is 512
        e = error(c.post("/v1/completions", json={"prompt": ["x"] * 64, "n": 8}))
        assert e["param"] == "prompt" and e["code"] == "too_many_sequences"
        assert "256" in e["message"] and "--max-request-sequences" in e["message"]
        strategy = {"name": "best_of_n", "n": 64}
        e = error(c.post("/v1/completions", json={"prompt": ["x"] * 5, "strategy": strategy}))
        assert e["param"] == "prompt"
        r = c.post("/v1/completions", json={"prompt": ["x"] * 32, "n": 8, "max_tokens": 2})
        assert r.status_code == 200, r.text
    with client(max_request_sequences=8) as c:
        assert error(c.post("/v1/completions", json={"prompt": "x", "n": 9}))["param"] == "n"
        strategy = {"name": "best_of_n", "n": 16}
        e = error(c.post("/v1/completions", json={"prompt": "x", "strategy": strategy}))
        assert e["param"] == "strategy.n"


def test_prompt_text_is_bounded_before_any_templating():
    engine = CountingEngine()
    with client(engine, max_prompt_chars=1000) as c:
        e = error(c.post("/v1/completions", json={"prompt": "x" * 1001}))
        assert e["param"] == "prompt" and e["code"] == "prompt_too_long"
        e = error(c.post("/v1/completions", json={"prompt": ["x" * 600, "y" * 600]}))
        assert e["param"] == "prompt"
        many = [{"role": "user", "content": "x"}] * 31  # each counts 1 + 32
        e = error(c.post("/v1/chat/completions", json={"messages": many}))
        assert e["param"] == "messages" and "--max-prompt-chars" in e["message"]
        items = [{"messages": many[:16], "response": "r"}, {"messages": many[:15], "response": "r"}]
        e = error(c.post("/v1/rewards", json={"reward": "default", "items": items}))
        assert e["param"] == "items"
        assert engine.text_calls == 0  # refused before any tokenizing or templating
        r = c.post("/v1/chat/completions", json={"messages": many[:30], "max_tokens": 2})
        assert r.status_code == 200, r.text


class CountingEngine(FakeEngine):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text_calls = 0

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.text_calls += 1
        return await super().tokenize(text, add_special_tokens)

    async def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> str:
        self.text_calls += 1
        return await super().apply_chat_template(messages, add_generation_prompt)


# ---- 4: templating and tokenizing run off the event loop -------------------------------------


class SlowTextEngine(FakeEngine):
    """Text calls that are synchronous CPU work inside ``async def``, as the local vLLM
    engine's are (its tokenizer and Jinja template), and slow."""

    blocking_text_ops = True
    pause = 0.8

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        time.sleep(self.pause)
        return await super().tokenize(text, add_special_tokens)

    async def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> str:
        time.sleep(self.pause)
        return await super().apply_chat_template(messages, add_generation_prompt)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2}),
        ("/v1/rewards", {"reward": "default", "items": [{"messages": MESSAGES, "response": "4"}]}),
    ],
)
def test_templating_and_tokenizing_do_not_stall_the_loop(path, body):
    app = create_app(Settings(), SlowTextEngine(), RewardSet(fake_rewards()))
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        with HealthPolls(server.base_url) as during:
            started = time.perf_counter()
            r = http.post(path, json=body)
            assert r.status_code == 200, r.text
            assert time.perf_counter() - started >= SlowTextEngine.pause  # it did the slow work
        during.assert_responsive(within=0.5)  # on the loop, /health waited 0.8 s


def test_a_text_call_that_suspends_is_not_driven_off_the_loop():
    async def suspends() -> str:
        import asyncio

        await asyncio.sleep(0)
        return "x"

    with pytest.raises(RuntimeError, match="suspended"):
        offload._drive(suspends)
    assert offload._drive(lambda: FakeEngine().detokenize([104, 105])) == "hi"
    from winnow.engine.vllm_local import VllmEngine

    assert offload.blocks(VllmEngine.__new__(VllmEngine))
    assert not offload.blocks(FakeEngine())


# ---- 1b: the strategy's reference is read after admission, in a worker process --------------


def test_the_reference_is_never_read_in_the_server_process(monkeypatch):
    def in_process(reference: str) -> str | None:
        raise AssertionError("reference_problem ran in the server process")

    real = answers.reference_problem
    for name, module in list(sys.modules.items()):  # wherever it was imported by name, too
        if name.startswith("winnow") and getattr(module, "reference_problem", None) is real:
            monkeypatch.setattr(module, "reference_problem", in_process)
    hostile = {"name": "best_of_n", "n": 2, "reward": "verifier", "reference": "9^{9^{9}}"}
    with client() as c:
        r = c.post("/v1/chat/completions", json={"messages": MESSAGES, "strategy": hostile})
        e = error(r)
        assert e["param"] == "strategy.reference" and "exponent" in e["message"]
        fine = {**hostile, "reference": "4"}
        r = c.post("/v1/chat/completions", json={"messages": MESSAGES, "strategy": fine})
        assert r.status_code == 200, r.text


def test_the_reference_is_checked_after_admission():
    hostile = {"name": "best_of_n", "n": 2, "reference": "((10^{1000})^{1000})^{1000}"}
    body = {"messages": MESSAGES, "strategy": hostile, "max_tokens": 2}
    with client(max_running_requests=1, max_queued_requests=0) as c:
        assert error(c.post("/v1/chat/completions", json=body))["param"] == "strategy.reference"
        state_of(c).admission.running = 1  # every place taken: nothing is read, a 429
        try:
            assert error(c.post("/v1/chat/completions", json=body), 429)["code"] == "overloaded"
        finally:
            state_of(c).admission.running = 0
        assert state_of(c).admission.running == 0  # the refused request gave its place back
        for stream in (False, True):  # a plain 400 either way, before any stream begins
            r = c.post("/v1/chat/completions", json={**body, "stream": stream})
            assert error(r)["param"] == "strategy.reference"
        labels = 'endpoint="chat",status="400",strategy="best_of_n"'
        assert metric(c, f"winnow_requests_total{{{labels}}}") == 3


def test_a_slow_reference_does_not_stall_health():
    strategy = {"name": "best_of_n", "n": 2, "reward": "default", "reference": SLOW_REFERENCE}
    app = create_app(Settings(), FakeEngine(), RewardSet(fake_rewards()))
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        body = {"messages": MESSAGES, "max_tokens": 4, "strategy": strategy}
        with HealthPolls(server.base_url) as during:
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code in (200, 400), r.text
            if r.status_code == 400:
                assert r.json()["error"]["param"] == "strategy.reference"
        during.assert_responsive()


# ---- 5 and 6: caps, with the field that broke them --------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "stop": "s" * 257}, "stop"),
        ("/v1/completions", {"prompt": "x", "stop": ["a", "s" * 257]}, "stop"),
        (
            "/v1/completions",
            {"prompt": "x", "strategy": {"name": "tree_search", "delimiter": "d" * 65}},
            "strategy.delimiter",
        ),
        (
            "/v1/chat/completions",
            {"messages": MESSAGES, "strategy": {"name": "best_of_n", "reference": "1" * 4097}},
            "strategy.reference",
        ),
        (
            "/v1/rewards",
            {
                "reward": "verifier",
                "items": [{"prompt": "p", "response": "1", "reference": "1" * 4097}],
            },
            "items.0.reference",
        ),
    ],
)
def test_text_fields_are_capped(path, body, param):
    with client() as c:
        e = error(c.post(path, json=body))
        assert e["param"] == param, e
        assert "at most" in e["message"]


@pytest.mark.parametrize("strategy", ["best_of_n", "best_of_majority", "adaptive", "cards",
                                      "speculative_rejection", "tree_search"])  # fmt: skip
def test_every_strategy_with_a_reference_caps_it(strategy):
    from winnow import strategies

    fields = strategies.get(strategy).params.model_json_schema()["properties"]
    lengths = [
        v.get("maxLength") for v in fields["reference"]["anyOf"] if v.get("type") == "string"
    ]
    assert lengths == [4096]


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"messages": MESSAGES, "add_generation_prompt": 0}, "add_generation_prompt"),
        (CHAT, {"messages": MESSAGES, "logprobs": "true"}, "logprobs"),
        (COMPLETIONS, {"prompt": "x", "stream": 1}, "stream"),
        (COMPLETIONS, {"prompt": "x", "echo": "yes"}, "echo"),
        (COMPLETIONS, {"prompt": "x", "ignore_eos": 0}, "ignore_eos"),
        (COMPLETIONS, {"prompt": [[False]]}, "prompt.0.0"),
        (COMPLETIONS, {"prompt": [True, 5]}, "prompt.0"),
        (COMPLETIONS, {"prompt": "x", "stop_token_ids": [True]}, "stop_token_ids.0"),
        (
            COMPLETIONS,
            {"prompt": "x", "strategy": {"name": "best_of_n", "return_candidates": 1}},
            "strategy.return_candidates",
        ),
        (COMPLETIONS, {"prompt": "x", "strategy": {"name": "best_of_n", "n": "4"}}, "strategy.n"),
        (
            "/v1/rewards",
            {"reward": "default", "items": [{"prompt": "p", "response": "r", "partial": 1}]},
            "items.0.partial",
        ),
    ],
)
def test_booleans_and_token_ids_are_strict(path, body, param):
    with client() as c:
        assert error(c.post(path, json=body))["param"] == param


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": ["x", ""]}, "prompt"),
        ("/v1/completions", {"prompt": [[1], []]}, "prompt"),
        ("/v1/rewards", {"reward": "", "items": [{"prompt": "p", "response": "r"}]}, "reward"),
        ("/v1/rewards", {"reward": {}, "items": [{"prompt": "p", "response": "r"}]}, "reward"),
    ],
)
def test_what_may_not_be_empty_is_refused_by_the_schema(path, body, param):
    with client() as c:
        e = error(c.post(path, json=body))
        assert e["param"] == param and e["code"] == "invalid_value"


def test_the_schema_says_what_the_server_refuses():
    with client() as c:
        doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def variants(model: str, field: str) -> list[dict[str, Any]]:
        prop = schemas[model]["properties"][field]
        return prop.get("anyOf", [prop])

    prompt = variants("CompletionRequest", "prompt")
    assert {"type": "string", "minLength": 1} in prompt
    token_lists = [v for v in prompt if v.get("items", {}).get("type") == "integer"]
    assert token_lists and all(v["minItems"] == 1 for v in token_lists)
    reward = variants("RewardRequest", "reward")
    assert {"type": "string", "minLength": 1} in reward
    assert any(v.get("type") == "object" and v.get("minProperties") == 1 for v in reward)
    stop = variants("CompletionRequest", "stop")
    assert {"type": "string", "minLength": 1, "maxLength": 256} in stop
    tools = variants("ChatCompletionRequest", "tools")
    assert any(v.get("type") == "array" and v.get("maxItems") == 0 for v in tools)
    assert schemas["ChatCompletionRequest"]["properties"]["add_generation_prompt"]["type"] == (
        "boolean"
    )
    reference = variants("RewardItemIn", "reference")
    assert any(v.get("maxLength") == 4096 for v in reference)
    tree = next(
        v
        for v in schemas["CompletionRequest"]["properties"]["strategy"]["anyOf"]
        if v.get("title") == "strategy tree_search"
    )
    assert tree["properties"]["delimiter"]["maxLength"] == 64


def test_what_the_schema_allows_is_accepted():
    with client() as c:
        body = {"messages": MESSAGES, "tools": [], "logit_bias": {}, "max_tokens": 2}
        assert c.post("/v1/chat/completions", json=body).status_code == 200
        e = error(c.post("/v1/chat/completions", json={**body, "tools": [{"type": "function"}]}))
        assert e["param"] == "tools"
        r = c.post("/v1/completions", json={"prompt": "x", "suffix": "", "best_of": 1})
        assert r.status_code == 200, r.text


# ---- 5: the API key, and URLs with credentials ------------------------------------------------


@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_an_empty_api_key_is_refused_at_start_up(key, monkeypatch):
    with pytest.raises(ValidationError, match="API key is empty"):
        Settings(api_key=key)
    monkeypatch.setenv("WINNOW_API_KEY", key)
    with pytest.raises(ValidationError, match="API key is empty"):
        Settings()


def test_a_key_with_spaces_around_it_is_refused_without_printing_it():
    with pytest.raises(ValidationError) as refused:
        Settings(api_key=" s3cret-key ")
    assert "whitespace" in str(refused.value)
    assert "s3cret-key" not in str(refused.value)


def test_winnow_serve_says_why_an_empty_key_is_refused(monkeypatch, capsys):
    from winnow.cli import main
    from winnow.server import run

    def never(settings: Settings) -> None:
        raise AssertionError("winnow serve started with an empty API key")

    monkeypatch.setattr(run, "serve", never)  # a regression fails here, starting nothing
    monkeypatch.setenv("WINNOW_API_KEY", "")
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid settings: api_key: the API key is empty" in err


def test_a_bare_bearer_never_passes():
    with client(api_key="k") as c:
        for header in ("Bearer", "Bearer ", "Bearer  ", "bearer"):
            r = c.post("/v1/completions", json={"prompt": "x"}, headers={"Authorization": header})
            assert r.status_code == 401


SECRET_URL = "http://admin:hunter2@vllm.internal:8000/v1?token=abc123#frag"


def test_urls_lose_credentials_and_queries():
    assert redact_url(SECRET_URL) == "http://***@vllm.internal:8000/v1?***"
    assert redact_url("https://host:1/path") == "https://host:1/path"
    assert redact_url("http://a@b@host/x#f") == "http://***@host/x#***"
    text = f"no remote vLLM is healthy: {SECRET_URL}: ConnectError('{SECRET_URL}'); http://h/ ok"
    redacted = redact_urls(text)
    assert "hunter2" not in redacted and "abc123" not in redacted and "admin" not in redacted
    assert "vllm.internal:8000" in redacted and "http://h/ ok" in redacted
    assert redact_urls("nothing here") == "nothing here"


class LeakyEngine(FakeEngine):
    async def check_health(self) -> None:
        raise EngineUnavailable(f"no remote vLLM is healthy: {SECRET_URL}: HTTP 500")


def test_health_and_errors_redact_remote_urls():
    with client(LeakyEngine()) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert "hunter2" not in r.text and "abc123" not in r.text
        assert "vllm.internal:8000" in r.text
        r = c.post("/v1/completions", json={"prompt": "x"})  # the engine is suspect now
        assert r.status_code == 503
        assert "hunter2" not in r.text and "abc123" not in r.text


def test_logs_redact_remote_urls():
    logger = logging.getLogger("winnow.test_redaction")
    logger.propagate = False
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        redact_log_records(logger)
        redact_log_records(logger)  # once
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.warning("remote at %s failed", SECRET_URL)
        try:
            raise EngineUnavailable(f"lost the connection to {SECRET_URL}")
        except EngineUnavailable:
            logger.exception("engine error")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "hunter2" not in text and "abc123" not in text
    assert text.count("vllm.internal:8000") == 2
