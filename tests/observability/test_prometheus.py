"""The Grafana dashboard and the alert rules against real data: a real Prometheus
(Debian's package, started here) scrapes a real ``llmux serve`` every second under a
short mixed load (tests/support/prometheus.py), loads deploy/prometheus/llmux-alerts.yml,
and every panel's query and every alert expression must return data through
Prometheus's HTTP API. The numbers Prometheus holds must also be the load's.

An alert expression is a comparison (``X > 0.8``, ``A > 0.05 and B >= 0.1``): its
operands are what returns data whatever the load, so each operand that is not a number
is queried on its own (:func:`operands`); the whole expression must evaluate too.

Without ``prometheus`` the cases that need it skip, unless
LLMUX_TEST_REQUIRE_PROMETHEUS=1 (CI sets it) makes that a failure. The file's structure
checks need nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests.conftest import MODEL, Server
from tests.support.prometheus import (
    ALERTS,
    DEPLOY,
    Load,
    Prometheus,
    concrete,
    dashboard,
    finite,
    panels,
    require_binary,
    start_llmux,
)

PROVISIONING = DEPLOY / "grafana" / "provisioning"


# ------------------------------------------------------------- the files themselves


def test_the_dashboard_is_grafana_json_with_its_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["includeAll"] and model["allValue"] == ".*"
    assert model["datasource"]["uid"] == "${datasource}"
    assert "label_values(llmux_requests_total, model)" in model["definition"]


def test_every_panel_reads_the_datasource_variable_and_fits_the_grid() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip(), panel["title"]


def test_the_dashboard_has_the_briefs_panels() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for wanted in [
        "success rate",
        "request duration p50 / p99",
        "time to first token p50 / p99",
        "gateway overhead",
        "tokens per second",
        "batch utilisation",
        "queue depth",
        "prefix cache",
        "response cache hit ratio",
        "breaker states",
        "refusals",
        "spend",
        "audit backlog",
        "usage queue",
    ]:
        assert wanted in titles, f"no panel for {wanted!r}"


def test_the_provisioning_files_point_at_prometheus_and_the_dashboard_folder() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "llmux.yml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    boards = yaml.safe_load((PROVISIONING / "dashboards" / "llmux.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# ------------------------------------------------------------- alert expression probes

COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
SET_OPERATOR = re.compile(r"(and|or|unless)\b")
MODIFIER = re.compile(r"\s*(bool\b|(on|ignoring|group_left|group_right)\s*(\([^)]*\))?)")
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?", re.IGNORECASE)


def operands(expr: str) -> list[str]:
    """The operands of ``expr``'s top-level comparisons and set operators (``>``, ``==``,
    ``and``, ...) that are not number literals: what must return data for the
    expression to mean anything. Brackets, braces and quoted strings are skipped."""
    pieces: list[str] = []
    depth, start, i, quote = 0, 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote and expr[i - 1] != "\\" else quote
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            op = COMPARISON.match(expr, i)
            word = SET_OPERATOR.match(expr, i) if expr[i - 1 : i] in ("", " ", "\n", ")") else None
            found = op or word
            if found:
                pieces.append(expr[start:i])
                i = found.end()
                while (mod := MODIFIER.match(expr, i)) and mod.group(1):
                    i = mod.end()
                start = i
                continue
        i += 1
    pieces.append(expr[start:])
    return [p.strip() for p in pieces if p.strip() and not NUMBER.fullmatch(p.strip())]


def test_operands_split_only_the_top_level() -> None:
    assert operands('histogram_quantile(0.99, sum by (le) (rate(x{a=~"b|c"}[5m]))) > 0.8') == [
        'histogram_quantile(0.99, sum by (le) (rate(x{a=~"b|c"}[5m])))'
    ]
    assert operands("(a or vector(0)) / b > 0.05\n  and sum(b) >= 0.1") == [
        "(a or vector(0)) / b",
        "sum(b)",
    ]
    assert operands('min_over_time(s{x!="y"}[1m]) > 0 and on (u) max(s) == bool 2') == [
        'min_over_time(s{x!="y"}[1m])',
        "max(s)",
    ]
    assert operands("avg_over_time(q[5m]) > slots") == ["avg_over_time(q[5m])", "slots"]


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


# ----------------------------------------------------------------- the real scrape


@dataclass
class Scrape:
    prometheus: Prometheus
    server: Server
    load: Load

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in self.load.statuses.items():
            status = key.rsplit(" ", 1)[1]
            out[status] = out.get(status, 0) + n
        return out


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    binary = require_binary("prometheus")
    server = start_llmux(tmp_path_factory.mktemp("llmux-scraped"))
    prometheus: Prometheus | None = None
    try:
        prometheus = Prometheus.start(
            tmp_path_factory.mktemp("prometheus"),
            server.url.removeprefix("http://"),
            rule_files=(ALERTS,),
            binary=binary,
        )
        prometheus.wait_for('up{job="llmux"} == 1')
        load = Load(server.url)
        load.run(rounds=3)
        done = time.time()
        prometheus.wait_for(f'timestamp(up{{job="llmux"}}) > {done + 1}')  # two scrapes after
        yield Scrape(prometheus, server, load)
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


@pytest.mark.model
def test_the_load_was_mixed(scrape: Scrape) -> None:
    got = scrape.load.statuses
    for what in ["ollama stream", "ollama chat", "openai stream", "openai embeddings",
                 "upstream ollama", "upstream openai"]:  # fmt: skip
        assert got.get(f"{what} 200"), (what, got)
    assert got.get("unknown model 404") and got.get("bad body 400"), got
    assert got.get("rate limited 429") and got.get("moderated 400"), got
    assert got.get("dead upstream 502"), got


@pytest.mark.model
def test_prometheus_counts_what_the_load_got(scrape: Scrape) -> None:
    """Every request the load made is in the scrape, by status: nothing lost or doubled.
    Calls through the upstream "self" reach llmux a second time, as local requests (200);
    a body that does not parse may never become a model operation (400 either way)."""
    got = scrape.load.statuses
    want = scrape.statuses()
    want["200"] += sum(got.get(f"{w} 200", 0) for w in ("upstream ollama", "upstream openai"))
    want["200"] += got.get("rate limited 200", 0)
    lowest_400 = want.pop("400") - got["bad body 400"]
    deadline = time.monotonic() + 10
    while True:
        rows = scrape.prometheus.query("sum by (status) (llmux_requests_total)")
        seen = {r["metric"]["status"]: round(float(r["value"][1])) for r in rows}
        bad = seen.pop("400", 0)
        if seen == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == want
    assert lowest_400 <= bad <= lowest_400 + got["bad body 400"]


@pytest.mark.model
def test_every_dashboard_panel_returns_data(scrape: Scrape) -> None:
    empty = []
    count = 0
    for panel in panels():
        for target in panel["targets"]:
            expr = concrete(target["expr"])
            result = scrape.prometheus.query(expr)
            count += 1
            if not any(finite(r) for r in result):
                empty.append(f"{panel['title']!r} [{target['refId']}]: {expr} -> {result}")
    assert count >= 30
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.model
def test_every_alert_expression_returns_data(scrape: Scrape) -> None:
    rules = alert_rules()
    assert len(rules) == 6
    empty = []
    for name, expr in rules.items():
        scrape.prometheus.query(expr)  # the whole expression evaluates (empty: not firing)
        probes = operands(expr)
        assert probes, name
        for probe in probes:
            result = scrape.prometheus.query(probe)
            if not any(finite(r) for r in result):
                empty.append(f"{name}: {' '.join(probe.split())} -> {result}")
    assert not empty, "alert operands without data:\n" + "\n".join(empty)


@pytest.mark.model
def test_prometheus_evaluates_every_rule_without_error(scrape: Scrape) -> None:
    deadline = time.monotonic() + 10
    while True:  # every rule evaluated once at least (never: year 1)
        groups = scrape.prometheus.api("rules")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(not r["lastEvaluation"].startswith("0001") for r in rules.values())
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(rules) == set(alert_rules())
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


@pytest.mark.model
def test_every_metric_named_in_deploy_is_scraped(scrape: Scrape) -> None:
    texts = [t["expr"] for p in panels() for t in p["targets"]] + list(alert_rules().values())
    names = sorted({n for text in texts for n in re.findall(r"\b(?:llmux|gen_ai)_\w+", text)})
    assert len(names) >= 20
    missing = [n for n in names if not scrape.prometheus.query(f'count({{__name__="{n}"}})')]
    assert not missing, f"named in deploy/ but not in llmux's /metrics: {missing}"


@pytest.mark.model
def test_the_model_variable_lists_the_served_model_and_other(scrape: Scrape) -> None:
    values = scrape.prometheus.api("label/model/values", **{"match[]": "llmux_requests_total"})
    assert MODEL in values
    assert "other" in values  # the unknown names, collapsed
    assert not [v for v in values if v.startswith("no-such-model")]


@pytest.mark.model
def test_the_scrape_saw_batching_a_breaker_open_and_the_refusals(scrape: Scrape) -> None:
    q = scrape.prometheus.query

    def value(expr: str) -> float:
        (row,) = q(expr)
        return float(row["value"][1])

    # six streams at once on four slots: most decode steps carried more than one sequence
    assert value("sum(llmux_engine_busy_slot_steps_total) / sum(llmux_engine_steps_total)") > 1
    assert value('max_over_time(llmux_upstream_breaker_state{upstream="dead"}[5m])') == 2
    assert value('max_over_time(llmux_upstream_breaker_state{upstream="self"}[5m])') == 0
    moderated = scrape.load.statuses["moderated 400"]
    assert value('sum(llmux_refusals_total{reason="content_filter"})') == moderated
    assert (
        value('sum(llmux_refusals_total{reason="rate_limit"})')
        == (scrape.load.statuses["rate limited 429"])
    )
    assert value('sum(llmux_cache_lookups_total{result="hit-l1"})') >= 1
    assert value("sum(llmux_spend_total)") > 0
