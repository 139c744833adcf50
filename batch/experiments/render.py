"""An ExperimentReport as JSON-ready dict, Markdown and a PNG chart (docs/experiments-analysis.md
says how to read each number)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch.experiments.stats import SRM_ALPHA, Comparison, RatioEstimate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from batch.experiments.report import ExperimentReport

METRIC_LABELS = {"ctr": "CTR (clicks / exposure)", "play_rate": "play rate (plays / exposure)"}


def _num(x: float | None, digits: int = 6) -> float | None:
    """JSON has no NaN: an undefined number (too few users, no exposures) is null."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def _estimate(e: RatioEstimate) -> dict[str, Any]:
    lo, hi = e.ci
    return {"value": _num(e.value), "ci95": [_num(lo), _num(hi)], "se": _num(e.se, 8),
            "user_sd": _num(e.user_sd)}  # fmt: skip


def _comparison(c: Comparison) -> dict[str, Any]:
    return {"difference": _num(c.difference), "difference_ci95": [_num(v) for v in c.difference_ci],
            "lift": _num(c.lift), "lift_ci95": [_num(v) for v in c.lift_ci], "z": _num(c.z, 4),
            "p_value": _num(c.p_value, 8)}  # fmt: skip


def as_dict(r: ExperimentReport) -> dict[str, Any]:
    s = r.stats
    return {
        "experiment": r.name,
        "window": {"first": r.first_ts, "last": r.last_ts},
        "unit": r.user_column,
        "control": s.control,
        "shares": r.shares,
        "shares_declared": r.shares_declared,
        "warnings": r.warnings(),
        "srm": {"observed_users": s.srm.observed, "expected_users": {k: _num(v, 2) for k, v in s.srm.expected.items()},
                "chi2": _num(s.srm.statistic, 4), "p_value": _num(s.srm.p_value, 8),
                "alpha": SRM_ALPHA, "flagged": s.srm.flagged},  # fmt: skip
        "assignment": {"requests": r.requests, "users_in_several_arms": r.users_in_several_arms,
                       "requests_without_user": r.requests_without_user},  # fmt: skip
        "arms": [{"arm": a.arm, "users": a.users, "exposures": a.exposures, "clicks": a.clicks,
                  "plays": a.plays, "metrics": {m: _estimate(e) for m, e in a.metrics.items()},
                  "vs_control": None if a.vs_control is None
                  else {m: _comparison(c) for m, c in a.vs_control.items()}}
                 for a in s.arms],  # fmt: skip
        "power": {"relative_mde": s.relative_mde, "power": s.power, "alpha": s.alpha,
                  "control_users_needed": {m: _num(n, 1) for m, n in s.sample_size_per_arm.items()},
                  "detectable_relative_effect_now": {m: _num(v) for m, v in s.detectable_effect.items()}},  # fmt: skip
        "guardrails": {arm: {k: _num(v) if isinstance(v, float) else v for k, v in asdict(g).items()}
                       for arm, g in r.guardrails.items()},  # fmt: skip
    }


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.{digits}f}%"


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def markdown(r: ExperimentReport) -> str:
    s = r.stats
    lines = [f"# Experiment `{r.name}`", "",
             f"{r.first_ts} .. {r.last_ts}; {r.requests:,} assigned requests; unit: the user "
             f"(`{r.user_column}`); control arm `{s.control}`.", ""]  # fmt: skip
    for w in r.warnings():
        lines += [f"> **Warning:** {w}", ""]
    lines += ["## 1. Sample ratio (read first)", "",
              "| arm | declared share | users | expected |", "|---|---:|---:|---:|"]  # fmt: skip
    total_share = sum(r.shares.values())
    for arm in sorted(s.srm.expected):
        lines.append(f"| {arm} | {r.shares[arm] / total_share:.3f} | {s.srm.observed[arm]:,} | "
                     f"{s.srm.expected[arm]:,.1f} |")  # fmt: skip
    verdict = "MISMATCH" if s.srm.flagged else "ok"
    lines += ["", f"chi-square {_f(s.srm.statistic, 2)}, p = {s.srm.p_value:.3g}: **{verdict}** "
              f"(flagged below p = {SRM_ALPHA:g}).", ""]  # fmt: skip
    for metric, label in METRIC_LABELS.items():
        lines += [f"## {label}", "",
                  "| arm | users | exposures | value | 95% CI | lift vs control | lift 95% CI | p-value |",
                  "|---|---:|---:|---:|---|---:|---|---:|"]  # fmt: skip
        for a in s.arms:
            e = a.metrics[metric]
            lo, hi = e.ci
            c = a.vs_control[metric] if a.vs_control else None
            lift = "(control)" if c is None else _pct(c.lift)
            lift_ci = "" if c is None else f"[{_pct(c.lift_ci[0])}, {_pct(c.lift_ci[1])}]"
            p = "" if c is None else f"{c.p_value:.3g}"
            lines.append(f"| {a.arm} | {a.users:,} | {a.exposures:,} | {_f(e.value)} | "
                         f"[{_f(lo)}, {_f(hi)}] | {lift} | {lift_ci} | {p} |")  # fmt: skip
        lines.append("")
    lines += ["## Power", "",
              f"Control users needed to detect a {_pct(s.relative_mde, 1)} relative change with "
              f"{s.power:.0%} power at alpha {s.alpha}: "
              + ", ".join(f"{m} {_f(n, 0)}" for m, n in s.sample_size_per_arm.items())
              + ". With the users there are now, the smallest detectable relative change: "
              + ", ".join(f"{m} {_pct(v, 1)}" for m, v in s.detectable_effect.items()) + ".", ""]  # fmt: skip
    if r.guardrails:
        lines += ["## Guardrails", "", "| arm | requests | p99 latency (ms) | fallback rate | "
                  "distinct items | coverage |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for arm, g in r.guardrails.items():
            lines.append(f"| {arm} | {g.requests:,} | {_f(g.p99_latency_ms, 1)} | {_f(g.fallback_rate)} | "
                         f"{g.distinct_items if g.distinct_items is not None else 'n/a'} | {_f(g.coverage, 3)} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def chart(r: ExperimentReport, path: Path) -> Path:
    """The report's chart (see `figure`) as a PNG file."""
    import matplotlib.pyplot as plt

    fig = figure(r)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(r: ExperimentReport) -> Figure:
    """Left: each metric per arm with its 95% CI. Right: each treatment arm's lift with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r.stats
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(s.arms), 1)
    for k, a in enumerate(s.arms):
        xs = [m + (k - (len(s.arms) - 1) / 2) * width for m in range(len(METRIC_LABELS))]
        vals = [a.metrics[m].value for m in METRIC_LABELS]
        errs = [_half_width(a.metrics[m]) for m in METRIC_LABELS]
        axes[0].bar(xs, vals, width, yerr=errs, capsize=4, label=a.arm)
    axes[0].set_xticks(range(len(METRIC_LABELS)), list(METRIC_LABELS))
    axes[0].set(title=f"{r.name}: per arm (95% CI, user as unit)", ylabel="rate")
    treated = [a for a in s.arms if a.vs_control]
    labels, lifts, lo, hi = [], [], [], []
    for a in treated:
        for m in METRIC_LABELS:
            c = a.vs_control[m]  # type: ignore[index]
            labels.append(f"{a.arm}\n{m}")
            lifts.append(100 * c.lift)
            lo.append(100 * (c.lift - c.lift_ci[0]))
            hi.append(100 * (c.lift_ci[1] - c.lift))
    axes[1].errorbar(range(len(lifts)), lifts, yerr=[lo, hi], fmt="o", capsize=5)
    axes[1].axhline(0, color="grey", lw=1)
    axes[1].set_xticks(range(len(labels)), labels)
    axes[1].set(title=f"lift vs {s.control} (95% CI)", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _half_width(e: RatioEstimate) -> float:
    lo, hi = e.ci
    return 0.0 if math.isnan(lo) else (hi - lo) / 2
