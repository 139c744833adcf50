"""Files an operator loads next to the service, shipped as package data (docs/monitoring.md):

* `recsys_rules.yml`: Prometheus recording and alerting rules (latency SLO burn rates,
  fallback rate, bundle freshness and reloads, feature skew, log drops);
* `grafana_dashboard.json`: the Grafana dashboard over the same metrics.

Nothing here runs in the service; the paths are for `promtool`, provisioning scripts and tests.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "recsys_rules.yml"
DASHBOARD_FILE = HERE / "grafana_dashboard.json"
