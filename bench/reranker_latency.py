"""Re-ranker scoring latency for one request, single thread: torch eager fp32 vs ONNX
Runtime fp32 vs ONNX Runtime int8 (dynamic and static QDQ), at 100/500/1000 candidates.

Reads a pipeline work dir (after the train_ranker stage); inputs are real feature rows of
the training sample. Don't run it beside Spark: it measures a shared 2-core machine.

    .venv/bin/python bench/reranker_latency.py --work ART/work/2016-12-31 [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from batch.ranker.model import FP32, Ranker  # noqa: E402
from batch.ranker.scorer import OnnxRanker  # noqa: E402
from batch.stages import RunOutputs  # noqa: E402
from shared.features import N_FEATURES  # noqa: E402
from shared.onnx_session import create_session  # noqa: E402

SIZES = (100, 500, 1000)


def op_profile(model: Path, x: np.ndarray, runs: int = 300) -> dict[str, float]:
    """Mean microseconds per request spent in each ONNX op type (ORT's own profiler), to
    see where the time goes: matrix products, (de)quantization, or fixed per-op cost."""
    import onnxruntime as ort

    session = create_session(ort, model, profile_prefix=f"/tmp/ort-profile-{model.stem}")
    name = session.get_inputs()[0].name
    for _ in range(runs):
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    per_op: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / runs
    trace.unlink()
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def _time(fn, x: np.ndarray, runs: int, warmup: int = 50) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn(x)
    laps = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn(x)
        laps[i] = time.perf_counter_ns() - start
    return {"p50_ms": float(np.median(laps) / 1e6), "p99_ms": float(np.percentile(laps, 99) / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="ART/work/<run_date>")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    outputs = RunOutputs(args.work)
    trained = outputs.train_ranker
    checkpoint = torch.load(trained.torch_weights)
    with np.load(outputs.features.train_sample) as z:
        rows = z["x"]
    model = Ranker(np.zeros(N_FEATURES), np.ones(N_FEATURES), tuple(checkpoint["hidden"]))
    model.load_state_dict(checkpoint["state"])
    model.eval()

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    scorers = {"torch eager fp32": eager}
    for label, path in (("ORT fp32", trained.models / FP32),
                        ("ORT int8 dynamic", trained.int8_candidate("dynamic")),
                        ("ORT int8 static QDQ", trained.int8_candidate("static"))):
        scorers[label] = OnnxRanker(path).score
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n in SIZES:
        x = np.ascontiguousarray(rows[rng.choice(len(rows), n, replace=False)], np.float32)
        results[str(n)] = {label: _time(fn, x, args.runs) for label, fn in scorers.items()}
    sizes = {p.name: p.stat().st_size for p in sorted(trained.models.glob("*.onnx"))}
    print("| candidates | " + " | ".join(scorers) + " |")
    print("|---" * (len(scorers) + 1) + "|")
    for n, by in results.items():
        cells = [f"{v['p50_ms']:.3f} / {v['p99_ms']:.3f}" for v in by.values()]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("(median / p99 ms, one thread)")
    print(json.dumps({"model_bytes": sizes, "hidden": checkpoint["hidden"]}))
    x500 = np.ascontiguousarray(rows[rng.choice(len(rows), 500, replace=False)], np.float32)
    profiles = {
        path.name: op_profile(path, x500)
        for path in (trained.models / FP32, trained.int8_candidate("dynamic"))
    }
    print("ONNX Runtime time per op type at 500 candidates, µs per request:")
    for name, per_op in profiles.items():
        cells = ", ".join(f"{op} {us:.1f}" for op, us in per_op.items())
        print(f"  {name}: total {sum(per_op.values()):.1f} = {cells}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"latency": results, "model_bytes": sizes, "op_profile_500_us": profiles},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
