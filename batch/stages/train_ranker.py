"""Stage `train_ranker` (torch on the driver, no Spark): train, export fp32 ONNX, quantize to
int8 both ways, keep the int8 model that ranks best on the held-out users.

Writes work/<date>/train_ranker/: ranker/model.fp32.onnx, ranker/model.int8.onnx (the
chosen int8), the two int8 candidates, and report.json. With no usable training data the
stage records why and the rank stage keeps the fused order (the fallback).
"""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import torch

from batch.context import RunContext, write_json
from batch.ranker import quantize
from batch.ranker.model import FP32, INT8, export_onnx, spearman
from batch.ranker.scorer import OnnxRanker
from batch.ranker.train import TrainingData, train_ranker
from shared.features import FEATURE_NAMES
from shared.metrics import grouped_ndcg

log = logging.getLogger(__name__)
INT8_KINDS = ("dynamic", "static")
CALIBRATION_ROWS = 5000


def run(ctx: RunContext) -> dict[str, object]:
    cfg = ctx.config.ranker
    out = ctx.outputs.train_ranker
    shutil.rmtree(out.root, ignore_errors=True)
    out.root.mkdir(parents=True)
    if not cfg.enabled:
        report: dict[str, object] = {"status": "disabled"}
        write_json(out.report, report)
        return report
    data = TrainingData.load(ctx.outputs.features.train_sample)
    start = time.perf_counter()
    try:
        model, training = train_ranker(data, cfg)
    except ValueError as exc:
        log.warning("ranker not trained (%s): the lists keep the fused order", exc)
        report = {"status": "not_trained", "reason": str(exc)}
        write_json(out.report, report)
        return report
    models = out.models
    export_onnx(model, len(FEATURE_NAMES), models / FP32)
    # The torch weights stay in the work dir (not the bundle) for bench/reranker_latency.py.
    torch.save({"state": model.state_dict(), "hidden": list(cfg.hidden)}, out.torch_weights)
    train = data.subset(~data.is_val)
    calibration = quantize.calibration_sample(train.x, CALIBRATION_ROWS, cfg.seed)
    quantize.quantize_dynamic(models / FP32, out.int8_candidate("dynamic"))
    quantize.quantize_static(models / FP32, out.int8_candidate("static"), calibration)
    seconds = time.perf_counter() - start

    val = data.subset(data.is_val)
    reference = OnnxRanker(models / FP32).score(val.x)
    quality: dict[str, dict[str, float]] = {
        "fp32": {"val_ndcg@10": grouped_ndcg(val.user, reference, val.y, val.n_rel)}
    }
    for kind in INT8_KINDS:
        scores = OnnxRanker(out.int8_candidate(kind)).score(val.x)
        quality[f"int8_{kind}"] = {
            "val_ndcg@10": grouped_ndcg(val.user, scores, val.y, val.n_rel),
            "spearman_vs_fp32": spearman(scores, reference),
            "max_abs_diff": float(np.max(np.abs(scores - reference))) if len(scores) else 0.0,
        }
    # Better = ranks the held-out users best; a tie goes to dynamic (no calibration to age).
    chosen = max(INT8_KINDS, key=lambda k: (round(quality[f"int8_{k}"]["val_ndcg@10"], 6),
                                            k == "dynamic"))
    shutil.copyfile(out.int8_candidate(chosen), models / INT8)
    sizes = {p.name: p.stat().st_size for p in sorted(models.glob("*.onnx"))}
    report = {
        "status": "trained", "features": list(FEATURE_NAMES), "training": training,
        "int8_method": chosen, "quality": quality, "model_bytes": sizes,
        "train_export_quantize_seconds": round(seconds, 2),
    }
    write_json(out.report, report)
    log.info("ranker: int8 %s chosen; val nDCG@10 fp32 %.4f int8 %.4f", chosen,
             quality["fp32"]["val_ndcg@10"], quality[f"int8_{chosen}"]["val_ndcg@10"])
    return report
