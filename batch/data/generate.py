"""Synthetic interaction data that follows the data contract (see `batch.data.contract`).

The model, chosen so that recommenders have something real to learn:

* Items: Zipf-like popularity (weight ~ 1/rank, ranks shuffled over ids), 1-3 genres out of
  18 (the first one is in the title: "Item 123 (Drama)"), and ~15% of items restricted to a
  random subset of the regions (the rest have available_regions = null, i.e. everywhere).
* Users: a region (skewed shares), a Dirichlet taste over genres concentrated on a few of
  them, and a power-law (Pareto) activity level; every user has >= 1 event when
  events >= users.
* Events: 80% pick a genre from the user's taste, then an item of that genre by popularity
  (items count less for their 2nd/3rd genre); 20% pick from global popularity (trending / exploration). Items not available in the
  user's region are redrawn from the unrestricted items. 25% of events revisit the user's
  previous item (half of those views become clicks: view -> click funnels).
* Time: each user joins at some point of the window (mostly early, so activity grows
  moderately) and has sessions (~6 events each) whose start follows a diurnal profile;
  events inside a session are 1 s + Exp(40 s) apart. Every timestamp lies in
  [end-date - days + 1 day, end of end-date], i.e. exactly `days` whole UTC days.
  (user, item, timestamp, event_type) is unique, as the pipeline dedupes on it.
* event_type/weight: view 1.0 (~63%), click 2.0 (~21%), rating 1-5 stars (10%, higher for
  the user's favourite genres), purchase 5.0 (6%).

Scale: users are processed in chunks of ~500k events; each chunk is vectorised numpy and is
written as one Parquet row group, so memory is bounded by the chunk, not by --events.

Determinism: all randomness comes from numpy Generators seeded by (seed, stream, chunk), so
the same options give the same Parquet content on the same library versions.

--bad-share F replaces round(F * events) rows with malformed ones, in equal parts: empty
user_id, empty item_id, a timestamp 10 to 20 years after end-date, an exact duplicate of
another row, and an item_id ("ghost<n>") missing from items.parquet. The row count stays
--events.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from batch.data import contract

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
REGION_CODES = (
    "US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES",
    "IT", "MX", "NL", "SE", "PL", "KR", "AR", "ZA", "NG", "EG",
)  # fmt: skip

EVENT_TYPES = ("view", "click", "rating", "purchase")
EVENT_PROBS = (0.72, 0.12, 0.10, 0.06)
EVENT_WEIGHTS = (1.0, 2.0, float("nan"), 5.0)  # rating: the star value instead
VIEW, CLICK, RATING, PURCHASE = range(4)

BAD_KINDS = ("empty_user", "empty_item", "future_timestamp", "duplicate", "unknown_item")

CHUNK_EVENTS = 500_000  # events per chunk / row group: ~60 MB of working arrays
CHUNK_USERS = 200_000  # cap, so sparse data (events < users) still has bounded chunks
N_GHOST_ITEMS = 1_000  # distinct unknown item ids used by --bad-share

POPULARITY_EXPONENT = 1.0
TASTE_CONCENTRATION = 0.1  # mean Dirichlet alpha per genre (sum 1.8: ~2 favourite genres)
SECONDARY_GENRE_WEIGHT = 0.4  # an item is a weaker match for its 2nd/3rd genre
EXPLORE_SHARE = 0.2
REVISIT_SHARE = 0.25
REVISIT_CLICK_SHARE = 0.5  # a revisited view becomes a click this often
RESTRICTED_SHARE = 0.15
EVENTS_PER_SESSION = 6
MEAN_GAP_S = 40.0
# Relative activity by hour of day (UTC): quiet nights, evening peak.
HOURLY = (
    2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 12, 10, 7, 4,
)  # fmt: skip

DAY = 86_400


@dataclass(frozen=True)
class GenerateConfig:
    out_dir: Path
    n_users: int
    n_items: int
    n_events: int
    seed: int
    end_date: date = date(2025, 12, 31)
    days: int = 365
    n_regions: int = 5
    bad_share: float = 0.0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_items < 1 or self.n_events < 0:
            raise ValueError("--users and --items must be >= 1 and --events >= 0")
        if self.days < 1:
            raise ValueError("--days must be >= 1")
        if not 1 <= self.n_regions <= 60:
            raise ValueError("--regions must be between 1 and 60")
        if not 0.0 <= self.bad_share <= 0.5:
            raise ValueError("--bad-share must be between 0 and 0.5")

    @property
    def end_ts(self) -> int:
        """Last second of end_date, UTC."""
        midnight = datetime.combine(self.end_date + timedelta(days=1), time(), tzinfo=UTC)
        return int(midnight.timestamp()) - 1

    @property
    def start_ts(self) -> int:
        """First second of the window: exactly `days` days before end_ts + 1."""
        return self.end_ts + 1 - self.days * DAY

    @property
    def regions(self) -> list[str]:
        extra = [f"R{k}" for k in range(len(REGION_CODES), self.n_regions)]
        return [*REGION_CODES, *extra][: self.n_regions]

    def command(self) -> str:
        args = [
            "recsys", "data", "generate", "--out", str(self.out_dir),
            "--users", str(self.n_users), "--items", str(self.n_items),
            "--events", str(self.n_events), "--seed", str(self.seed),
            "--end-date", self.end_date.isoformat(), "--days", str(self.days),
            "--regions", str(self.n_regions), "--bad-share", repr(self.bad_share),
        ]  # fmt: skip
        return shlex.join(args)


@dataclass
class GenerateResult:
    config: GenerateConfig
    rows: int = 0
    bad_rows: int = 0
    users_with_events: int = 0
    items_with_events: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    row_groups: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        span = "no rows"
        if self.min_ts is not None and self.max_ts is not None:
            day = lambda ts: datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")  # noqa: E731
            span = f"{day(self.min_ts)}..{day(self.max_ts)}"
        bad = f", {self.bad_rows:,} malformed" if self.bad_rows else ""
        return (
            f"generated {self.rows:,} rows{bad}, {self.users_with_events:,} active users "
            f"of {self.config.n_users:,}, {self.items_with_events:,} items with events "
            f"of {self.config.n_items:,}, time range {span} -> {self.config.out_dir}"
        )


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    """Independent, reproducible random streams: one per (purpose, chunk)."""
    import numpy as np

    return np.random.default_rng(np.random.SeedSequence([seed, stream, chunk]))


# --- catalogue -------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Items and the samplers that pick them; sizes are O(items), never O(events)."""

    ids: pa.Array  # item ids, then "" (empty id), then ghost ids (for --bad-share)
    genres: np.ndarray  # (n_items, 3) genre indices, -1 padded
    available: np.ndarray  # (n_items, n_regions) bool
    popularity_cdf: np.ndarray  # over all items
    open_items: np.ndarray  # items available everywhere
    open_cdf: np.ndarray
    genre_items: np.ndarray  # items grouped by genre (an item appears once per genre)
    genre_cdf: np.ndarray  # within-genre CDF in (0, 1], plus the genre index as offset
    genre_prevalence: np.ndarray  # (n_genres,), zero for genres without items
    table: pa.Table = field(repr=False)

    @property
    def n_items(self) -> int:
        return len(self.genres)

    @property
    def empty_code(self) -> int:
        return self.n_items

    @property
    def ghost_base(self) -> int:
        return self.n_items + 1


def build_catalog(cfg: GenerateConfig) -> Catalog:
    import numpy as np
    import pyarrow as pa

    rng = _rng(cfg.seed, 0)
    m, g = cfg.n_items, len(GENRES)

    # Zipf popularity by rank, ranks shuffled so item id says nothing about popularity.
    rank = rng.permutation(m) + 1
    popularity = 1.0 / rank.astype(np.float64) ** POPULARITY_EXPONENT

    prevalence = rng.dirichlet(np.full(g, 2.0))
    genres = np.full((m, 3), -1, dtype=np.int64)
    n_genres = rng.choice(3, size=m, p=[0.5, 0.35, 0.15]) + 1
    # Gumbel top-k = sampling k distinct genres weighted by prevalence, vectorised.
    keys = np.log(prevalence)[None, :] - np.log(-np.log(rng.random((m, g))))
    order = np.argsort(-keys, axis=1)[:, :3]
    for k in range(3):
        genres[:, k] = np.where(n_genres > k, order[:, k], -1)

    available, restricted = _availability(rng, m, cfg.n_regions)

    pairs_item = np.repeat(np.arange(m), 3)
    pairs_genre = genres.ravel()
    pairs_weight = popularity[pairs_item] * np.tile([1.0, *[SECONDARY_GENRE_WEIGHT] * 2], m)
    keep = pairs_genre >= 0
    pairs_item, pairs_genre, pairs_weight = pairs_item[keep], pairs_genre[keep], pairs_weight[keep]
    by_genre = np.argsort(pairs_genre, kind="stable")
    genre_items, sorted_genre = pairs_item[by_genre], pairs_genre[by_genre]
    genre_cdf = _grouped_cdf(pairs_weight[by_genre], sorted_genre) + sorted_genre
    present = np.bincount(sorted_genre, minlength=g) > 0

    width = len(str(m - 1))
    ids = [f"i{k:0{width}d}" for k in range(m)]
    ghosts = [f"ghost{k}" for k in range(N_GHOST_ITEMS)]
    table = _items_table(ids, genres, restricted, available, cfg.regions)
    open_items = np.flatnonzero(~restricted)
    return Catalog(
        ids=pa.array([*ids, "", *ghosts], pa.string()),
        genres=genres,
        available=available,
        popularity_cdf=_cdf(popularity),
        open_items=open_items,
        open_cdf=_cdf(popularity[open_items]),
        genre_items=genre_items,
        genre_cdf=genre_cdf,
        genre_prevalence=np.where(present, prevalence, 0.0) / prevalence[present].sum(),
        table=table,
    )


def _availability(rng: np.random.Generator, m: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(items x regions) availability; restricted items get 1..r-1 random regions."""
    import numpy as np

    available = np.ones((m, r), dtype=bool)
    restricted = np.zeros(m, dtype=bool)
    if r < 2:
        return available, restricted
    restricted = rng.random(m) < RESTRICTED_SHARE
    restricted[0] = False  # at least one open item, so the redraw below always succeeds
    idx = np.flatnonzero(restricted)
    n_allowed = rng.integers(1, r, size=len(idx))
    ranks = np.argsort(np.argsort(rng.random((len(idx), r)), axis=1), axis=1)
    available[idx] = ranks < n_allowed[:, None]
    return available, restricted


def _items_table(
    ids: list[str],
    genres: np.ndarray,
    restricted: np.ndarray,
    available: np.ndarray,
    regions: list[str],
) -> pa.Table:
    import pyarrow as pa

    names = ["|".join(GENRES[g] for g in row if g >= 0) for row in genres.tolist()]
    titles = [f"Item {k} ({GENRES[row[0]]})" for k, row in enumerate(genres.tolist())]
    regions_col = [
        "|".join(regions[j] for j in range(len(regions)) if avail[j]) if r else None
        for r, avail in zip(restricted.tolist(), available.tolist(), strict=True)
    ]
    return pa.Table.from_arrays(
        [pa.array(ids), pa.array(titles), pa.array(names), pa.array(regions_col, pa.string())],
        schema=contract.items_schema(),
    )


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = weights.cumsum()
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # exact, so a uniform draw in [0, 1) can never fall off the end
    return cdf


def _grouped_cdf(weights: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """CDF within each run of equal (sorted) `groups`, each run ending at exactly 1.0."""
    import numpy as np

    cum = weights.cumsum()
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)] - 1
    sizes = ends - starts + 1
    before = np.r_[0.0, cum[ends[:-1]]]  # running total before each group
    cdf = (cum - np.repeat(before, sizes)) / np.repeat(cum[ends] - before, sizes)
    cdf[ends] = 1.0
    return cdf


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: index of the first cdf value > u."""
    import numpy as np

    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


# --- users -----------------------------------------------------------------------------------


def user_activity(cfg: GenerateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Events per user (power law, summing exactly to n_events) and each user's region."""
    import numpy as np

    rng = _rng(cfg.seed, 1)
    n, e = cfg.n_users, cfg.n_events
    # Lomax/Pareto II (shape 1.2): most users light, a heavy tail of power users; capped at
    # 200x the mean so one user can't own a small data set.
    activity = np.minimum(rng.pareto(1.2, n), 1_000.0)
    p = activity / activity.sum()
    if e >= n:
        counts = 1 + rng.multinomial(e - n, p)
    else:
        counts = rng.multinomial(e, p)
    region_share = 1.0 / (np.arange(cfg.n_regions) + 1.0) ** 0.8
    regions = rng.choice(cfg.n_regions, size=n, p=region_share / region_share.sum())
    return counts.astype(np.int64), regions.astype(np.int64)


def user_chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) user ranges holding ~CHUNK_EVENTS events (a heavier user gets its own)."""
    import numpy as np

    cum = np.cumsum(counts)
    chunks, lo = [], 0
    while lo < len(counts):
        before = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, before + CHUNK_EVENTS, side="right"))
        hi = min(max(hi, lo + 1), lo + CHUNK_USERS, len(counts))
        chunks.append((lo, hi))
        lo = hi
    return chunks


def bad_per_chunk(cfg: GenerateConfig, chunk_events: list[int]) -> list[int]:
    """Split round(bad_share * events) over the chunks, proportionally and exactly."""
    import numpy as np

    cum = np.cumsum([0, *chunk_events])
    target = np.round(cfg.bad_share * cum).astype(np.int64)
    return np.diff(target).tolist()


# --- events ----------------------------------------------------------------------------------


@dataclass
class Events:
    """One chunk's events as column arrays; user/item are codes into id dictionaries."""

    user: np.ndarray  # chunk-local user index; n_users_in_chunk means "" (empty id)
    item: np.ndarray  # index into Catalog.ids
    ts: np.ndarray
    etype: np.ndarray
    weight: np.ndarray


def chunk_events(
    cfg: GenerateConfig,
    cat: Catalog,
    counts: np.ndarray,
    regions: np.ndarray,
    rng: np.random.Generator,
) -> Events:
    """Events of the users in one chunk (counts/regions are that chunk's slices)."""
    import numpy as np

    n_users = len(counts)
    user = np.repeat(np.arange(n_users), counts)
    n = len(user)
    if n == 0:  # sparse data: a whole chunk of users without events
        empty = np.zeros(0, dtype=np.int64)
        return Events(empty, empty.copy(), empty.copy(), empty.copy(), np.zeros(0))

    taste = _tastes(cat, rng, n_users)
    genre = _draw_rows(taste, user, rng.random(n))
    item = cat.genre_items[_draw(cat.genre_cdf, genre + rng.random(n))]
    explore = rng.random(n) < EXPLORE_SHARE
    item[explore] = _draw(cat.popularity_cdf, rng.random(int(explore.sum())))
    genre[explore] = cat.genres[item[explore], 0]

    # Respect regional availability: redraw from items that are available everywhere.
    blocked = ~cat.available[item, regions[user]]
    item[blocked] = cat.open_items[_draw(cat.open_cdf, rng.random(int(blocked.sum())))]
    genre[blocked] = cat.genres[item[blocked], 0]

    etype = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_PROBS)
    ts, order = _session_times(cfg, rng, counts, user)
    user, item, genre, etype = user[order], item[order], genre[order], etype[order]
    _revisit(rng, user, ts, item, genre, etype)
    _untie(rng, cat, user, ts, item, genre, etype)

    weight = np.asarray(EVENT_WEIGHTS)[etype]
    rated = etype == RATING
    affinity = taste[user[rated], genre[rated]] / taste.max(axis=1)[user[rated]]
    stars = np.rint(rng.normal(2.6 + 2.5 * affinity, 0.9))
    weight[rated] = np.clip(stars, 1.0, 5.0)
    return Events(user, item, ts, etype, weight)


def hidden_tastes(cfg: GenerateConfig, cat: Catalog | None = None) -> np.ndarray:
    """The (n_users, n_genres) taste matrix `generate(cfg)` drew its events from.

    The ground truth the traffic simulator (batch/simulate) plays users by: each chunk's
    random stream is replayed up to the taste draw, the first thing a chunk draws, so the
    matrix is the generator's own without writing anything. Users of a chunk with no events
    drew no taste: they get the genre prevalence, as `_tastes` falls back to.
    """
    import numpy as np

    cat = cat if cat is not None else build_catalog(cfg)
    counts, _ = user_activity(cfg)
    rows = []
    for index, (lo, hi) in enumerate(user_chunks(counts)):
        if int(counts[lo:hi].sum()) == 0:
            rows.append(np.tile(cat.genre_prevalence, (hi - lo, 1)))
            continue
        rows.append(_tastes(cat, _rng(cfg.seed, 2, index), hi - lo))
    return np.concatenate(rows) if rows else np.zeros((0, len(cat.genre_prevalence)))


def user_ids(cfg: GenerateConfig) -> list[str]:
    """The user ids `generate(cfg)` writes, in user order (the rows of hidden_tastes)."""
    width = len(str(cfg.n_users - 1))
    return [f"u{k:0{width}d}" for k in range(cfg.n_users)]


def _tastes(cat: Catalog, rng: np.random.Generator, n_users: int) -> np.ndarray:
    """Per-user genre distribution, concentrated on a few genres, none on empty genres."""
    import numpy as np

    prevalence = cat.genre_prevalence
    alpha = np.maximum(TASTE_CONCENTRATION * prevalence * len(prevalence), 1e-3)
    taste = rng.dirichlet(alpha, size=n_users) * (prevalence > 0)
    total = taste.sum(axis=1, keepdims=True)
    # Underflow can zero a whole row when alpha is tiny: fall back to the prevalence.
    return np.where(total > 0, taste / np.where(total > 0, total, 1.0), prevalence)


def _draw_rows(probs: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each event, a column index drawn from probs[row[event]] (all rows at once).

    Row r's CDF is shifted by r, so one searchsorted over the flattened matrix serves every
    row; no per-user Python loop.
    """
    import numpy as np

    n_rows, n_cols = probs.shape
    cdf = probs.cumsum(axis=1)
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, row + u, side="right")
    return np.minimum(pos - row * n_cols, n_cols - 1)


def _session_times(
    cfg: GenerateConfig, rng: np.random.Generator, counts: np.ndarray, user: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps clustered in sessions; returns (ts, order) with ts already in `order`.

    `order` sorts events by (user, time) and must be applied to the other columns.
    """
    import numpy as np

    n_users, n = len(counts), len(user)
    window = cfg.end_ts - cfg.start_ts + 1
    n_sess = 1 + rng.binomial(np.maximum(counts - 1, 0), 1.0 / EVENTS_PER_SESSION)
    sess_base = np.r_[0, np.cumsum(n_sess)[:-1]]
    session = sess_base[user] + (rng.random(n) * n_sess[user]).astype(np.int64)

    # Users join at some point of the window and are active from then on.
    # Joins cluster early (u^2), so the platform grows but early months aren't empty.
    join = cfg.start_ts + (rng.random(n_users) ** 2 * 0.7 * window).astype(np.int64)
    sess_user = np.repeat(np.arange(n_users), n_sess)
    span = cfg.end_ts - join[sess_user]
    start = join[sess_user] + (rng.random(len(sess_user)) * span).astype(np.int64)
    hour = rng.choice(24, size=len(start), p=np.asarray(HOURLY) / sum(HOURLY))
    start = start - start % DAY + hour * 3600 + rng.integers(0, 3600, size=len(start))

    by_session = np.argsort(session, kind="stable")
    sess_sorted = session[by_session]
    gaps = 1 + rng.exponential(MEAN_GAP_S, size=n).astype(np.int64)
    first = np.r_[True, sess_sorted[1:] != sess_sorted[:-1]]
    gaps[first] = 0
    cum = np.cumsum(gaps)
    offset = cum - np.maximum.accumulate(np.where(first, cum, 0))
    last = np.r_[first[1:], True]
    duration = np.zeros(len(start), dtype=np.int64)
    duration[sess_sorted[last]] = offset[last]
    # Slide sessions so they fit the window: nothing after end-date, nothing before start.
    start = np.clip(start, cfg.start_ts, cfg.end_ts - duration)
    ts_sorted = start[sess_sorted] + offset

    order = np.lexsort((ts_sorted, user[by_session]))
    return ts_sorted[order], by_session[order]


def _revisit(
    rng: np.random.Generator,
    user: np.ndarray,
    ts: np.ndarray,
    item: np.ndarray,
    genre: np.ndarray,
    etype: np.ndarray,
) -> None:
    """In place: some events repeat the user's previous item (view -> click -> purchase).

    Only a one-step look-back (vectorised); chains arise when consecutive events repeat.
    """
    import numpy as np

    if len(user) < 2:
        return
    # Same user and a later second: never creates an exact (user, item, ts, type) duplicate,
    # which the pipeline would quarantine.
    follows = (user[1:] == user[:-1]) & (ts[1:] > ts[:-1])
    again = np.r_[False, follows & (rng.random(len(user) - 1) < REVISIT_SHARE)]
    src = np.flatnonzero(again) - 1
    item[again] = item[src]
    genre[again] = genre[src]
    convert = again & (etype == VIEW) & (rng.random(len(user)) < REVISIT_CLICK_SHARE)
    etype[convert] = CLICK


def _untie(
    rng: np.random.Generator,
    cat: Catalog,
    user: np.ndarray,
    ts: np.ndarray,
    item: np.ndarray,
    genre: np.ndarray,
    etype: np.ndarray,
) -> None:
    """In place: make (user, item, ts, event_type) unique, as the pipeline dedupes on it.

    Overlapping sessions of heavy users put ~1 in 10k events on the same second as another
    event of that user; when the item and type also match, redraw the item. Rows are sorted
    by (user, ts), so only the few rows in tied runs need a (Python-level) look.
    """
    import numpy as np

    tie = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    seen: set[tuple[int, int, int, int]] = set()
    for i in np.flatnonzero(np.r_[tie, False] | np.r_[False, tie]).tolist():
        for attempt in range(20):
            key = (int(user[i]), int(ts[i]), int(item[i]), int(etype[i]))
            if key not in seen:
                break
            if attempt >= 10:  # tiny catalogues: vary the event type instead
                etype[i] = (etype[i] + 1) % len(EVENT_TYPES)
            else:
                item[i] = cat.open_items[_draw(cat.open_cdf, rng.random(1))[0]]
                genre[i] = cat.genres[item[i], 0]
        seen.add(key)


def inject_bad(
    cfg: GenerateConfig,
    cat: Catalog,
    ev: Events,
    n_bad: int,
    empty_user: int,
    rng: np.random.Generator,
) -> dict[str, int]:
    """In place: turn n_bad distinct rows into malformed ones, kinds in equal parts.

    `empty_user` is the user code that maps to the empty id in this chunk.
    """
    import numpy as np

    n = len(ev.ts)
    n_bad = min(n_bad, n // 2)  # duplicates need good rows to copy
    if n_bad == 0:
        return {}
    rows = rng.choice(n, size=n_bad, replace=False)
    kind = np.arange(n_bad) % len(BAD_KINDS)
    rng.shuffle(kind)
    ev.user[rows[kind == 0]] = empty_user
    ev.item[rows[kind == 1]] = cat.empty_code
    future = rows[kind == 2]
    # Years ahead, so they are future for any plausible pipeline run date, not only end-date.
    ev.ts[future] = cfg.end_ts + rng.integers(10 * 365 * DAY, 20 * 365 * DAY, size=len(future))
    dup = rows[kind == 3]
    good = np.setdiff1d(np.arange(n), rows, assume_unique=True)
    src = good[rng.integers(0, len(good), size=len(dup))]
    for col in (ev.user, ev.item, ev.ts, ev.etype, ev.weight):
        col[dup] = col[src]
    ghost = rows[kind == 4]
    ev.item[ghost] = cat.ghost_base + rng.integers(0, N_GHOST_ITEMS, size=len(ghost))
    return {name: int((kind == k).sum()) for k, name in enumerate(BAD_KINDS)}


# --- driver ----------------------------------------------------------------------------------


def generate(cfg: GenerateConfig) -> GenerateResult:
    """Write interactions/items/users.parquet and README.txt into cfg.out_dir."""
    import numpy as np

    cfg.validate()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cat = build_catalog(cfg)
    counts, regions = user_activity(cfg)
    chunks = user_chunks(counts)
    bad = bad_per_chunk(cfg, [int(counts[lo:hi].sum()) for lo, hi in chunks])

    result = GenerateResult(cfg, users_with_events=int((counts > 0).sum()))
    result.bad_by_kind = dict.fromkeys(BAD_KINDS, 0)
    touched = np.zeros(cat.n_items, dtype=bool)
    width = len(str(cfg.n_users - 1))
    region_names = np.asarray(cfg.regions, dtype=object)

    with (
        contract.parquet_writer(
            cfg.out_dir, contract.INTERACTIONS, contract.interactions_schema()
        ) as events_out,
        contract.parquet_writer(cfg.out_dir, contract.USERS, contract.users_schema()) as users_out,
    ):
        for index, ((lo, hi), n_bad) in enumerate(zip(chunks, bad, strict=True)):
            rng = _rng(cfg.seed, 2, index)
            user_ids = [f"u{k:0{width}d}" for k in range(lo, hi)]
            ev = chunk_events(cfg, cat, counts[lo:hi], regions[lo:hi], rng)
            for name, k in inject_bad(cfg, cat, ev, n_bad, hi - lo, rng).items():
                result.bad_by_kind[name] += k
            events_out.write_table(_events_table(ev, user_ids, cat))
            users_out.write_table(_users_table(user_ids, region_names[regions[lo:hi]]))
            _update_stats(result, cfg, cat, ev, touched)
    result.bad_rows = sum(result.bad_by_kind.values())
    result.items_with_events = int(touched.sum())
    contract.write_table(cfg.out_dir, contract.ITEMS, cat.table)
    contract.remove_stale(cfg.out_dir, keep=set(contract.CONTRACT_FILES))
    (cfg.out_dir / "README.txt").write_text(_readme(result), encoding="utf-8")
    return result


def _events_table(ev: Events, user_ids: list[str], cat: Catalog) -> pa.Table:
    import pyarrow as pa

    # Ids are looked up by code with Arrow's take: no Python string per event.
    users = pa.array([*user_ids, ""], pa.string())
    return pa.Table.from_arrays(
        [
            users.take(pa.array(ev.user)),
            cat.ids.take(pa.array(ev.item)),
            pa.array(ev.ts, pa.int64()),
            pa.array(EVENT_TYPES, pa.string()).take(pa.array(ev.etype)),
            pa.array(ev.weight, pa.float64()),
        ],
        schema=contract.interactions_schema(),
    )


def _users_table(user_ids: list[str], regions: np.ndarray) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_arrays(
        [pa.array(user_ids, pa.string()), pa.array(regions.tolist(), pa.string())],
        schema=contract.users_schema(),
    )


def _update_stats(
    result: GenerateResult, cfg: GenerateConfig, cat: Catalog, ev: Events, touched: np.ndarray
) -> None:
    result.rows += len(ev.ts)
    result.row_groups += 1
    touched[ev.item[ev.item < cat.n_items]] = True
    valid = ev.ts[ev.ts <= cfg.end_ts]
    if len(valid):
        lo, hi = int(valid.min()), int(valid.max())
        result.min_ts = lo if result.min_ts is None else min(result.min_ts, lo)
        result.max_ts = hi if result.max_ts is None else max(result.max_ts, hi)


def _readme(result: GenerateResult) -> str:
    cfg = result.config
    bad = ", ".join(f"{k}={v:,}" for k, v in result.bad_by_kind.items() if v) or "none"
    return (
        "Synthetic recommender data generated by `recsys data generate`.\n\n"
        f"Command: {cfg.command()}\n"
        f"Seed: {cfg.seed} (same options and seed -> identical Parquet content)\n"
        f"Window: {datetime.fromtimestamp(cfg.start_ts, tz=UTC).isoformat()} .. "
        f"{datetime.fromtimestamp(cfg.end_ts, tz=UTC).isoformat()} ({cfg.days} days)\n"
        f"Regions: {', '.join(cfg.regions)}\n\n"
        "Files (the data contract, see batch/data/contract.py):\n"
        f"  interactions.parquet  {result.rows:,} rows in {result.row_groups} row group(s)\n"
        f"  items.parquet         {cfg.n_items:,} items\n"
        f"  users.parquet         {cfg.n_users:,} users\n\n"
        f"Malformed rows (--bad-share {cfg.bad_share}): {result.bad_rows:,} ({bad})\n\n"
        f"Summary: {result.summary()}\n\n"
        "How it is generated: see the docstring of batch/data/generate.py (Zipf item\n"
        "popularity, Dirichlet genre tastes, power-law user activity, regional availability,\n"
        "sessions with a diurnal profile, view/click/rating/purchase events).\n"
    )
