"""Time and memory of the EASE solve (shared.ease.solve: float32 LU inverse through numpy)
at a few sizes N, on a Gram of a synthetic long-tailed user x item matrix.

    nice -n 19 env PYTHONPATH=. .venv/bin/python bench/ease_solve.py --sizes 1000 2000 4000 8000 \
        --repeats 3 --out bench/results/ease_solve.json

Prints one line per size: the median of `repeats` solves, and the bytes of the two N x N
float32 matrices the solve holds (the input copy and the inverse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from shared import ease


def synthetic_gram(n: int, users: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n + 1) ** 0.8  # long-tailed, as item counts are
    popularity /= popularity.sum()
    cols = [rng.choice(n, size=min(n, int(rng.integers(5, 200))), replace=False, p=popularity)
            for _ in range(users)]
    return ease.gram_matrix(cols, n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--lam", type=float, default=400.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        gram = synthetic_gram(n, args.users)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ease.solve(gram, args.lam)
            times.append(time.perf_counter() - start)
        row = {"n": n, "median_seconds": round(statistics.median(times), 2),
               "seconds": [round(t, 2) for t in times], "matrix_bytes": 4 * n * n,
               "peak_matrices": 2}
        rows.append(row)
        print(f"N={n}: median {row['median_seconds']} s over {args.repeats}, "
              f"{2 * 4 * n * n / 2**30:.2f} GiB for two float32 N x N", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"repeats": args.repeats, "lambda": args.lam,
                                        "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
