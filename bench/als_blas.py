"""Spark MLlib ALS on native BLAS (netlib JNIBLAS over the system libblas.so.3, e.g. Debian's
OpenBLAS) against pure-Java BLAS, side by side: rank-64 implicit ALS, 10 iterations, over a
synthetic 500k-rating matrix, each variant in its own Spark driver (BLAS is chosen once per
JVM), rounds interleaved, median fit time.

    PYTHONPATH=. .venv/bin/python bench/als_blas.py --rounds 2 --out bench/results/als_blas.json

Java BLAS is forced by pointing netlib at a library that does not exist
(-Ddev.ludovic.netlib.blas.nativeLib=...), the fallback a machine without libblas.so.3 gets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time
import numpy as np
from pyspark.sql import SparkSession
from pyspark.ml.recommendation import ALS
from batch.spark import blas
blas.set_single_threaded()
opts = sys.argv[1]
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "4g").config("spark.driver.extraJavaOptions", opts)
         .config("spark.sql.shuffle.partitions", "4").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
rng = np.random.default_rng(7)
n = int(sys.argv[2])
users = rng.integers(0, 20_000, n); items = (rng.zipf(1.3, n) - 1) % 5_000
df = spark.createDataFrame(
    [(int(u), int(i), 1.0) for u, i in zip(users, items)], "user_idx INT, item_idx INT, strength FLOAT"
).groupBy("user_idx", "item_idx").sum("strength").withColumnRenamed("sum(strength)", "strength").cache()
df.count()
als = ALS(rank=64, maxIter=10, regParam=0.05, alpha=10.0, implicitPrefs=True, userCol="user_idx",
          itemCol="item_idx", ratingCol="strength", seed=1, numUserBlocks=2, numItemBlocks=2)
t = time.perf_counter(); model = als.fit(df); model.userFactors.count(); fit = time.perf_counter() - t
print(json.dumps({"fit_seconds": round(fit, 2), "ratings": df.count(), **blas.loaded_blas(spark)}))
spark.stop()
"""

VARIANTS = {
    "native (JNIBLAS)": "",
    "java": "-Ddev.ludovic.netlib.blas.nativeLib=libnonexistent-blas.so",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ratings", type=int, default=500_000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/als_blas.json"))
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    runs: dict[str, list[dict[str, object]]] = {v: [] for v in VARIANTS}
    started = time.monotonic()
    for _ in range(args.rounds):
        for name, opts in VARIANTS.items():
            done = subprocess.run([sys.executable, "-c", CHILD, opts, str(args.ratings)], env=env,
                                  capture_output=True, text=True, check=True, timeout=1800)  # fmt: skip
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    med = {name: statistics.median(float(r["fit_seconds"]) for r in rs) for name, rs in runs.items()}  # type: ignore[arg-type]
    result = {"rounds": args.rounds, "ratings_requested": args.ratings, "runs": runs,
              "median_fit_seconds": med,
              "java_over_native": round(med["java"] / med["native (JNIBLAS)"], 2),
              "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("median_fit_seconds", "java_over_native")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
