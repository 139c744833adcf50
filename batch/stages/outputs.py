"""What each stage writes under `ART/work/<run_date>/<stage>/`, as typed paths.

Stages find each other's outputs here, never by file name: `ctx.outputs.embeddings.train`,
`ctx.outputs.candidates.merged("eval")`, `ctx.outputs.rank.recommendations("full")`. Each
class is the stage's output contract; the registry (batch/stages/__init__.py) ties it to its
stage, and a test checks every accessor a stage uses exists and belongs to a stage it needs.

Pure Python on purpose (dataclasses, pathlib): the registry imports this module and the DAG
processor imports the registry on every parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EVAL, FULL = "eval", "full"
VARIANTS = (EVAL, FULL)  # eval: trained on the train split; full: on all data
# The re-ranker learns from one step further back in time: models trained on the eval
# train split minus its own held-out share (`ranker_labels`), so that neither its training
# candidates nor its labels touch the test split the reported metrics use.
RANKER_VARIANT = "ranker"
MODEL_VARIANTS = (RANKER_VARIANT, *VARIANTS)


WORK_DIR = "work"  # ART/work/<run_date>/<stage>/: every stage's outputs


def work_dir(artifacts: Path, run_date: str) -> Path:
    """Where the stages of the run for `run_date` (YYYY-MM-DD) write."""
    return artifacts / WORK_DIR / run_date


def _variant(variant: str, allowed: tuple[str, ...] = MODEL_VARIANTS) -> str:
    if variant not in allowed:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(allowed)}")
    return variant


@dataclass(frozen=True)
class StageOutputs:
    """The directory a stage owns; subclasses name the files in it."""

    root: Path

    @classmethod
    def accessors(cls) -> tuple[str, ...]:
        """The public names of this stage's outputs (properties and per-variant methods)."""
        names: list[str] = []
        for klass in reversed(cls.__mro__[:-1]):  # base first, object excluded
            names += [n for n in vars(klass) if not n.startswith("_") and n not in names]
        return tuple(n for n in names if n not in ("accessors", "root"))


@dataclass(frozen=True)
class ValidateOutputs(StageOutputs):
    @property
    def clean(self) -> Path:
        """Valid interactions (string ids)."""
        return self.root / "clean.parquet"

    @property
    def quarantine(self) -> Path:
        """Every refused input row with its reason."""
        return self.root / "quarantine.parquet"

    @property
    def event_quarantine(self) -> Path:
        """Every refused event-log row with its reason and event_id (row_number: its
        position through the day files read, in order)."""
        return self.root / "event_quarantine.parquet"

    @property
    def feedback(self) -> Path:
        """Valid events that are no interactions: impressions and dislikes (string ids)."""
        return self.root / "feedback.parquet"

    @property
    def valid_events(self) -> Path:
        """Stage-private: the event log's valid rows, written once so the splits below
        (interactions, feedback, counts) do not each re-read and re-validate the log."""
        return self.root / "_valid_events.parquet"

    @property
    def items(self) -> Path:
        return self.root / "items.parquet"

    @property
    def users(self) -> Path:
        return self.root / "users.parquet"

    @property
    def stats(self) -> Path:
        """run_id, row counts, quarantine reasons, data window."""
        return self.root / "stats.json"


@dataclass(frozen=True)
class DriftOutputs(StageOutputs):
    @property
    def report(self) -> Path:
        """Every drift check of the run: value, threshold, action, status; volumes per day."""
        return self.root / "drift.json"

    @property
    def profile(self) -> Path:
        """This run's input profile (batch/drift/profile.py); publish keeps it as the
        reference of later runs."""
        return self.root / "profile"


@dataclass(frozen=True)
class EmbeddingsOutputs(StageOutputs):
    @property
    def interactions(self) -> Path:
        """Every clean interaction with stable int ids (user_idx, item_idx)."""
        return self.root / "interactions.parquet"

    @property
    def train(self) -> Path:
        """The evaluation split's training part."""
        return self.root / "train.parquet"

    @property
    def test_all(self) -> Path:
        """Every held-out interaction, before the evaluated users are sampled."""
        return self.root / "_test_all.parquet"

    @property
    def test(self) -> Path:
        """The held-out interactions of the evaluated users: what every metric is measured on."""
        return self.root / "test.parquet"

    @property
    def ranker_train(self) -> Path:
        """The train split minus its own newest share: the ranker variant learns from it."""
        return self.root / "ranker_train.parquet"

    @property
    def ranker_labels(self) -> Path:
        """That newest share: the re-ranker's labels."""
        return self.root / "ranker_labels.parquet"

    @property
    def explicit_negatives(self) -> Path:
        """(user_idx, item_idx, event_type, ts): the user's dislikes, and the impressions the
        user never engaged with (no interaction with that item in the run's data)."""
        return self.root / "explicit_negatives.parquet"

    @property
    def users(self) -> Path:
        """This run's users with their stable user_idx."""
        return self.root / "users.parquet"

    @property
    def items(self) -> Path:
        """This run's items with their stable item_idx."""
        return self.root / "items.parquet"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    def train_for(self, variant: str) -> Path:
        """The interactions a model variant learns from: ranker -> ranker_train, eval ->
        train, full -> interactions (all of them). The one place this map is written."""
        return {RANKER_VARIANT: self.ranker_train, EVAL: self.train,
                FULL: self.interactions}[_variant(variant)]

    def user_factors(self, variant: str) -> Path:
        return self.root / _variant(variant) / "user_factors.parquet"

    def item_factors(self, variant: str) -> Path:
        return self.root / _variant(variant) / "item_factors.parquet"


@dataclass(frozen=True)
class IndexOutputs(StageOutputs):
    def index(self, variant: str) -> Path:
        """The variant's FAISS index over its item factors (ids = item_idx)."""
        return self.root / f"index-{_variant(variant)}.faiss"

    def info(self, variant: str) -> Path:
        """kind, dim, n_items, built_on, recall@100, build seconds."""
        return self.root / f"info-{_variant(variant)}.json"


@dataclass(frozen=True)
class CandidatesOutputs(StageOutputs):
    def popular(self, variant: str) -> Path:
        """Popular lists per segment (regions and the global one)."""
        return self.root / _variant(variant) / "popular.parquet"

    def neighbors(self, variant: str) -> Path:
        """Item-item co-occurrence neighbours."""
        return self.root / _variant(variant) / "neighbors.parquet"

    def merged(self, variant: str) -> Path:
        """Per-user candidates of every source, merged (one row per user and item)."""
        return self.root / _variant(variant) / "candidates.parquet"

    def ease_weights(self, variant: str) -> Path:
        """The EASE weights B (float32 [N, N], .npy, memory-mapped by the candidate tasks)."""
        return self.root / f"ease_weights-{_variant(variant)}.npy"  # one file per variant

    def ease_items(self, variant: str) -> Path:
        """The item_idx of EASE's N columns (int64 [N], ascending)."""
        return self.root / f"ease_items-{_variant(variant)}.npy"

    @property
    def ease(self) -> Path:
        """EASE's λ (and how it was chosen), items covered, their share of the interactions,
        Gram and solve times per variant."""
        return self.root / "ease.json"

    @property
    def recall(self) -> Path:
        """Candidate recall per source and merged, on the evaluation split."""
        return self.root / "recall.json"

    @property
    def fusion(self) -> Path:
        """The fused order's source weights, tuned on the eval variant, and their sample
        nDCG: every fused_score of every variant uses them."""
        return self.root / "fusion.json"


@dataclass(frozen=True)
class FeaturesOutputs(StageOutputs):
    def arrays(self, variant: str) -> Path:
        """The re-ranker's feature arrays of a variant (shared.features.save_feature_arrays)."""
        return self.root / _variant(variant)

    def info(self, variant: str) -> Path:
        return self.arrays(variant) / "info.json"

    def scratch(self, name: str) -> Path:
        """A stage-private intermediate directory (`_agg-<name>`), overwritten each run."""
        return self.root / f"_agg-{name}"

    @property
    def train_sample(self) -> Path:
        """The labelled training sample: x, y, user, is_val, n_rel (numpy .npz)."""
        return self.root / "train_sample.npz"

    @property
    def report(self) -> Path:
        return self.root / "report.json"


@dataclass(frozen=True)
class TrainRankerOutputs(StageOutputs):
    @property
    def models(self) -> Path:
        """The ONNX files (batch.ranker.model.FP32 / INT8 and the int8 candidates)."""
        return self.root / "ranker"

    def int8_candidate(self, kind: str) -> Path:
        """One int8 quantization of the fp32 model ("dynamic" or "static"); the better one
        is copied to models / INT8."""
        return self.models / f"model.int8-{kind}.onnx"

    @property
    def torch_weights(self) -> Path:
        """The torch state dict (for bench/reranker_latency.py; not in the bundle)."""
        return self.root / "model.pt"

    @property
    def report(self) -> Path:
        """status (trained / not_trained / disabled), training figures, int8 choice."""
        return self.root / "report.json"


@dataclass(frozen=True)
class RankOutputs(StageOutputs):
    @property
    def ranker(self) -> Path:
        """The re-ranking summary: status, shipped model, parity, or why the fused order stays."""
        return self.root / "ranker.json"

    @property
    def ranker_spec(self) -> Path:
        """The spec the bundle ships when a re-ranker does (absent otherwise)."""
        return self.root / "ranker_spec.json"

    @property
    def feature_stats(self) -> Path:
        """The bundle's monitoring/feature_stats.json when a re-ranker ships (absent otherwise)."""
        return self.root / "feature_stats.json"

    def fused(self, variant: str) -> Path:
        return self.root / _variant(variant, VARIANTS) / "fused.parquet"

    def recommendations(self, variant: str) -> Path:
        """The lists that ship (eval: evaluated; full: published)."""
        return self.root / _variant(variant, VARIANTS) / "recommendations.parquet"

    @property
    def scores(self) -> Path:
        """The eval candidates scored by both fp32 and int8."""
        return self.root / EVAL / "scores.parquet"

    def reranked_eval(self, model: str) -> Path:
        """The eval lists re-ranked by one model ("fp32" or "int8")."""
        return self.root / EVAL / f"reranked_{model}.parquet"

    @property
    def reranked_full(self) -> Path:
        """The published variant's lists re-ranked by the shipped model."""
        return self.root / FULL / "reranked.parquet"

    @property
    def popularity_baseline(self) -> Path:
        return self.root / EVAL / "popularity_baseline.parquet"

    @property
    def fingerprints(self) -> Path:
        """(user_idx, fp_hi, fp_lo): each published user's fingerprint of its model inputs
        (batch/ranker/fingerprint.py), what the next run compares to reuse its list."""
        return self.root / FULL / "fingerprints.parquet"

    @property
    def incremental(self) -> Path:
        """The run key behind reranked_full and fingerprints, the run id that wrote them,
        and how many users were reused or rescored and why (batch/ranker/incremental.py)."""
        return self.root / FULL / "incremental.json"

    @property
    def scored_scratch(self) -> Path:
        """Stage-private: the full variant's scored rows and fingerprints, before the
        reused lists are merged in."""
        return self.root / FULL / "_scored.parquet"

    @property
    def previous_scratch(self) -> Path:
        """Stage-private: a copy of the previous run's lists and fingerprints when that run
        wrote this same directory (a rerun of its date), taken before they are replaced."""
        return self.root / FULL / "_previous"


@dataclass(frozen=True)
class EvaluateOutputs(StageOutputs):
    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def figure(self) -> Path:
        return self.root / "metrics.png"


@dataclass(frozen=True)
class GateOutputs(StageOutputs):
    @property
    def decision(self) -> Path:
        """passed, reasons, the values checked."""
        return self.root / "decision.json"


@dataclass(frozen=True)
class PublishOutputs(StageOutputs):
    """Publish writes outside the work dir: `runs/<run_id>/`, `CURRENT`, the warehouse."""
