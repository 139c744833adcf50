"""Stage 3: the evaluation split, inside the pipeline and keyed on the data, never now().

temporal: per user, the last `test_share` of their interactions by time are held out.
random:   per user, a seeded random `test_share` is held out (the MS Recommenders protocol).
mixed:    per user, half of `test_share` newest by time, half seeded random among the rest.
cutoff:   everything at or after a global cutoff date is held out.
Held-out items the user also has in training are dropped from the test set, because
items seen in training are never recommended.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shared.config import SplitConfig


def split(interactions: DataFrame, config: SplitConfig) -> tuple[DataFrame, DataFrame]:
    """interactions(user_idx, item_idx, ts, ...) -> (train, test(user_idx, item_idx))."""
    if config.protocol == "mixed":
        return split_mixed(interactions, config)
    if config.protocol == "cutoff":
        if not config.cutoff:
            raise ValueError("split.cutoff (an ISO date) is required with protocol=cutoff")
        cutoff = int(
            dt.datetime.fromisoformat(config.cutoff).replace(tzinfo=dt.UTC).timestamp()
        )
        is_test = F.col("ts") >= cutoff
        tagged = interactions.withColumn("_test", is_test)
    else:
        order = (
            [F.col("ts"), F.col("item_idx")]
            if config.protocol == "temporal"
            else [F.xxhash64("user_idx", "item_idx", "ts", F.lit(config.seed))]
        )
        per_user = Window.partitionBy("user_idx")
        tagged = (
            interactions.withColumn("_pos", F.row_number().over(per_user.orderBy(*order)))
            .withColumn("_n", F.count("*").over(per_user))
            .withColumn(
                "_test",
                (F.col("_n") >= config.min_user_events)
                & (F.col("_pos") > F.floor(F.col("_n") * (1 - config.test_share))),
            )
            .drop("_pos", "_n")
        )
    return _parts(tagged)


def split_mixed(interactions: DataFrame, config: SplitConfig) -> tuple[DataFrame, DataFrame]:
    """Both kinds of hold-out at once, per user: the newest half of the held-out share by
    time, the other half a seeded random draw from the older rest. The re-ranker learns from
    labels carved this way (ranker.label_protocol = "mixed"), so neither "what comes next"
    (the time-context features) nor "what this user likes" alone explains them."""
    per_user = Window.partitionBy("user_idx")
    n = F.col("_n")
    n_test = n - F.floor(n * (1 - config.test_share))
    n_tail = n - F.floor(n * (1 - config.test_share / 2))
    tagged = (
        interactions.withColumn("_n", F.count("*").over(per_user))
        .withColumn("_t", F.row_number().over(per_user.orderBy(F.col("ts"), F.col("item_idx"))))
        .withColumn("_tail", (n >= config.min_user_events) & (F.col("_t") > n - n_tail))
        # the older rows first, in a seeded random order: the first n_test - n_tail of them
        .withColumn("_r", F.row_number().over(per_user.orderBy(
            F.col("_tail"), F.xxhash64("user_idx", "item_idx", "ts", F.lit(config.seed)))))
        .withColumn("_test", F.col("_tail") | ((n >= config.min_user_events)
                                               & (F.col("_r") <= n_test - n_tail)))
        .drop("_n", "_t", "_tail", "_r")
    )
    return _parts(tagged)


def _parts(tagged: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(train, test) of rows tagged `_test`; test without the pairs also in train."""
    train = tagged.where(~F.col("_test")).drop("_test")
    test = (
        tagged.where(F.col("_test"))
        .select("user_idx", "item_idx")
        .distinct()
        .join(train.select("user_idx", "item_idx").distinct(), ["user_idx", "item_idx"], "left_anti")
    )
    return train, test


def sample_users(frame: DataFrame, limit: int | None, seed: int) -> DataFrame:
    """A deterministic sample of `limit` distinct users of `frame` (all when None or fewer):
    ordered by a seeded hash, so the same users are drawn on every rerun and the sample
    is spread over the id space rather than its start."""
    users = frame.select("user_idx").distinct()
    if limit is None:
        return users
    return (
        users.withColumn("_h", F.xxhash64("user_idx", F.lit(seed)))
        .orderBy("_h", "user_idx").limit(limit).select("user_idx")
    )
