"""nDCG@10 of a run's evaluation lists on each half of its mixed split, scored apart.

The run's own evaluation split (`split.protocol = "mixed"`, batch/spark/split.split_mixed)
holds out per user the newest half of the held-out share and a seeded random draw from the
older rest. Which half a held-out pair came from is not stored; it is recovered here: a pair
newer than every training event of its user is from the newest half. The rank stage chose
between the re-ranked and the fused order on the two halves together; this says whether
either half alone would have chosen otherwise.

    PYTHONPATH=. .venv/bin/python bench/split_halves.py --work /tmp/ho/w-random/artifacts/work/2016-10-16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from batch.stages import RunOutputs

K = 10


def ndcg(lists: pd.DataFrame, test: pd.DataFrame, k: int = K) -> float:
    """Mean nDCG@k over the users of `test` (the same definition as batch/spark/evaluate)."""
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    n_rel = test.groupby("user_idx").size().rename("n")
    hits = lists[lists["rank"] <= k].merge(test[["user_idx", "item_idx"]], on=["user_idx", "item_idx"])
    dcg = (1.0 / np.log2(hits["rank"] + 1)).groupby(hits["user_idx"]).sum().rename("dcg")
    per_user = n_rel.to_frame().join(dcg).fillna(0.0)
    return float((per_user["dcg"] / ideal[np.minimum(per_user["n"], k) - 1]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="ART/work/<run_date>")
    args = parser.parse_args()
    out = RunOutputs(args.work)
    emb = out.embeddings
    test = pd.read_parquet(emb.test, columns=["user_idx", "item_idx"])
    train = pd.read_parquet(emb.train, columns=["user_idx", "ts"])
    events = pd.read_parquet(emb.interactions, columns=["user_idx", "item_idx", "ts"])
    newest = events.groupby(["user_idx", "item_idx"])["ts"].max().rename("ts").reset_index()
    last_train = train.groupby("user_idx")["ts"].max().rename("last_train")
    tagged = test.merge(newest, on=["user_idx", "item_idx"]).join(last_train, on="user_idx")
    tail = tagged["ts"] > tagged["last_train"]
    print(f"held-out pairs {len(tagged)}, newest half {tail.mean():.1%}")
    for name, path in (("re-ranked (int8)", out.rank.reranked_eval("int8")),
                       ("fused", out.rank.fused("eval"))):  # fmt: skip
        lists = pd.read_parquet(path, columns=["user_idx", "item_idx", "rank"])
        print(f"{name:17s} both {ndcg(lists, tagged):.4f}  newest half {ndcg(lists, tagged[tail]):.4f}"
              f"  random half {ndcg(lists, tagged[~tail]):.4f}")


if __name__ == "__main__":
    main()
