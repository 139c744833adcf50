"""Contents checks on load (shared/bundle_contents.py): a bundle whose checksums match but
whose arrays are invalid is refused, with the file named.

Each test corrupts one file of a real factory bundle and re-signs the manifest (so the
checksums pass, as they did for the NaN bundle that reached production), then reads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from shared import bundle_layout as layout
from shared.bundle import GLOBAL_SEGMENT, run_dir
from shared.bundle_contents import (
    CSR_PART,
    FEATURE_RULES,
    FINITE,
    FINITE_OR_NAN,
    contents_problems,
)
from shared.bundle_reader import read_bundle
from shared.errors import BundleError
from shared.features import ARRAY_NAMES
from tests.online.bundle_factory import build_bundle, rewrite_array, rewrite_table
from tests.online.conftest import ADMIN_TOKEN, recommend

N_USERS, N_ITEMS = 40, 200  # the factory's defaults


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid factory bundle with a ranker (so features/ is there too)."""
    return build_bundle(tmp_path_factory.mktemp("pristine"), "run-x", with_ranker=True,
                        publish=False)  # fmt: skip


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine bundle, to corrupt."""
    target = run_dir(tmp_path, "run-x")
    shutil.copytree(pristine, target)
    return target


def refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as caught:
        read_bundle(bundle)
    message = str(caught.value)
    assert message.startswith("bundle run-x: "), message
    return message


def feature(name: str) -> str:
    return layout.feature_file(layout.FEATURE_ARRAY_FILES[name])


def test_the_pristine_bundle_is_accepted(pristine: Path) -> None:
    data = read_bundle(pristine)
    assert contents_problems(data) == []
    # NaN in the candidate arrays means "source did not propose the item": it is there,
    # and accepted.
    assert np.isnan(data.candidates.scores).any() and np.isnan(data.candidates.ranks).any()
    assert data.features is not None


def test_all_nan_user_factors_are_refused(client: FlaskClient, artifacts: Path) -> None:
    """The production defect: re-signed NaN user factors were accepted and served.

    As in that bundle, the first user of users.parquet (the one the smoke query scores) has
    no published list, so the smoke query had no candidate to score (the ANN search of a
    NaN vector finds nothing) and passed."""
    run_b = build_bundle(artifacts, "run-b", seed=1)

    def listless_user_first(table: pa.Table) -> pa.Table:
        return table.take(np.arange(len(table))[::-1])  # the factory's last user has no list

    def all_nan(a: np.ndarray) -> None:
        a[:] = np.nan

    rewrite_table(run_b, layout.USERS, listless_user_first)
    rewrite_array(run_b, layout.USER_FACTORS, all_nan)
    resp = client.post("/admin/reload", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert resp.status_code == 409
    body = resp.get_json()
    assert body["status"] == "refused" and body["serving"] == "run-a"
    assert f"bundle run-b: {layout.USER_FACTORS}: {N_USERS} of {N_USERS} rows not finite" in body["error"]
    assert recommend(client, user_id="u1")["bundle"] == "run-a"


def test_a_non_finite_item_factor_row_is_refused(bundle: Path) -> None:
    def one_inf(a: np.ndarray) -> None:
        a[7, 3] = np.inf

    rewrite_array(bundle, layout.ITEM_FACTORS, one_inf)
    assert f"{layout.ITEM_FACTORS}: 1 of {N_ITEMS} rows not finite" in refusal(bundle)


CSR_FILES = {
    "seen": (layout.SEEN_INDPTR, layout.SEEN_INDICES),
    "rec": (layout.REC_INDPTR, layout.REC_ITEMS),
    "candidate": (layout.CANDIDATE_INDPTR, layout.CANDIDATE_ITEMS),
    "neighbor": (feature("neighbor_indptr"), feature("neighbor_indices")),
    "recent": (feature("recent_indptr"), feature("recent_indices")),
}


@pytest.mark.parametrize("csr", sorted(CSR_FILES))
def test_an_indptr_not_starting_at_zero_is_refused(bundle: Path, csr: str) -> None:
    indptr, _ = CSR_FILES[csr]

    def start_at_one(a: np.ndarray) -> None:
        a[0] = 1

    rewrite_array(bundle, indptr, start_at_one)
    assert f"{indptr}: starts at 1, not 0" in refusal(bundle)


@pytest.mark.parametrize("csr", sorted(CSR_FILES))
def test_a_decreasing_indptr_is_refused(bundle: Path, csr: str) -> None:
    indptr, _ = CSR_FILES[csr]

    def decrease(a: np.ndarray) -> None:
        assert a[2] > a[1] > 0
        a[2] = a[1] - 1  # row 1 gets a negative length

    rewrite_array(bundle, indptr, decrease)
    assert f"{indptr}: decreases: 1 rows of negative length (first: row 1)" in refusal(bundle)


@pytest.mark.parametrize("csr", ["seen", "neighbor", "recent"])
def test_an_indptr_not_ending_at_its_indices_length_is_refused(bundle: Path, csr: str) -> None:
    indptr, indices = CSR_FILES[csr]
    n = len(np.load(bundle / indices))

    def end_short(a: np.ndarray) -> None:
        a[-1] -= 1

    rewrite_array(bundle, indptr, end_short)
    assert f"{indptr}: ends at {n - 1}, {indices} has {n} rows" in refusal(bundle)


@pytest.mark.parametrize("csr", ["rec", "candidate"])
def test_list_and_candidate_indptr_ends_are_refused_by_their_loaders(
    bundle: Path, csr: str
) -> None:
    """rec_* and candidate_* have checked their end since they exist; still refused."""
    indptr, _ = CSR_FILES[csr]

    def end_short(a: np.ndarray) -> None:
        a[-1] -= 1

    rewrite_array(bundle, indptr, end_short)
    assert "arrays disagree" in refusal(bundle)


ITEM_ID_FILES = [
    layout.SEEN_INDICES,
    layout.REC_ITEMS,
    layout.CANDIDATE_ITEMS,
    feature("neighbor_indices"),
    feature("recent_indices"),
]


@pytest.mark.parametrize("name", ITEM_ID_FILES)
def test_item_ids_outside_the_catalogue_are_refused(bundle: Path, name: str) -> None:
    n = len(np.load(bundle / name))

    def past_the_end(a: np.ndarray) -> None:
        a[-1] = N_ITEMS  # the last row: no order within a user is broken
        a[0] = -1 if name != layout.CANDIDATE_ITEMS else a[0]

    rewrite_array(bundle, name, past_the_end)
    bad = 1 if name == layout.CANDIDATE_ITEMS else 2
    assert f"{name}: {bad} of {n} item ids outside [0, {N_ITEMS})" in refusal(bundle)


def test_popular_items_outside_the_catalogue_are_refused(bundle: Path) -> None:
    def past_the_end(table: pa.Table) -> pa.Table:
        items = table.column("item_idx").to_numpy().copy()
        items[0] = N_ITEMS + 5
        return table.set_column(table.schema.get_field_index("item_idx"), "item_idx",
                                pa.array(items, table.schema.field("item_idx").type))  # fmt: skip

    rewrite_table(bundle, layout.POPULAR, past_the_end)
    segment = pq_first_segment(bundle)
    assert f"{layout.POPULAR} segment {segment}: 1 of 50 item ids outside [0, {N_ITEMS})" in (
        refusal(bundle)
    )


def pq_first_segment(bundle: Path) -> str:
    return str(pq.read_table(bundle / layout.POPULAR).column("segment")[0].as_py())


def test_list_items_missing_from_the_catalogue_are_refused(bundle: Path) -> None:
    """A gap in items.parquet is a valid catalogue, but a list may not serve the gap."""
    listed = int(np.load(bundle / layout.REC_ITEMS)[0])
    assert listed != N_ITEMS - 1  # removing the last row would shrink the catalogue
    times = int((np.load(bundle / layout.REC_ITEMS) == listed).sum())

    def drop_item(table: pa.Table) -> pa.Table:
        return table.filter(pc.not_equal(table.column("item_idx"), listed))

    rewrite_table(bundle, layout.ITEMS, drop_item)
    message = refusal(bundle)
    n = len(np.load(bundle / layout.REC_ITEMS))
    assert f"{layout.REC_ITEMS}: {times} of {n} item ids name no item of {layout.ITEMS}" in message


def test_candidate_items_out_of_order_within_a_user_are_refused(bundle: Path) -> None:
    def swap_first_two(a: np.ndarray) -> None:
        a[0], a[1] = a[1], a[0]

    rewrite_array(bundle, layout.CANDIDATE_ITEMS, swap_first_two)
    assert (
        f"{layout.CANDIDATE_ITEMS}: 1 items not above the previous one within their user "
        "(first in row 0)"
    ) in refusal(bundle)


def test_non_finite_list_scores_are_refused(bundle: Path) -> None:
    n = len(np.load(bundle / layout.REC_SCORES))

    def two_bad(a: np.ndarray) -> None:
        a[3], a[10] = np.nan, -np.inf

    rewrite_array(bundle, layout.REC_SCORES, two_bad)
    assert f"{layout.REC_SCORES}: 2 of {n} scores not finite" in refusal(bundle)


def test_non_finite_popular_scores_are_refused(bundle: Path) -> None:
    def nan_score(table: pa.Table) -> pa.Table:
        scores = table.column("score").to_numpy().astype(np.float64)
        segments = table.column("segment").to_pylist()
        scores[segments.index(GLOBAL_SEGMENT)] = np.nan
        return table.set_column(table.schema.get_field_index("score"), "score",
                                pa.array(scores, table.schema.field("score").type))  # fmt: skip

    rewrite_table(bundle, layout.POPULAR, nan_score)
    assert f"{layout.POPULAR} segment {GLOBAL_SEGMENT}: 1 of 50 scores not finite" in refusal(bundle)


def test_foreign_source_bits_are_refused(bundle: Path) -> None:
    n = len(np.load(bundle / layout.REC_SOURCES))

    def service_bit(a: np.ndarray) -> None:
        a[0] |= 1 << 5  # "caller": a bit only the service sets

    rewrite_array(bundle, layout.REC_SOURCES, service_bit)
    assert f"{layout.REC_SOURCES}: 1 of {n} masks set bits of no batch source" in refusal(bundle)


def _absent_cell(bundle: Path) -> tuple[int, int]:
    """A (row, source) the factory left absent (NaN score and rank)."""
    scores = np.load(bundle / layout.CANDIDATE_SCORES)
    rows, cols = np.nonzero(np.isnan(scores))
    return int(rows[0]), int(cols[0])


CANDIDATE_BREAKS: dict[str, tuple[str, Callable[[np.ndarray, tuple[int, int]], None], str]] = {
    # name: (file changed, change at a cell, expected problem)
    "score without rank": (
        layout.CANDIDATE_SCORES, lambda a, cell: a.__setitem__(cell, 0.5),
        "1 scores without a rank and 0 ranks without a score",
    ),
    "rank without score": (
        layout.CANDIDATE_RANKS, lambda a, cell: a.__setitem__(cell, 3.0),
        "0 scores without a rank and 1 ranks without a score",
    ),
    "infinite score": (
        layout.CANDIDATE_SCORES, lambda a, cell: a.__setitem__((0, 0), np.inf),
        f"{layout.CANDIDATE_SCORES}: 1 of",
    ),
    "rank zero": (
        layout.CANDIDATE_RANKS, lambda a, cell: a.__setitem__((0, 0), 0.0),
        f"{layout.CANDIDATE_RANKS}: 1 of",
    ),
    "infinite rank": (
        layout.CANDIDATE_RANKS, lambda a, cell: a.__setitem__((1, 0), np.inf),
        f"{layout.CANDIDATE_RANKS}: 1 of",
    ),
}


@pytest.mark.parametrize("case", sorted(CANDIDATE_BREAKS))
def test_invalid_candidate_scores_and_ranks_are_refused(bundle: Path, case: str) -> None:
    name, change, expected = CANDIDATE_BREAKS[case]
    cell = _absent_cell(bundle)
    rewrite_array(bundle, name, lambda a: change(a, cell))
    message = refusal(bundle)
    assert expected in message, message


@pytest.mark.parametrize("name", sorted(n for n, rule in FEATURE_RULES.items() if rule == FINITE))
def test_non_finite_feature_arrays_are_refused(bundle: Path, name: str) -> None:
    file = feature(name)
    rows = len(np.load(bundle / file))

    def one_nan(a: np.ndarray) -> None:
        a.reshape(-1)[-1] = np.nan

    rewrite_array(bundle, file, one_nan)
    assert f"{file}: 1 of {rows} rows not finite" in refusal(bundle)


@pytest.mark.parametrize("name", sorted(n for n, r in FEATURE_RULES.items() if r == FINITE_OR_NAN))
def test_feature_times_may_be_nan_but_not_infinite(bundle: Path, name: str) -> None:
    file = feature(name)
    rows = len(np.load(bundle / file))

    def never(a: np.ndarray) -> None:
        a[0] = np.nan  # "never interacted": valid

    rewrite_array(bundle, file, never)
    read_bundle(bundle)

    def infinite(a: np.ndarray) -> None:
        a[1, 1] = np.inf

    rewrite_array(bundle, file, infinite)
    assert f"{file}: 1 of {rows} rows infinite" in refusal(bundle)


def test_every_feature_array_has_a_rule() -> None:
    """A feature array added to shared.features must say how it is checked."""
    assert set(FEATURE_RULES) == set(ARRAY_NAMES)
    assert set(FEATURE_RULES.values()) <= {FINITE, FINITE_OR_NAN, CSR_PART}


@pytest.mark.parametrize(("table", "column"), [(layout.ITEMS, "item_idx"), (layout.USERS, "user_idx")])
def test_repeated_and_negative_table_indices_are_refused(
    bundle: Path, table: str, column: str
) -> None:
    def break_index(t: pa.Table) -> pa.Table:
        idx = t.column(column).to_numpy().copy()
        idx[1] = idx[0]  # a repeat
        idx[2] = -3
        return t.set_column(t.schema.get_field_index(column), column,
                            pa.array(idx, t.schema.field(column).type))  # fmt: skip

    rewrite_table(bundle, table, break_index)
    message = refusal(bundle)
    assert f"{table}: 1 negative {column}" in message and f"{table}: 1 duplicate {column}" in message


def test_every_problem_is_reported_at_once(bundle: Path) -> None:
    def all_nan(a: np.ndarray) -> None:
        a[:] = np.nan

    rewrite_array(bundle, layout.USER_FACTORS, all_nan)
    rewrite_array(bundle, layout.ITEM_FACTORS, all_nan)
    message = refusal(bundle)
    assert f"{layout.USER_FACTORS}: {N_USERS} of {N_USERS} rows not finite" in message
    assert f"{layout.ITEM_FACTORS}: {N_ITEMS} of {N_ITEMS} rows not finite" in message
