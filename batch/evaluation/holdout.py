"""`recsys evaluate-holdout`: the pipeline scored on interactions it never saw.

1. split the data directory per user (batch/evaluation/split.py: random or temporal,
   `share` held out), write the training part as a data directory;
2. run the pipeline on it (any config), every stage up to the quality gate (its verdict is
   reported; publishing would only copy the same lists into a bundle);
3. score, on the held-out part, at k = 10: the lists the run would publish
   (`rank/full/recommendations`, what the bundle ships), the run's candidates in
   `fused_score` order and each of its sources alone (the full variant's candidates),
   popularity over all training data, and an EASE baseline whose λ is tuned on an inner
   split (same protocol) of the training part;
4. write `<out>/<name>.json` and `<out>/<name>.md` (name: protocol and config).

Progress: one line per step with its time (the pipeline adds its own per stage).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from batch.evaluation import scoring, split
from shared import ease
from shared.config import PipelineConfig
from shared.errors import QualityGateFailed
from shared.inputs import find_input
from shared.sources import RANK_COLUMNS, SOURCES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HoldoutSettings:
    data: Path
    out: Path
    work: Path
    protocol: str = "random"
    share: float = 0.25
    seed: int = 42
    config: Path | None = None
    name: str | None = None
    ease_max_items: int = 20_000
    ease_min_count: int = 5
    run_pipeline: bool = True


@contextmanager
def _step(label: str) -> Iterator[None]:
    start = time.perf_counter()
    log.info("holdout: %s ...", label)
    yield
    log.info("holdout: %s done in %.1f s", label, time.perf_counter() - start)


def _prepare_input(settings: HoldoutSettings) -> Path:
    """The data directory to split: `data` itself, or a MovieLens download imported first."""
    if find_input(settings.data) is not None:
        return settings.data
    from batch.data.movielens import import_movielens

    target = settings.work / "imported"
    import_movielens(settings.data, target)
    return target


def run_date_of(train: pd.DataFrame) -> dt.date:
    """The day of the newest training event: the run then uses every training event."""
    newest = int(train["timestamp"].max())
    return dt.datetime.fromtimestamp(newest, dt.UTC).date()


def _run_pipeline(train_dir: Path, artifacts: Path, run_date: dt.date,
                  config: PipelineConfig) -> dict[str, Any]:
    from batch import stages
    from batch.context import RunContext
    from batch.pipeline.runner import PipelineRunner

    ctx = RunContext(data_dir=train_dir.resolve(), artifacts=artifacts.resolve(),
                     run_date=run_date, config=config)
    runner = PipelineRunner(ctx)
    gate: dict[str, Any] = {}
    names = [n for n in stages.STAGE_NAMES if n != "publish"]
    try:
        for i, name in enumerate(names, start=1):
            try:
                result = runner.run_stage(name, i)
            except QualityGateFailed as exc:
                gate = {"passed": False, "reason": str(exc)}
                break
            if name == "gate":
                gate = {"passed": True, **result}
            if name == stages.last_session_stage():
                runner.close()
    finally:
        runner.close()
    return gate


def _id_maps(work: Path) -> tuple[pd.Series, pd.Series]:
    """item_idx -> item_id and user_idx -> user_id of the run (its embeddings stage)."""
    from batch.stages import RunOutputs

    emb = RunOutputs(work).embeddings
    items = pq.read_table(emb.items, columns=["item_idx", "item_id"]).to_pandas()
    users = pq.read_table(emb.users, columns=["user_idx", "user_id"]).to_pandas()
    return (pd.Series(items["item_id"].astype(str).to_numpy(), index=items["item_idx"]),
            pd.Series(users["user_id"].astype(str).to_numpy(), index=users["user_idx"]))


def _to_ids(frame: pd.DataFrame, items: pd.Series, users: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users.reindex(frame["user_idx"]).to_numpy(),
                         "item_id": items.reindex(frame["item_idx"]).to_numpy(),
                         "rank": frame["rank"].to_numpy()}).dropna()


def run_lists(work: Path, k: int = scoring.K) -> dict[str, pd.DataFrame]:
    """The run's lists as (user_id, item_id, rank): published, fused, each source alone."""
    from batch.stages import RunOutputs

    outputs = RunOutputs(work)
    items, users = _id_maps(work)
    lists: dict[str, pd.DataFrame] = {}
    recs = pq.read_table(outputs.rank.recommendations("full"),
                         columns=["user_idx", "item_idx", "rank"]).to_pandas()
    lists["published"] = _to_ids(recs[recs["rank"] <= k], items, users)
    cands = pq.read_table(outputs.candidates.merged("full"),
                          columns=["user_idx", "item_idx", "fused_score", *RANK_COLUMNS]).to_pandas()
    fused = cands.sort_values(["user_idx", "fused_score", "item_idx"],
                              ascending=[True, False, True], kind="stable")
    fused["rank"] = fused.groupby("user_idx").cumcount() + 1
    lists["fused"] = _to_ids(fused[fused["rank"] <= k], items, users)
    for source, column in zip(SOURCES, RANK_COLUMNS, strict=True):
        own = cands[cands[column].notna() & (cands[column] <= k)]
        lists[source] = _to_ids(own.assign(rank=own[column].astype(np.int64)), items, users)
    return lists


def _ease_baseline(settings: HoldoutSettings, data: split.HoldoutSplit,
                   users: pd.Index) -> tuple[pd.DataFrame, dict[str, Any]]:
    inner = split.split_per_user(data.train, settings.protocol, settings.share, settings.seed + 1)
    start = time.perf_counter()
    tuned = scoring.tune_ease(inner.train, inner.held_out, settings.ease_max_items,
                              settings.ease_min_count)
    tune_s = time.perf_counter() - start
    fit = scoring.EaseFit(data.train, settings.ease_max_items, settings.ease_min_count)
    start = time.perf_counter()
    fit.weights = ease.solve(fit.gram(), tuned.lam)
    info = {"lambda": tuned.lam, "inner_ndcg@10_by_lambda": tuned.by_lambda,
            "items": int(fit.selected.size), "interaction_share": fit.coverage,
            "tune_seconds": round(tune_s, 1), "fit_seconds": round(time.perf_counter() - start, 1)}
    return fit.lists(users), info


LIST_LABELS: dict[str, str] = {
    "published": "published lists (what the run ships)",
    "fused": "the run's candidates, fused order",
    **{s: f"the run's `{s}` source alone" for s in SOURCES},
    "popularity": "popularity over all training data",
    "ease_baseline": "EASE baseline (λ tuned on an inner split)",
}


def evaluate_holdout(settings: HoldoutSettings) -> dict[str, Any]:
    config = PipelineConfig.load(settings.config)
    name = settings.name or f"{settings.protocol}-{settings.config.stem if settings.config else 'default'}"
    with _step("read and split"):
        source = _prepare_input(settings)
        data = split.split_per_user(split.read_interactions(source), settings.protocol,
                                    settings.share, settings.seed)
        train_dir = split.write_training_dir(source, data, settings.work / "train-data")
        split.write_held_out(data, settings.work / "held_out.parquet")
    users = pd.Index(data.held_out["user_id"].unique())
    run_date = run_date_of(data.train)
    artifacts = settings.work / "artifacts"
    gate: dict[str, Any] = {"passed": None, "reason": "pipeline not run"}
    if settings.run_pipeline:
        split.clear(artifacts)  # no earlier run: the gate compares with no previous bundle
        with _step(f"pipeline on the training part (run date {run_date})"):
            gate = _run_pipeline(train_dir, artifacts, run_date, config)
    from batch.stages.outputs import work_dir

    work = work_dir(artifacts, run_date.isoformat())
    lists: dict[str, pd.DataFrame] = {}
    with _step("read the run's lists"):
        lists.update(run_lists(work))
    with _step("popularity"):
        lists["popularity"] = scoring.popularity_lists(data.train, users)
    with _step("EASE baseline (inner split, λ grid, fit)"):
        # not "ease": that is the run's own source
        lists["ease_baseline"], ease_info = _ease_baseline(settings, data, users)
    with _step("score"):
        metrics = {label: scoring.score(frame, data.held_out, data.train)
                   for label, frame in lists.items()}
    report: dict[str, Any] = {
        "name": name, "data": str(settings.data), "protocol": settings.protocol,
        "share": settings.share, "seed": settings.seed, "k": scoring.K,
        "config": json.loads(settings.config.read_text()) if settings.config else {},
        "train_interactions": len(data.train), "held_out_interactions": len(data.held_out),
        "users_evaluated": len(users), "run_date": run_date.isoformat(), "gate": gate,
        "lists": metrics, "ease_baseline": ease_info, "run": _run_summary(work),
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (settings.out / f"{name}.md").write_text(markdown(report))
    return report


def _run_summary(work: Path) -> dict[str, Any]:
    """What the run says about itself: its own split's metrics, what it shipped, why."""
    from batch.stages import RunOutputs

    outputs = RunOutputs(work)
    summary: dict[str, Any] = {}
    if outputs.evaluate.metrics.exists():
        metrics = json.loads(outputs.evaluate.metrics.read_text())
        summary["internal_ndcg@10"] = {k: v.get("ndcg@10") for k, v in metrics["lists"].items()}
        summary["internal_protocol"] = metrics.get("protocol")
        summary["shipped"] = metrics.get("reranker", {}).get("shipped")
    if outputs.rank.ranker.exists():
        ranker = json.loads(outputs.rank.ranker.read_text())
        summary["lists_order"] = ranker.get("order")
    return summary


def markdown(report: dict[str, Any]) -> str:
    k = report["k"]
    lines = [
        f"### {report['name']}: {report['protocol']} per-user hold-out "
        f"({report['share']:.0%}, seed {report['seed']}), k = {k}",
        "",
        f"{report['users_evaluated']} users, {report['train_interactions']} training / "
        f"{report['held_out_interactions']} held-out interactions; config "
        f"`{json.dumps(report['config'])}`; gate passed: {report['gate'].get('passed')}",
        "",
        f"| list | nDCG@{k} | P@{k} | R@{k} | MAP@{k} |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in report["lists"].items():
        lines.append(f"| {LIST_LABELS.get(label, label)} | {m[f'ndcg@{k}']:.4f} | "
                     f"{m[f'precision@{k}']:.4f} | {m[f'recall@{k}']:.4f} | {m[f'map@{k}']:.4f} |")
    e = report["ease_baseline"]
    lines += ["", f"EASE baseline: λ = {e['lambda']:g} (inner split), {e['items']} items covering "
              f"{e['interaction_share']:.1%} of the training interactions."]
    return "\n".join(lines) + "\n"
