"""The alert rules in deploy/prometheus: promtool checks them and runs their unit tests
(llmux-alerts.test.yml); the cases must cover every alert, both ways; and broken rules
must make those unit tests fail.

promtool comes with Debian's ``prometheus`` package. Without it these cases skip, unless
LLMUX_TEST_REQUIRE_PROMETHEUS=1 (CI sets it) makes that a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "llmux-alerts.yml"
UNIT_TESTS = DEPLOY / "llmux-alerts.test.yml"
EXPECTED = {
    "LlmuxTtftP99High",
    "LlmuxGatewayOverheadP99High",
    "LlmuxErrorRateHigh",
    "LlmuxQueueSaturated",
    "LlmuxBreakerOpen",
    "LlmuxAuditBacklog",
}


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def unit_cases() -> list[dict[str, Any]]:
    return list(yaml.safe_load(UNIT_TESTS.read_text())["tests"])


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    exe = require_binary("promtool")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_rules_are_the_documented_six() -> None:
    assert set(alerts()) == EXPECTED


def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    rules = promtool("check", "rules", RULES.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"{len(EXPECTED)} rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_pass() -> None:
    run = promtool("test", "rules", UNIT_TESTS.name)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_firing_case_a_quiet_case_and_a_pending_check() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    pending: set[str] = set()  # quiet first, firing later in one case: `for:` is honoured
    for case in unit_cases():
        checks = sorted(case.get("alert_rule_test", []), key=lambda c: duration_s(c["eval_time"]))
        seen_quiet: set[str] = set()
        for check in checks:
            name = check["alertname"]
            assert name in EXPECTED, f"{case['name']!r} tests an alert that does not exist: {name}"
            if check.get("exp_alerts"):
                firing.add(name)
                if name in seen_quiet:
                    pending.add(name)
            else:
                quiet.add(name)
                seen_quiet.add(name)
    assert EXPECTED - firing == set(), "alerts without a case where they fire"
    assert EXPECTED - quiet == set(), "alerts without a case where they stay quiet"
    with_for = {name for name, rule in alerts().items() if rule.get("for")}
    assert with_for - pending == set(), "alerts whose `for:` no case checks (quiet, then firing)"


def test_every_case_that_fires_expects_the_rules_labels() -> None:
    rules = alerts()
    for case in unit_cases():
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                want = rules[check["alertname"]]["labels"]
                assert want.items() <= alert["exp_labels"].items(), case["name"]


def test_the_thresholds_are_the_briefs() -> None:
    rules = alerts()
    for name, metric in [
        ("LlmuxTtftP99High", "llmux_time_to_first_token_seconds_bucket"),
        ("LlmuxGatewayOverheadP99High", "llmux_gateway_overhead_seconds_bucket"),
    ]:
        expr = " ".join(rules[name]["expr"].split())
        assert expr.startswith(f"histogram_quantile(0.99, sum by (le) (rate({metric}[5m])))")
        assert expr.endswith("> 0.8")
        assert rules[name]["for"] == "5m"
        assert "request_duration" not in expr  # a long answer's duration always exceeds 0.8 s
    error = " ".join(rules["LlmuxErrorRateHigh"]["expr"].split())
    assert '{status=~"5.."}' in error and "> 0.05" in error
    assert "and sum(rate(llmux_requests_total[5m])) >= 0.1" in error  # the volume guard


MUTATIONS = [  # each breaks a rule in a way one unit case must catch
    ("> 0.05", "> 0.01", "error rate threshold 1 %"),
    ('status=~"5.."', 'status=~"[45].."', "4xx counted as errors"),
    ("and sum(rate(llmux_requests_total[5m])) >= 0.1", "", "no volume guard"),
    ("bucket[5m]))) > 0.8", "bucket[5m]))) > 1", "P99 thresholds 1 s"),
    ("for: 5m", "for: 0m", "P99 without for"),
    (
        "avg_over_time(llmux_engine_queue_depth[5m])",
        "llmux_engine_queue_depth",
        "queue not averaged",
    ),
    (
        "min_over_time(llmux_upstream_breaker_state[1m]) > 0\n          and ",
        "",
        "breaker: any opening",
    ),
    ("llmux_audit_backlog > 10000", "llmux_audit_backlog > 1000", "audit threshold"),
    ("for: 10m", "for: 5m", "audit for"),
]


@pytest.mark.parametrize(("old", "new", "what"), MUTATIONS, ids=[m[2] for m in MUTATIONS])
def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path, old: str, new: str, what: str) -> None:
    text = RULES.read_text()
    assert old in text, f"mutation {what!r} no longer applies: update MUTATIONS"
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    run = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert run.returncode != 0, f"no unit case notices: {what}"


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
        total += float(number) * units[unit]
    return total
