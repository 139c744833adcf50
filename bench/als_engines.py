"""The two ALS engines side by side (AlsConfig.engine, batch/spark/als.py): `spark` (MLlib on
the executors) and `driver` (the `implicit` library on the driver), in one sitting.

    PYTHONPATH=. .venv/bin/python bench/als_engines.py --root /tmp/h3 \
        --parts sweep,fit,quality --fit-sets 1m,5m,20m --quality-sets mls,1m \
        --out bench/results/als_engines.json

Parts (each adds its key to --out, the others are kept):
  * sweep: the driver engine's regularisation (implicit's is one constant; Spark's is scaled
    by each user's/item's ratings, ALS-WR), chosen by nDCG@10 of the ALS factors alone
    (top 10 unseen items by dot product) on a seeded random 25 % of the (user, item) pairs
    held out, against Spark's reg 0.05 on the same split (`--sweep-driver-only`: without it);
  * fit: one fit of the `full` variant's matrix (every interaction of the set, indexed
    densely once and cached as Parquet under --root) per engine, each in its own driver
    process (local[2], 8g heap), wall time of train_als plus writing both factor tables
    as the stage does, and the peak RSS of the process tree (Python + JVM) sampled 4x a
    second; `--rounds` repeats, medians reported;
  * quality: `recsys batch run` per engine with {"als": {"engine": E}} and nothing else,
    nDCG@10 of the `ann` source and of the published lists from the bundle's metrics.json.

Sets: mls = ml-latest-small (imported from ../shared), 1m/5m/20m = `recsys data generate
--seed 1` with bench/pipeline_bench.py's sizes; the 20m fit uses max_iter 8 as
bench/configs/scale.json does, every other fit the default config.
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

# One BLAS thread, set before numpy loads OpenBLAS: its spinning threads on a loaded 2-core
# machine made the evaluation's matrix-vector products crawl (and implicit warns).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.pipeline_bench import SETS, prepare, tree_rss  # noqa: E402

PY = sys.executable
RECSYS = str(Path(PY).parent / "recsys")
ENGINES = ("spark", "driver")

FIT_CHILD = r"""
import json, sys, time
from pyspark.sql import SparkSession
from batch.spark import als, blas
from shared.config import AlsConfig
blas.set_single_threaded()
src, out, engine, max_iter = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "8g").config("spark.sql.shuffle.partitions", "8")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.sql.adaptive.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
spark.sparkContext.setCheckpointDir(out + "/checkpoint")
df = spark.read.parquet(src)
df.count()
t = time.perf_counter()
fit = als.train_als(df, AlsConfig(engine=engine, max_iter=max_iter))
fit.users.orderBy("user_idx").coalesce(2).write.mode("overwrite").parquet(out + "/users")
fit.items.orderBy("item_idx").coalesce(1).write.mode("overwrite").parquet(out + "/items")
wall = time.perf_counter() - t
print(json.dumps({"seconds": round(wall, 2), **fit.info, **blas.loaded_blas(spark)}))
spark.stop()
"""


def run_sampled(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, int, int]:
    """(stdout, peak RSS of the process tree, return code)."""
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc, peak, started = psutil.Process(child.pid), 0, time.monotonic()
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        if time.monotonic() - started > timeout:
            child.kill()
        time.sleep(0.25)
    assert child.stdout is not None
    return child.stdout.read(), peak, child.returncode


def indexed(name: str, root: Path) -> Path:
    """The set's interactions as dense (user_idx, item_idx), what the `full` variant trains on
    (generated sets have no bad rows, so validate keeps them all)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = root / f"indexed-{name}.parquet"
    if not out.exists():
        data, _ = prepare(name, root)
        src = data / "interactions.parquet"
        table = pq.read_table(src if src.exists() else data / "interactions", columns=["user_id", "item_id"])
        users = table.column("user_id").to_pandas().astype("category").cat.codes.to_numpy(np.int32)
        items = table.column("item_id").to_pandas().astype("category").cat.codes.to_numpy(np.int32)
        pq.write_table(pa.table({"user_idx": users, "item_idx": items}), out)
    return out


def spark_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": PY, "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip


def part_fit(sets: list[str], root: Path, rounds: int, skip_spark: set[str]) -> dict[str, object]:
    results: dict[str, object] = {}
    for name in sets:
        src = indexed(name, root)
        max_iter = 8 if name == "20m" else 12
        runs: dict[str, list[dict[str, object]]] = {e: [] for e in ENGINES if not (e == "spark" and name in skip_spark)}
        for _ in range(rounds):
            for engine in runs:
                out = root / f"fit-{name}-{engine}"
                cmd = [PY, "-c", FIT_CHILD, str(src), str(out), engine, str(max_iter)]
                stdout, peak, rc = run_sampled(cmd, spark_env(), timeout=3600)
                run = json.loads(stdout.strip().splitlines()[-1]) if rc == 0 else {"returncode": rc}
                run["peak_rss_gb"] = round(peak / 2**30, 2)
                runs[engine].append(run)
                print(name, engine, run, flush=True)
                subprocess.run(["rm", "-rf", str(out)], check=False)
        results[name] = {
            "max_iter": max_iter, "runs": runs,
            "median_seconds": {e: statistics.median(float(r["seconds"]) for r in rs) for e, rs in runs.items()},
            "median_fit_seconds": {e: statistics.median(float(r["fit_seconds"]) for r in rs) for e, rs in runs.items()},
            "median_peak_rss_gb": {e: statistics.median(float(r["peak_rss_gb"]) for r in rs) for e, rs in runs.items()},
        }  # fmt: skip
    return results


def _holdout(src: Path, seed: int = 42) -> tuple[np.ndarray, ...]:
    import pyarrow.parquet as pq

    t = pq.read_table(src)
    u, i = t.column("user_idx").to_numpy(), t.column("item_idx").to_numpy()
    pairs = np.unique(np.stack([u, i], 1), axis=0)
    counts = np.unique(np.stack([u, i], 1), axis=0, return_counts=True)[1]
    rng = np.random.default_rng(seed)
    test = rng.random(len(pairs)) < 0.25
    return pairs[~test, 0], pairs[~test, 1], counts[~test], pairs[test, 0], pairs[test, 1]


def _ndcg(uf: dict[int, np.ndarray], items: np.ndarray, item_vecs: np.ndarray,
          train: dict[int, set[int]], test: dict[int, set[int]]) -> float:
    from shared.metrics import mean_metrics, user_metrics

    per_user = []
    for user, relevant in test.items():
        if user not in uf:
            continue
        scores = item_vecs @ uf[user]
        order = items[np.argsort(-scores, kind="stable")]
        seen = train.get(user, set())
        ranked = [int(x) for x in order[: 10 + len(seen)] if int(x) not in seen][:10]
        per_user.append(user_metrics(ranked, relevant, 10))
    return mean_metrics(per_user, 10)["ndcg@10"]


def part_sweep(sets: list[str], root: Path, regs: list[float],
               spark_baseline: bool = True) -> dict[str, object]:
    import pandas as pd
    from pyspark.sql import SparkSession

    from batch.spark import als, als_driver
    from shared.config import AlsConfig

    os.environ.update({k: v for k, v in spark_env().items() if k != "PYTHONPATH"})
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "6g").config("spark.sql.shuffle.partitions", "4")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())  # fmt: skip
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir(str(root / "checkpoint"))
    results: dict[str, object] = {}
    for name in sets:
        tu, ti, tc, hu, hi = _holdout(indexed(name, root))
        train: dict[int, set[int]] = {}
        for a, b in zip(tu.tolist(), ti.tolist(), strict=True):
            train.setdefault(a, set()).add(b)
        test: dict[int, set[int]] = {}
        for a, b in zip(hu.tolist(), hi.tolist(), strict=True):
            test.setdefault(a, set()).add(b)
        # Spark's engine over the same training pairs, repeated as their counts.
        rep = pd.DataFrame({"user_idx": np.repeat(tu, tc).astype(np.int32), "item_idx": np.repeat(ti, tc).astype(np.int32)})
        entry: dict[str, object] = {}
        if spark_baseline:
            fit = als.train_als(spark.createDataFrame(rep), AlsConfig(engine="spark"))
            u = fit.users.toPandas()
            it = fit.items.toPandas().sort_values("item_idx")
            entry["spark reg_param 0.05"] = round(_ndcg(
                dict(zip(u.user_idx, (np.asarray(v, np.float32) for v in u.vector), strict=True)), it.item_idx.to_numpy(),
                np.stack([np.asarray(v, np.float32) for v in it.vector]), train, test), 4)  # fmt: skip
        for reg in regs:
            f = als_driver.fit(tu, ti, tc.astype(np.float32), AlsConfig(driver_reg_param=reg), threads=2)
            entry[f"driver reg {reg}"] = round(_ndcg(dict(zip(f.user_idx.tolist(), f.user_vectors, strict=True)), f.item_idx,
                                                     f.item_vectors, train, test), 4)  # fmt: skip
            print(name, reg, entry[f"driver reg {reg}"], flush=True)
        print(name, entry, flush=True)
        results[name] = {"heldout_pairs": len(hu), "users_evaluated": len(test), "ndcg@10": entry}
    spark.stop()
    return results


def part_quality(sets: list[str], root: Path, engines: tuple[str, ...] = ENGINES) -> dict[str, object]:
    results: dict[str, object] = {}
    for name in sets:
        data, run_date = prepare(name, root)
        entry: dict[str, object] = {}
        for engine in engines:
            art = root / f"art-{name}-{engine}"
            subprocess.run(["rm", "-rf", str(art)], check=True)
            config = root / f"config-{engine}.json"
            config.write_text(json.dumps({"als": {"engine": engine}}))
            cmd = [RECSYS, "batch", "run", "--data", str(data), "--artifacts", str(art),
                   "--run-date", run_date, "--config", str(config)]  # fmt: skip
            t = time.perf_counter()
            done = subprocess.run(cmd, env=spark_env(), capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                entry[engine] = {"returncode": done.returncode, "tail": done.stderr[-2000:]}
                continue
            run = (art / "CURRENT").read_text().strip()
            manifest = json.loads((art / "runs" / run / "manifest.json").read_text())
            metrics = manifest["metrics"]
            entry[engine] = {
                "wall_seconds": round(wall, 1),
                "ann_ndcg@10": metrics["lists"]["ann"]["ndcg@10"],
                # `merged` is what the bundle publishes (re-ranked, or fused: batch/stages/evaluate.py)
                "published_ndcg@10": metrics["lists"]["merged"]["ndcg@10"],
                "lists_ndcg@10": {k: v["ndcg@10"] for k, v in metrics["lists"].items()},
                "reranker": metrics.get("reranker"),
                "als": manifest["extra"].get("als"),
                "command": " ".join(cmd),
            }
            print(name, engine, {k: entry[engine][k] for k in ("wall_seconds", "ann_ndcg@10", "published_ndcg@10")}, flush=True)  # type: ignore[index]
            subprocess.run(["rm", "-rf", str(art)], check=True)
        results[name] = entry
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/als-engines"))
    ap.add_argument("--parts", default="sweep,fit,quality")
    ap.add_argument("--fit-sets", default="1m,5m,20m")
    ap.add_argument("--sweep-sets", default="mls,1m")
    ap.add_argument("--quality-sets", default="mls,1m")
    ap.add_argument("--regs", default="0.05,0.5,1,2,5,10")
    ap.add_argument("--sweep-driver-only", action="store_true", help="sweep: no Spark baseline fit")
    ap.add_argument("--skip-spark", default="", help="sets whose fit runs the driver engine only")
    ap.add_argument("--engines", default=",".join(ENGINES), help="quality: the engines run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tag", default="", help="appended to each part's key in --out")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "als_engines.json")
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    parts = args.parts.split(",")
    for part in parts:
        started, load = time.monotonic(), os.getloadavg()
        if part == "sweep":
            got = part_sweep(args.sweep_sets.split(","), args.root, [float(r) for r in args.regs.split(",")],
                             spark_baseline=not args.sweep_driver_only)
        elif part == "fit":
            got = part_fit(args.fit_sets.split(","), args.root, args.rounds, set(filter(None, args.skip_spark.split(","))))
        elif part == "quality":
            got = part_quality(args.quality_sets.split(","), args.root, tuple(args.engines.split(",")))
        else:
            raise SystemExit(f"unknown part {part!r}")
        results[part + args.tag] = {**got, "_meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.monotonic() - started, 1),
            "loadavg_at_start": [round(x, 2) for x in load], "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "sets": SETS}}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
