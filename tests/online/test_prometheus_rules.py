"""online/monitoring/recsys_rules.yml: valid for Prometheus (`promtool check rules`), every
alert proven by `promtool test rules` (tests/online/prometheus/recsys_rules_test.yml) to
fire on a faulty series and stay silent on a healthy one, and every metric and label it
reads exported by the service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from online.monitoring import RULES_FILE
from tests.online.promql_names import problems

UNIT_TESTS = Path(__file__).parent / "prometheus" / "recsys_rules_test.yml"
NO_PROMTOOL = ("promtool not installed: `make monitoring-tools` (Debian package prometheus) "
               "or put Prometheus' promtool on PATH")  # fmt: skip


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def test_every_metric_and_label_in_the_rules_is_exported() -> None:
    found = {r.get("alert") or r["record"]: problems(r["expr"], recorded()) for r in rules()}
    assert {name: p for name, p in found.items() if p} == {}
    assert len(found) == 14


def test_the_name_check_catches_a_renamed_metric_or_label() -> None:
    assert problems('rate(recsys_served{served_by="rerank"}[5m])') == ["unknown metric 'recsys_served'"]
    assert problems('sum by (endpoint) (rate(recsys_served_total{path!="rerank"}[5m]))') == [
        "recsys_served_total: unknown label(s) ['path'], it has ['endpoint', 'served_by']"
    ]
    assert problems("recsys:fallback_ratio:rate5m > 0.2") == [
        "unknown metric 'recsys:fallback_ratio:rate5m'"]
    assert problems("recsys:fallback_ratio:rate5m > 0.2", {"recsys:fallback_ratio:rate5m"}) == []


def test_every_alert_has_a_severity_a_summary_and_a_firing_and_a_silent_case() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == {
        "RecsysLatencyBudgetFastBurn", "RecsysLatencyBudgetSlowBurn",
        "RecsysLatencyBudgetExhausting", "RecsysHighFallbackRate", "RecsysBundleStale",
        "RecsysBundleReloadRefused", "RecsysFeatureSkew", "RecsysLogRecordsDropped",
    }  # fmt: skip
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"], name
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]  # fmt: skip
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert firing == set(alerts) and silent == set(alerts)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip(NO_PROMTOOL)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", str(RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout


def test_promtool_unit_tests_fire_on_faults_and_stay_silent_when_healthy() -> None:
    done = _promtool("test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout

