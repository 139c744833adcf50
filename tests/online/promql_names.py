"""Which metric names and label names a PromQL expression uses, and whether the service
exports them (online/metrics.py): the rules file and the Grafana dashboard are checked with
it, so renaming a metric or a label breaks a test instead of silently emptying an alert."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.metrics import MetricWrapperBase

from online import metrics

# Added by every Prometheus scrape (job, instance) or by prometheus_client's multiprocess
# mode to per-worker gauges (pid).
TARGET_LABELS = frozenset({"job", "instance", "pid"})
# Binary operators, modifiers and the aggregations (`sum by (x) (...)` puts `by` between
# the name and its parenthesis).
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "bool", "offset", "inf", "nan", "sum", "min", "max", "avg",
                      "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                      "quantile"})  # fmt: skip

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BARE_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def _series(name: str, kind: str, labels: Iterable[str]) -> dict[str, frozenset[str]]:
    base = frozenset(labels) | TARGET_LABELS
    if kind == "counter":  # prometheus_client keeps the name without _total
        return {f"{name}_total": base, f"{name}_created": base}
    if kind == "histogram":
        return {f"{name}_bucket": base | {"le"}, f"{name}_count": base, f"{name}_sum": base,
                f"{name}_created": base}  # fmt: skip
    return {name: base}


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name /metrics can answer, with the label names it may carry."""
    out: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            out.update(_series(value._name, value._type, value._labelnames))
    # Derived at scrape time (metrics._hit_ratio, metrics._bundle_age), not registered.
    out["recsys_cache_hit_ratio"] = frozenset({"cache"}) | TARGET_LABELS
    out["recsys_bundle_age_seconds"] = TARGET_LABELS
    return out


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """(metric name, label names matched) for every vector selector in `expr`."""
    text = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    text = _GROUPING.sub(r"\1", text)  # label lists of by (...), on (...)
    found: list[tuple[str, frozenset[str]]] = []

    def take(match: re.Match[str]) -> str:
        found.append((match.group(1), frozenset(_MATCHER_LABEL.findall(match.group(2)))))
        return " "

    text = _STRING.sub('""', _SELECTOR.sub(take, text))
    found.extend((name, frozenset()) for name in _BARE_NAME.findall(text)
                 if name not in KEYWORDS)  # fmt: skip
    return found


def problems(expr: str, recorded: Iterable[str] = ()) -> list[str]:
    """Unknown metric names and label names in `expr`; `recorded` = recording rules' names."""
    known = exported_series()
    rules = set(recorded)
    out = []
    for name, labels in selectors(expr):
        if name in rules:
            continue
        if name not in known:
            out.append(f"unknown metric {name!r}")
        elif labels - known[name]:
            out.append(f"{name}: unknown label(s) {sorted(labels - known[name])}, "
                       f"it has {sorted(known[name] - TARGET_LABELS)}")  # fmt: skip
    return out
