"""Seconds and worker memory to load a bundle's per-user tables, as a service worker does.

    .venv/bin/python bench/bundle_load.py BUNDLE_DIR [--code OTHER_CHECKOUT] [--rounds 2]

Each part loads in a fresh process (peak RSS is per process): `lists` (the precomputed lists
behind fallback and the full path's batch candidates) and `features` (the ranker's
per-candidate source scores and ranks). With --code, the same parts are loaded with another
checkout's `online/` package too (an older version, to compare side by side in one run:
older bundle readers take the tables from the Parquet files, which every bundle still has).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
import pyarrow.parquet as pq
bundle, part = Path(sys.argv[2]), sys.argv[3]
try:  # this checkout: the readers of shared/ (file names in shared/bundle_layout.py)
    from shared import bundle_layout
    users_file = bundle_layout.USERS
except ImportError:  # older checkouts
    bundle_layout = None
    users_file = "users.parquet"
n_users = pq.read_metadata(bundle / users_file).num_rows
started = time.perf_counter()
if part == "lists" and bundle_layout is not None:
    from shared.recommendation_arrays import RecommendationArrays
    loaded = RecommendationArrays.load(bundle, n_users)
elif part == "lists":
    import inspect
    from online.bundle_loader import _load_recommendations
    # Older readers take the Parquet file, newer ones the bundle directory.
    first = next(iter(inspect.signature(_load_recommendations).parameters))
    arg = bundle / "recommendations.parquet" if first == "path" else bundle
    loaded = _load_recommendations(arg, n_users)
elif bundle_layout is not None:
    from shared.candidate_arrays import CandidateArrays
    from shared.feature_arrays import load_feature_arrays
    factors = tuple(np.load(bundle / f, mmap_mode="r")
                    for f in (bundle_layout.ITEM_FACTORS, bundle_layout.USER_FACTORS))
    loaded = load_feature_arrays(bundle / bundle_layout.FEATURES_DIR, factors=factors)
    CandidateArrays.load(bundle).lookup(0, np.arange(100))
else:
    from online.ranker_features import RankerFeatures
    loaded = RankerFeatures(bundle)
    loaded.source_matrices(0, np.arange(100))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(peak)}))
"""


def probe(code: Path, bundle: Path, part: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(code), str(bundle), part],
        capture_output=True, text=True, check=True, cwd="/tmp",
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--code", type=Path, default=None, help="another checkout to compare")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    checkouts = {"this": REPO, **({"other": args.code} if args.code else {})}
    for round_no in range(1, args.rounds + 1):
        for part in ("lists", "features"):
            for name, code in checkouts.items():  # interleaved: side by side in one run
                got = probe(code, args.bundle.resolve(), part)
                print(f"round {round_no} {part:8s} {name:5s} {got['seconds']:7.2f} s "
                      f"peak RSS {got['peak_rss_mib']:6.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
