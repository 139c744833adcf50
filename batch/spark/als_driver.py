"""Implicit ALS on one machine with the `implicit` library (native, conjugate gradient).

The model is Spark MLlib's implicit ALS (Hu, Koren, Volinsky 2008): preference 1 on every
observed (user, item), confidence 1 + alpha * count. Two conventions differ between the
libraries and are mapped here:

  * confidence: `implicit` takes the matrix's value as the confidence itself (its `alpha`
    only multiplies the matrix), so the matrix holds 1 + alpha * count and its alpha is 1;
  * regularisation: Spark scales reg_param by each user's/item's number of ratings
    (ALS-WR), `implicit` uses one constant: `AlsConfig.driver_reg_param`, chosen by
    measured quality (docs/benchmarks.md, "ALS engines").

Deterministic: the initial factors come from `random_state=seed`, the matrix is built in
canonical order (sorted rows and columns), BLAS runs one thread during the fit (the Gram
matrices are the only reductions across rows), and each row's solve is done by one thread
in a fixed order, so the thread count does not change a bit of the result.

No pyspark here: batch/spark/als.py collects the matrix and writes the factors back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from shared.config import AlsConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverFactors:
    """Factors of the users and items that have at least one rating (as Spark returns)."""

    user_idx: np.ndarray  # int32 [n_users], ascending
    user_vectors: np.ndarray  # float32 [n_users, rank]
    item_idx: np.ndarray  # int32 [n_items], ascending
    item_vectors: np.ndarray  # float32 [n_items, rank]


def confidence_matrix(user_idx: np.ndarray, item_idx: np.ndarray, counts: np.ndarray,
                      alpha: float) -> sp.csr_matrix:
    """users x items CSR of 1 + alpha * count, rows sized by the largest index (stable ids
    may have gaps: a row with no rating is simply empty). One entry per (user, item)."""
    shape = (int(user_idx.max()) + 1, int(item_idx.max()) + 1) if len(user_idx) else (0, 0)
    values = (1.0 + alpha * counts.astype(np.float64)).astype(np.float32)
    matrix = sp.csr_matrix((values, (user_idx.astype(np.int32), item_idx.astype(np.int32))),
                           shape=shape, dtype=np.float32)  # fmt: skip
    matrix.sum_duplicates()  # sorts the columns of each row too: canonical, whatever the input order
    return matrix


def fit(user_idx: np.ndarray, item_idx: np.ndarray, counts: np.ndarray, config: AlsConfig,
        threads: int) -> DriverFactors:
    """Fits rank/max_iter/alpha/seed of `config` on (user, item, count) triples."""
    # Imported here: importing implicit probes the BLAS thread pools and warns when they
    # have more than one thread, which only matters when a fit runs.
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = confidence_matrix(user_idx, item_idx, counts, config.alpha)
    # OpenBLAS's own threads make implicit's fit much slower (its docs, measured here too)
    # and would split the Gram matrix sums differently from run to run.
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=config.rank, regularization=config.driver_reg_param, alpha=1.0,
            dtype=np.float32, use_native=True, use_cg=True, iterations=config.max_iter,
            calculate_training_loss=False, num_threads=threads, random_state=config.seed,
        )  # fmt: skip
        model.fit(matrix, show_progress=False)
    users = np.flatnonzero(np.diff(matrix.indptr)).astype(np.int32)
    items = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1])).astype(np.int32)
    user_vectors = np.ascontiguousarray(model.user_factors[users], dtype=np.float32)
    item_vectors = np.ascontiguousarray(model.item_factors[items], dtype=np.float32)
    return DriverFactors(users, user_vectors, items, item_vectors)


def memory_bytes(ratings: int, users: int, items: int, rank: int) -> int:
    """What a driver fit holds at its peak, as an estimate for the `auto` budget: the
    collected triples (Arrow, then numpy: 12 bytes a rating each), the CSR, scipy's COO on
    the way to it and the transpose implicit makes (8 bytes a rating each), and the factors
    with their solver's work arrays (float32, about 3 copies)."""
    return ratings * (2 * 12 + 3 * 8) + (users + items) * rank * 4 * 3
