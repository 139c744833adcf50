"""The external hold-out: split a data directory per user, before the pipeline sees it.

random:   per user, a seeded random `share` of their interactions is held out (the
          Microsoft Recommenders protocol, "random per-user 75/25").
temporal: per user, their last `share` by timestamp (ties: item id) is held out.
A user keeps floor(n * (1 - share)) interactions for training, so a user with n >= 2 always
has both parts; users with fewer than `min_user_events` stay training-only. Held-out items
the user also has in training are dropped from the held-out part (items seen in training
are never recommended), duplicates of a (user, item) pair are counted once.

The training part is written as a data directory of the contract (interactions, plus the
items and users files as they are), so any pipeline run can take it as input.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batch.data import contract
from shared.errors import DataContractError
from shared.inputs import INTERACTIONS, ITEMS, USERS, describe_expected, find_input

Protocol = Literal["random", "temporal"]
PROTOCOLS: tuple[str, ...] = ("random", "temporal")


@dataclass(frozen=True)
class HoldoutSplit:
    train: pd.DataFrame  # the contract's interaction columns, training rows
    held_out: pd.DataFrame  # user_id, item_id: distinct, none of them in the user's training


def read_table(data_dir: Path, name: str) -> pa.Table | None:
    """A contract file of `data_dir` (Parquet file or directory, or CSV), None if absent."""
    path = find_input(data_dir, name)
    if path is None:
        return None
    fmt = "csv" if path.suffix == ".csv" else "parquet"
    return ds.dataset(str(path), format=fmt).to_table()


def read_interactions(data_dir: Path) -> pd.DataFrame:
    table = read_table(data_dir, INTERACTIONS)
    if table is None:
        raise DataContractError(f"no interactions in {data_dir}: expected "
                                f"{describe_expected(data_dir)}")
    frame = table.to_pandas()
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    return frame


def split_per_user(interactions: pd.DataFrame, protocol: str, share: float = 0.25,
                   seed: int = 42, min_user_events: int = 2) -> HoldoutSplit:
    """Split interactions(user_id, item_id, timestamp, ...) per user (module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    # A fixed row order first: the same input gives the same split whatever order it came in.
    frame = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable",
                                     ignore_index=True)
    if protocol == "random":
        key = np.random.default_rng(seed).random(len(frame))
        order = np.lexsort((key, frame["user_id"].to_numpy()))
    else:  # already by user, then time, then item
        order = np.arange(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    pos = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    n = frame.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    is_test = (n >= min_user_events) & (pos >= np.floor(n * (1.0 - share)))
    train = frame.loc[~is_test].sort_values(["user_id", "timestamp", "item_id"], kind="stable",
                                            ignore_index=True)
    held = frame.loc[is_test, ["user_id", "item_id"]].drop_duplicates()
    seen = pd.MultiIndex.from_frame(train[["user_id", "item_id"]])
    held = held[~pd.MultiIndex.from_frame(held).isin(seen)]
    return HoldoutSplit(train, held.sort_values(["user_id", "item_id"], ignore_index=True))


def write_training_dir(source_dir: Path, split: HoldoutSplit, out_dir: Path) -> Path:
    """out_dir as a data directory: the training interactions, the source's items/users."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(split.train, preserve_index=False)
    contract.write_table(out_dir, contract.INTERACTIONS, table)
    written = {contract.INTERACTIONS}
    for name in (ITEMS, USERS):
        found = read_table(source_dir, name)
        if found is not None:
            contract.write_table(out_dir, name, found)
            written.add(name)
    contract.remove_stale(out_dir, keep=written)
    return out_dir


def write_held_out(split: HoldoutSplit, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(split.held_out, preserve_index=False), path)


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
