"""dashboards/winnow.json queries only what winnow exports: every PromQL expression is tokenized
and checked (balanced brackets, known functions, label matchers and `by` labels the metric has,
rate() over counters and histogram series only), and every metric it names is in GET /metrics
on a running (fake-engine) server, histogram _bucket/_sum/_count and counter _total included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from winnow.server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "winnow.json"
FUNCTIONS = {"rate", "increase", "histogram_quantile", "sum", "avg", "max", "min", "count",
             "topk", "clamp_min"}  # fmt: skip
KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "bool"}
TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<duration>\[(?:\$__rate_interval|\$__interval|\d+[smhdw])\])
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}])
    )""",
    re.VERBOSE,
)


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(expr.rstrip()):
        m = TOKEN.match(expr, at)
        assert m and m.end() > at, f"cannot parse {expr[at:]!r} in {expr!r}"
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        at = m.end()
    return tokens


def exported(text: str) -> dict[str, str]:
    """Series names /metrics can carry -> the family's type (from its # TYPE lines)."""
    names = {}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if kind == "counter":  # TYPE names the series (..._total), or the family before it
            names[family if family.endswith("_total") else family + "_total"] = kind
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family + suffix] = kind
        else:
            names[family] = kind
    return names


def labels_of() -> dict[str, set[str]]:
    """Each winnow series' label names, from the metric objects themselves."""
    out: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        name = getattr(metric, "_name", None)
        if name is None:
            continue
        labels = set(metric._labelnames)
        kind = metric._type
        if kind == "counter":
            out[name + "_total"] = labels
        elif kind == "histogram":
            out[name + "_bucket"] = labels | {"le"}
            out[name + "_sum"] = out[name + "_count"] = labels
        else:
            out[name] = labels
    return out


def check(expr: str, series: dict[str, str], labels: dict[str, set[str]]) -> set[str]:
    """Check one expression; returns the metrics it selects."""
    tokens = tokenize(expr)
    depth = {"(": 0, "{": 0}
    closing = {")": "(", "}": "{"}
    selected: set[str] = set()
    grouping: list[str] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "op" and value in depth:
            depth[value] += 1
        elif kind == "op" and value in closing:
            depth[closing[value]] -= 1
            assert depth[closing[value]] >= 0, f"unbalanced {value!r} in {expr!r}"
        elif kind == "ident" and value in ("by", "without"):
            assert nxt == "(", f"{value} without a label list in {expr!r}"
            j = i + 2
            while tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    grouping.append(tokens[j][1])
                j += 1
            i = j + 1
            continue
        elif kind == "ident" and nxt in ("(", "by", "without"):  # sum by (x) (...)
            assert value in FUNCTIONS, f"unknown function {value!r} in {expr!r}"
        elif kind == "ident" and value not in KEYWORDS:
            assert value in series, f"{value!r} is not in /metrics ({expr!r})"
            selected.add(value)
            j = i + 1
            if nxt == "{":  # label matchers: name op "value", ...
                j += 1
                while tokens[j][1] != "}":
                    name, op, literal = tokens[j], tokens[j + 1], tokens[j + 2]
                    assert name[0] == "ident" and op[1] in ("=", "!=", "=~", "!~"), expr
                    assert literal[0] == "string", expr
                    assert name[1] in labels[value], f"{value} has no label {name[1]!r}"
                    j += 3
                    if tokens[j][1] == ",":
                        j += 1
                j += 1
            if j < len(tokens) and tokens[j][0] == "duration":
                assert series[value] in ("counter", "histogram"), f"rate() over gauge {value}"
                j += 1
            else:
                assert series[value] == "gauge", (
                    f"{value} is a {series[value]}: query it with rate() ({expr!r})"
                )
            i = j
            continue
        i += 1
    assert depth == {"(": 0, "{": 0}, f"unbalanced brackets in {expr!r}"
    available = set().union(*(labels[s] for s in selected)) if selected else set()
    for label in grouping:
        assert label in available, f"by ({label}) over metrics without it in {expr!r}"
    return selected


def test_every_dashboard_query_names_metrics_winnow_exports(fake_server):
    dashboard = json.loads(DASHBOARD.read_text())
    text = httpx.get(fake_server.base_url.removesuffix("/v1") + "/metrics").text
    series = exported(text)
    labels = labels_of()
    assert set(labels) <= set(series)  # the metric objects and /metrics agree
    exprs = expressions(dashboard)
    assert len(exprs) >= 15
    used = set().union(*(check(e, series, labels) for e in exprs))
    # the dashboard covers what the issue asks for
    for needed in (
        "winnow_requests_total",
        "winnow_request_latency_seconds_bucket",
        "winnow_tokens_total",
        "winnow_engine_calls_total",
        "winnow_reward_calls_total",
        "winnow_requests_queued",
        "winnow_engine_running_requests",
        "winnow_reward_batch_size_bucket",
        "winnow_reward_cached_tokens_total",
    ):
        assert needed in used, needed
    for var in dashboard["templating"]["list"]:  # Grafana's label_values(metric, label)
        if var["type"] == "query":
            metric, label = re.fullmatch(
                r"label_values\((\w+), (\w+)\)", var["definition"]
            ).groups()
            assert metric in series and label in labels[metric], var["definition"]
    kinds = {m for e in exprs for m in re.findall(r'kind="(\w+)"', e)}
    assert kinds == {"completion", "discarded", "generated", "cached", "prefilled"}
    assert all(
        p["datasource"]["uid"] == "${datasource}" for p in panels(dashboard) if "targets" in p
    )


@pytest.mark.parametrize(
    "expr",
    [
        "rate(winnow_nonexistent_total[5m])",
        "sum by (reward) (rate(winnow_requests_total[5m]))",
        "winnow_requests_total",
        'rate(winnow_tokens_total{flavour="x"}[5m])',
        "sum(rate(winnow_tokens_total[5m])",
        "frobnicate(winnow_requests_queued)",
    ],
)
def test_the_check_catches_bad_queries(expr):
    series = {"winnow_requests_total": "counter", "winnow_tokens_total": "counter",
              "winnow_requests_queued": "gauge"}  # fmt: skip
    with pytest.raises(AssertionError):
        check(expr, series, labels_of())
