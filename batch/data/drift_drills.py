"""Drills for the input drift checks: a normal generated input, altered on one day.

* `shift_section`: a catalogue section (items whose first genre is G, the genre in their
  title) gets `factor` times its share of that day's interactions: events of other sections
  are given a G item instead, drawn from that day's own G events, so the mix inside G stays.
* `thin_day`: that day keeps only `keep` of its events (a lost ingest partition).

Both work on an interactions table with `ts` (epoch s) or the contract's `timestamp`, and
leave every other day untouched.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

DAY = 86_400


def _ts(table: pa.Table) -> str:
    return "ts" if "ts" in table.column_names else "timestamp"


def day_mask(table: pa.Table, day: dt.date) -> np.ndarray:
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    ts = table[_ts(table)].to_numpy()
    return (ts >= start) & (ts < start + DAY)


def section_of(items: pa.Table) -> dict[str, str]:
    """item_id -> its section: the first of its `|`-separated genres."""
    genres = items["genres"].to_pylist()
    return {i: (g or "").split("|")[0] for i, g in zip(items["item_id"].to_pylist(), genres,
                                                        strict=True)}


def shift_section(table: pa.Table, items: pa.Table, day: dt.date, section: str,
                  factor: float = 2.0, seed: int = 0) -> pa.Table:  # fmt: skip
    """`section`'s share of `day`'s interactions multiplied by `factor` (share must stay < 1)."""
    rng = np.random.default_rng(seed)
    of = section_of(items)
    on_day = np.flatnonzero(day_mask(table, day))
    ids = np.asarray(table["item_id"].to_pylist(), dtype=object)
    in_section = np.asarray([of.get(i) == section for i in ids[on_day]])
    share = in_section.mean()
    if not 0 < share * factor < 1:
        raise ValueError(f"section {section} has share {share:.3f} of {day}: cannot scale "
                         f"it by {factor}")
    # Moving a share f of the other events into the section: s + (1 - s) f = factor * s.
    move = (factor * share - share) / (1 - share)
    others = on_day[~in_section]
    moved = others[rng.random(len(others)) < move]
    ids[moved] = rng.choice(ids[on_day[in_section]], size=len(moved))
    column = table.schema.get_field_index("item_id")
    return table.set_column(column, "item_id", pa.array(ids.tolist(), pa.string()))


def thin_day(table: pa.Table, day: dt.date, keep: float = 0.5, seed: int = 0) -> pa.Table:
    """`day` keeps a random `keep` share of its events; other days are unchanged."""
    rng = np.random.default_rng(seed)
    on_day = day_mask(table, day)
    drop = on_day & (rng.random(len(on_day)) >= keep)
    return table.filter(pa.array(~drop))


def largest_section(table: pa.Table, items: pa.Table, day: dt.date) -> str:
    """The section with the most interactions on `day` (the drill's default target)."""
    of = section_of(items)
    ids = table.filter(pa.array(day_mask(table, day)))["item_id"].to_pylist()
    counts: dict[str, int] = {}
    for i in ids:
        counts[of.get(i, "")] = counts.get(of.get(i, ""), 0) + 1
    return max(sorted(counts), key=lambda s: counts[s])
