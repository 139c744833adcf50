"""online/monitoring/grafana_dashboard.json: valid against the dashboard model it uses
(tests/online/grafana_dashboard.schema.json, JSON Schema 2020-12), laid out on Grafana's
24-column grid without overlaps, covering every signal docs/monitoring.md describes, and
querying only metrics and labels the service exports (or the rules file records); each
query parses as PromQL (`promtool check rules` on a file made of them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from online.monitoring import DASHBOARD_FILE, RULES_FILE
from tests.online.promql_names import problems

SCHEMA = Path(__file__).parent / "grafana_dashboard.schema.json"
# Grafana's variables, replaced by what Grafana would put there before promtool parses.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h",
                     "$job": ".*"}  # fmt: skip


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def test_dashboard_matches_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(dashboard())]
    assert errors == []


def test_the_schema_refuses_a_misspelt_panel() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    broken = dashboard()
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    panel["target"] = panel.pop("targets")  # Grafana would show an empty panel
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("'target' was unexpected" in m for m in messages), messages


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]
    for p in panels:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(set(refs)) == len(refs), p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p.get("targets", []))


def test_every_query_uses_exported_metrics_and_labels() -> None:
    found = {f"{title}: {expr}": problems(expr, recorded()) for title, expr in queries()}
    assert {q: p for q, p in found.items() if p} == {}


def test_every_signal_has_a_panel() -> None:
    exprs = "\n".join(e for _, e in queries())
    for name in ("recsys_request_seconds_count", "recsys_request_seconds_bucket",
                 "recsys_served_total", "recsys:fallback_ratio:rate5m", "recsys_fallback_total",
                 "recsys_cache_requests_total", "recsys_bundle_reloads_total",
                 "recsys:slo_error_ratio:rate1h", "recsys_bundle_age_seconds",
                 "recsys_bundle_info", "recsys_feature_skew_psi",
                 "recsys_experiment_assigned_total", "recsys_log_dropped_total",
                 "recsys_errors_total"):  # fmt: skip
        assert name in exprs, name
    quantiles = set(re.findall(r"histogram_quantile\((0\.\d+), sum by \(le\) "
                               r"\(rate\(recsys_request_seconds_bucket", exprs))  # fmt: skip
    assert quantiles == {"0.5", "0.99", "0.999"}


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed: `make monitoring-tools` (Debian package prometheus)")
    rules = []
    for n, (_, expr) in enumerate(queries()):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
