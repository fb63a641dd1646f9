"""Prometheus metrics, on a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from winnow.protocol.responses import Usage

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "winnow_requests",
            "Requests finished, by endpoint, strategy and HTTP status.",
            ["endpoint", "strategy", "status"],
            registry=r,
        )
        self.in_flight = Gauge(
            "winnow_requests_in_flight",
            "Requests being served, by strategy.",
            ["strategy"],
            registry=r,
        )
        self.latency = Histogram(
            "winnow_request_latency_seconds",
            "End-to-end latency of successful requests.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "winnow_time_to_first_token_seconds",
            "Time to the first streamed chunk.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "winnow_tokens",
            "Tokens by kind: prompt, completion (returned), generated (all), discarded, "
            "prefilled (prompt tokens over all engine calls), cached (of those, from the prefix "
            "cache).",
            ["strategy", "kind"],
            registry=r,
        )
        self.engine_calls = Counter(
            "winnow_engine_calls", "Engine calls made by strategies.", ["strategy"], registry=r
        )
        self.reward_calls = Counter(
            "winnow_reward_calls", "Reward calls made by strategies.", ["strategy"], registry=r
        )
        self.queued = Gauge(
            "winnow_requests_queued", "Requests waiting for a running slot.", registry=r
        )
        self.engine_running = Gauge(
            "winnow_engine_running_requests", "Engine requests in flight right now.", registry=r
        )
        self.reward_batch_size = Histogram(
            "winnow_reward_batch_size",
            "Items per reward forward pass.",
            ["reward"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.reward_batch_callers = Histogram(
            "winnow_reward_batch_calls_merged",
            "Score calls merged into one forward pass.",
            ["reward"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.reward_queue_wait = Histogram(
            "winnow_reward_queue_wait_seconds",
            "Wait of the oldest call before its pass ran.",
            ["reward"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.reward_passes = Counter(
            "winnow_reward_passes", "Reward forward passes.", ["reward"], registry=r
        )
        self.reward_tokens = Counter(
            "winnow_reward_tokens", "Tokens processed by reward models.", ["reward"], registry=r
        )
        self.reward_cached_tokens = Counter(
            "winnow_reward_cached_tokens",
            "Tokens reward models reused from their prefix caches instead of computing.",
            ["reward"],
            registry=r,
        )
        self.engine_healthy = Gauge(
            "winnow_engine_healthy", "1 if the engine answered its last health check.", registry=r
        )

    def observe_batch(
        self, reward: str, jobs: int, callers: int, wait: float, tokens: int, cached: int = 0
    ) -> None:
        """Called by the reward batcher after each forward pass."""
        self.reward_batch_size.labels(reward).observe(jobs)
        self.reward_batch_callers.labels(reward).observe(callers)
        self.reward_queue_wait.labels(reward).observe(wait)
        self.reward_passes.labels(reward).inc()
        self.reward_tokens.labels(reward).inc(tokens)
        self.reward_cached_tokens.labels(reward).inc(cached)

    def count_usage(self, strategy: str, usage: Usage | None) -> None:
        """Add what one request cost (its response's usage) to the token and call counters."""
        if usage is None or usage.winnow is None:
            return
        w = usage.winnow
        self.tokens.labels(strategy, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(strategy, "completion").inc(usage.completion_tokens)
        self.tokens.labels(strategy, "generated").inc(w.generated_tokens)
        self.tokens.labels(strategy, "discarded").inc(w.discarded_tokens)
        self.tokens.labels(strategy, "cached").inc(w.cached_tokens)
        self.tokens.labels(strategy, "prefilled").inc(w.prefilled_tokens)
        self.engine_calls.labels(strategy).inc(w.engine_calls)
        self.reward_calls.labels(strategy).inc(w.reward_calls)
