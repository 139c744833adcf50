"""Incremental rank on a realistic second night: reuse share, rank stage time, identity.

    PYTHONPATH=$PWD .venv/bin/python bench/rank_incremental.py --work /tmp/rank-inc \\
        --users 5000 --items 2000 --events 100000 --new-user-share 0.01

Night D: `recsys data generate` data ending on D, the whole pipeline, published (CURRENT).
Night D+1: the same data plus new events on D+1 for a seeded `--new-user-share` of the
users; the pipeline up to rank (incremental, against D), then rank again with every user
rescored (RECSYS_RANK_FULL_RESCORE=1), then incremental again, in one Spark session. The
lists of each are compared row by row. What changed between the nights is measured
directly: the shipped model's bytes, the feature arrays, and the share of users whose
fingerprint of model inputs is the same both nights (the reuse a kept model would allow).
Last, night D is rerun unchanged (a retry): rank incremental against itself, then full.
Prints one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from batch.context import RunContext, RunOutputs, read_json
from batch.data.generate import GenerateConfig, generate
from batch.pipeline.runner import PipelineRunner
from batch.ranker.incremental import FORCE_ENV
from batch.stages.outputs import work_dir
from shared.config import PipelineConfig
from shared.feature_arrays import load_feature_arrays

DAY = 86400


def add_day(src: Path, dst: Path, day: dt.date, share: float, per_user: int, seed: int) -> int:
    """dst = src plus `per_user` events on `day` for a seeded share of src's users."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    inter = pq.read_table(src / "interactions.parquet").to_pandas()
    rng = np.random.default_rng(seed)
    users = np.sort(inter["user_id"].unique())
    chosen = rng.choice(users, size=max(1, round(share * len(users))), replace=False)
    if per_user <= 0:  # the usual day's volume, so the drift stage's volume checks pass
        days = max(1, (int(inter["timestamp"].max()) - int(inter["timestamp"].min())) // DAY)
        per_user = -(-len(inter) // days // len(chosen))
    items = inter["item_id"].to_numpy()  # popularity-weighted: drawn from the events
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    rows = pd.DataFrame({
        "user_id": np.repeat(chosen, per_user),
        "item_id": rng.choice(items, size=len(chosen) * per_user),
        "timestamp": np.sort(rng.integers(start, start + DAY - 1, size=len(chosen) * per_user)),
    })
    for column in inter.columns:  # event_type, weight, ...: as the day's most common value
        if column not in rows:
            rows[column] = inter[column].mode().iloc[0]
    out = pd.concat([inter, rows[inter.columns].astype(inter.dtypes.to_dict())], ignore_index=True)
    (dst / "interactions.parquet").unlink()
    out.to_parquet(dst / "interactions.parquet", index=False)
    return len(chosen)


def lists(ctx: RunContext) -> pd.DataFrame:
    pdf = pq.read_table(ctx.outputs.rank.reranked_full).to_pandas()
    pdf["sources"] = pdf["sources"].map(lambda s: tuple(s))
    return pdf.sort_values(["user_idx", "rank"], ignore_index=True)


def timed_rank(runner: PipelineRunner, force: bool) -> tuple[float, dict[str, object]]:
    if force:
        os.environ[FORCE_ENV] = "1"
    try:
        start = time.perf_counter()
        runner.run_stage("rank")
        seconds = time.perf_counter() - start
    finally:
        os.environ.pop(FORCE_ENV, None)
    return seconds, read_json(runner.ctx.outputs.rank.incremental)


def what_changed(art: Path, d0: dt.date, d1: dt.date) -> dict[str, object]:
    a, b = (RunOutputs(work_dir(art, d.isoformat())) for d in (d0, d1))
    spec = read_json(a.rank.ranker_spec)["model"]
    model = [hashlib.sha256((o.train_ranker.models / spec).read_bytes()).hexdigest() for o in (a, b)]
    fa, fb = (load_feature_arrays(o.features.arrays("full")) for o in (a, b))
    arrays = {}
    for name in ("item_stats", "user_stats", "item_factors", "user_factors", "item_buckets"):
        x, y = getattr(fa, name), getattr(fb, name)
        n = min(len(x), len(y))
        same = np.all((x[:n] == y[:n]) | (np.isnan(x[:n]) & np.isnan(y[:n])), axis=1)
        arrays[name] = {"rows_equal_share": round(float(same.mean()), 4), "rows": n}
    fps = [pq.read_table(o.rank.fingerprints).to_pandas() for o in (a, b)]
    both = fps[0].merge(fps[1], on="user_idx", suffixes=("_a", "_b"))
    same = (both.fp_hi_a == both.fp_hi_b) & (both.fp_lo_a == both.fp_lo_b)
    cands = [pq.read_table(o.candidates.merged("full"),
                           columns=["user_idx", "item_idx"]).to_pandas() for o in (a, b)]
    per_user = [c.groupby("user_idx")["item_idx"].apply(tuple) for c in cands]
    joined = pd.concat(per_user, axis=1, keys=["a", "b"], join="inner")
    return {"model_same": model[0] == model[1], "feature_arrays": arrays,
            "users_same_candidate_items_share": round(float((joined.a == joined.b).mean()), 4),
            "users_same_fingerprint_share": round(float(same.mean()), 4),
            "users_compared": len(both)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--new-user-share", type=float, default=0.01)
    p.add_argument("--events-per-user", type=int, default=0,
                   help="new events per chosen user; 0: as many as make a usual day's volume")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    d0 = dt.date(2025, 12, 31)
    d1 = d0 + dt.timedelta(days=1)
    art, data0, data1 = args.work / "art", args.work / "day0", args.work / "day1"
    shutil.rmtree(art, ignore_errors=True)
    generate(GenerateConfig(out_dir=data0, n_users=args.users, n_items=args.items,
                            n_events=args.events, seed=args.seed, end_date=d0, days=180))
    active = add_day(data0, data1, d1, args.new_user_share, args.events_per_user, args.seed)
    config = PipelineConfig.model_validate({"spark_master": args.spark_master})
    result: dict[str, object] = {"users": args.users, "items": args.items,
                                 "events": args.events, "users_with_new_events": active,
                                 "load_average_start": os.getloadavg()}

    night0 = PipelineRunner(RunContext(data_dir=data0, artifacts=art, run_date=d0, config=config))
    t = time.perf_counter()
    night0.run_all()
    result["night0_seconds"] = round(time.perf_counter() - t, 1)
    result["night0_rank"] = read_json(night0.ctx.outputs.rank.incremental)

    ctx1 = RunContext(data_dir=data1, artifacts=art, run_date=d1, config=config)
    night1 = PipelineRunner(ctx1)
    try:
        night1.run_all(stop_after="rank")
        first = read_json(ctx1.outputs.rank.incremental)
        inc_lists = lists(ctx1)
        full_s, full = timed_rank(night1, force=True)
        full_lists = lists(ctx1)
        inc_s, inc = timed_rank(night1, force=False)
        result["night1"] = {
            "rank_in_pipeline": first, "rank_full_seconds": round(full_s, 1),
            "rank_full": full, "rank_incremental_seconds": round(inc_s, 1),
            "rank_incremental": inc,
            "lists_identical": bool(inc_lists.equals(full_lists) and lists(ctx1).equals(full_lists)),
            "rows": len(full_lists),
        }
    finally:
        night1.close()
    result["what_changed"] = what_changed(art, d0, d1)

    # A retry of night D, unchanged (CURRENT is still D): everything reusable.
    rerun = PipelineRunner(RunContext(data_dir=data0, artifacts=art, run_date=d0, config=config))
    try:
        before = lists(rerun.ctx)
        inc_s, inc = timed_rank(rerun, force=False)
        inc_lists = lists(rerun.ctx)
        full_s, full = timed_rank(rerun, force=True)
        result["rerun_night0"] = {
            "rank_incremental_seconds": round(inc_s, 1), "rank_incremental": inc,
            "rank_full_seconds": round(full_s, 1), "rank_full": full,
            "lists_identical": bool(before.equals(inc_lists) and inc_lists.equals(lists(rerun.ctx))),
        }
    finally:
        rerun.close()
    result["load_average_end"] = os.getloadavg()
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
