"""Would a blend of the run's orders beat what it publishes on the external hold-out?

Reads a work directory that `recsys evaluate-holdout` left (its `held_out.parquet`,
`train-data/` and the run under `artifacts/work/<date>/`) and scores, with the harness's own
scoring (batch/evaluation/scoring.py: k = 10, training items never recommended), reciprocal-
rank blends of the re-ranker's order, the run's fused order and its `ease` source over each
user's merged candidates:

    score(item) = sum_o w_o / (c + rank_o(item))

An item the re-ranked top list (100 per user) or the `ease` source does not hold gets rank
1000 there. w = (1, 0, 0) is the re-ranked order, (0, 1, 0) the fused order.

    recsys evaluate-holdout --data ../shared/datasets/ml-latest-small --protocol random \
        --work /tmp/ho/w-random --out /tmp/ho/out --name random-default
    PYTHONPATH=. .venv/bin/python bench/order_blends.py --work /tmp/ho/w-random \
        --out bench/results/quality/order_blends-random.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from batch.evaluation import holdout, scoring, split
from batch.stages import RunOutputs

ABSENT_RANK = 1000.0
# (re-ranked, fused, ease) weights: the pure orders, the two-way blends, three-way blends.
BLENDS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
    (0.3, 0.7, 0.0), (0.5, 0.5, 0.0), (0.7, 0.3, 0.0),
    (0.5, 0.0, 0.5), (0.4, 0.2, 0.4), (0.3, 0.2, 0.5), (0.5, 0.25, 0.25),
)


def _orders(work: Path) -> pd.DataFrame:
    """Per merged candidate of the full variant: its rank in each of the three orders."""
    out = RunOutputs(work)
    cands = pq.read_table(out.candidates.merged("full"),
                          columns=["user_idx", "item_idx", "fused_score", "rank_ease"]).to_pandas()
    cands = cands.sort_values(["user_idx", "fused_score", "item_idx"],
                              ascending=[True, False, True], kind="stable")
    cands["r_fused"] = cands.groupby("user_idx").cumcount() + 1.0
    cands["r_ease"] = cands["rank_ease"].fillna(ABSENT_RANK).astype(float)
    reranked = pq.read_table(out.rank.reranked_full, columns=["user_idx", "item_idx", "rank"])
    ranks = reranked.to_pandas().rename(columns={"rank": "r_rer"})
    merged = cands.merge(ranks, on=["user_idx", "item_idx"], how="left")
    merged["r_rer"] = merged["r_rer"].fillna(ABSENT_RANK).astype(float)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="an evaluate-holdout --work dir")
    parser.add_argument("--c", type=float, nargs="+", default=[60.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    (work,) = sorted((args.work / "artifacts" / "work").iterdir())
    held = pd.read_parquet(args.work / "held_out.parquet")
    seen = split.read_interactions(args.work / "train-data")
    items, users = holdout._id_maps(work)
    orders = _orders(work)
    rows = []
    for c in args.c:
        for w in BLENDS:
            blended = orders.assign(s=w[0] / (c + orders["r_rer"]) + w[1] / (c + orders["r_fused"])
                                    + w[2] / (c + orders["r_ease"]))  # fmt: skip
            blended = blended.sort_values(["user_idx", "s", "item_idx"],
                                          ascending=[True, False, True], kind="stable")
            blended["rank"] = blended.groupby("user_idx").cumcount() + 1
            lists = holdout._to_ids(blended[blended["rank"] <= 50], items, users)
            ndcg = scoring.score(lists, held, seen)["ndcg@10"]
            rows.append({"c": c, "w_reranked": w[0], "w_fused": w[1], "w_ease": w[2],
                         "ndcg@10": round(ndcg, 4)})  # fmt: skip
            print(f"c={c:g} w(reranked, fused, ease)={w}: nDCG@10 {ndcg:.4f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"work": str(args.work), "blends": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
