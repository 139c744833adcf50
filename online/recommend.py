"""The budgeted request path, free of Flask: resolve -> candidates -> rerank -> rules.

Every way out of the re-rank path has a reason; the answer then falls back along
precomputed list -> popular in the user's segment -> global popular, and always passes
through the same rules.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online import fallback, metrics, retrieval, rules
from online.bundle_loader import LoadedBundle
from online.config import ServiceConfig
from online.fallback import Budget, Stage, StageCosts
from online.scoring import ModelError, ScoreInput, Scorer, scorer_variant
from online.skew import SkewMonitor, SkewSample
from shared.sources import ANN, CALLER, names_of

log = logging.getLogger(__name__)

# An experiment arm's scorer treatment: no re-rank at all, the precomputed list as it is.
NO_SCORER = "none"


@dataclass
class Query:
    user_id: str
    k: int
    region: str | None = None
    recent_item_ids: list[str] = field(default_factory=list)
    device: str | None = None
    exclude_item_ids: list[str] = field(default_factory=list)
    # An experiment arm's settings (shared.experiments.Treatment); None / True: the service's.
    scorer: str | None = None
    ann_k: int | None = None
    diversity: bool = True


@dataclass
class Answer:
    items: list[dict[str, Any]]
    served_by: str
    scorer: str | None
    reasons: list[str] = field(default_factory=list)
    unknown_item_ids: list[str] = field(default_factory=list)

    @property
    def fallback_reason(self) -> str | None:
        return ";".join(self.reasons) or None


@dataclass
class _Resolved:
    user_idx: int | None
    recent: np.ndarray
    region: str | None
    blocked: np.ndarray
    vector: np.ndarray | None


class Recommender:
    def __init__(self, config: ServiceConfig, observe: bool = True,
                 skew: SkewMonitor | None = None) -> None:  # fmt: skip
        """observe=False (the shadow's recommender, online/shadow.py): the same ranking, but
        its answers, fallbacks and stage times count in no service metric, its stage costs
        are its own (a shadow must not move serving's budget estimates) and it neither reads
        nor fills the bundle's scored-candidate cache (its latency is the ranking's own, and
        it evicts nothing serving cached)."""
        self.config = config
        self.observe = observe
        # Train/serve skew sampling (online/skew.py); never for a shadow (observe=False).
        self.skew = skew if observe else None
        self.costs = StageCosts(observe)
        # Arms' scorers per bundle, built on first use and dropped with their bundle; None
        # records a scorer the bundle cannot run (served with its own, counted).
        self._variants: weakref.WeakKeyDictionary[LoadedBundle, dict[str, Scorer | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._variants_lock = threading.Lock()

    def scorer_for(self, bundle: LoadedBundle, name: str | None) -> Scorer:
        """The scorer named by an arm (None: the bundle's own), or the bundle's own when the
        bundle cannot run that one."""
        if name is None or name == bundle.scorer.name:
            return bundle.scorer
        per_bundle = self._variants.get(bundle)
        if per_bundle is None or name not in per_bundle:
            with self._variants_lock:
                per_bundle = self._variants.setdefault(bundle, {})
                if name not in per_bundle:
                    try:
                        per_bundle[name] = scorer_variant(bundle, name)
                    except Exception as exc:  # any failure: serve the bundle's own
                        per_bundle[name] = None
                        log.error("arm scorer unavailable, serving the bundle's own",
                                  extra={"run_id": bundle.run_id, "scorer": name,
                                         "error": str(exc)})  # fmt: skip
        found = per_bundle[name]
        if found is None:
            if self.observe:
                metrics.EXPERIMENT_UNAPPLIED.labels("scorer").inc()
            return bundle.scorer
        return found

    def _resolve(self, bundle: LoadedBundle, q: Query) -> _Resolved:
        user_idx = bundle.user_index.get(q.user_id)
        ids = q.recent_item_ids[: self.config.max_recent_items]
        recent = np.asarray(
            [bundle.item_index[i] for i in ids if i in bundle.item_index], dtype=np.int32
        )
        excluded = [bundle.item_index[i] for i in q.exclude_item_ids if i in bundle.item_index]
        region = q.region
        if region is None and user_idx is not None and user_idx < len(bundle.user_region):
            region = bundle.user_region[user_idx]
        seen = bundle.seen(user_idx)
        # Items the user just watched are as good as seen.
        blocked = np.concatenate([seen, np.asarray(excluded, np.int32), recent])
        vector: np.ndarray | None = None
        if user_idx is not None:
            vector = np.asarray(bundle.user_factors[user_idx], dtype=np.float32)
        elif len(recent):
            vector = np.asarray(bundle.item_factors[recent], dtype=np.float32).mean(axis=0)
        return _Resolved(user_idx, recent, region, blocked, vector)

    def _score(
        self,
        bundle: LoadedBundle,
        r: _Resolved,
        q: Query,
        items: np.ndarray,
        masks: np.ndarray,
        budget: Budget,
        scorer: Scorer,
    ) -> np.ndarray | str:
        if not budget.allows("rerank"):
            return "budget_exceeded:rerank"
        assert r.vector is not None
        inputs = ScoreInput(r.user_idx, r.vector, r.recent, r.region, q.device, items, masks)
        # The skew draw: one random number per re-ranked request; a sampled one keeps the
        # feature matrix the scorer built and hands it over after the stage.
        sample = (self.skew is not None and bundle.feature_stats is not None
                  and hasattr(scorer, "score_with_features") and self.skew.sampled())
        x: np.ndarray | None = None
        with Stage(self.costs, "rerank"):
            try:
                if sample:
                    x, scores = scorer.score_with_features(inputs)  # type: ignore[attr-defined]
                else:
                    scores = scorer.score(inputs)
            except ModelError:
                return "model_error"
        if self.observe:
            metrics.SCORED.labels(scorer.name).inc()
        if x is not None and self.skew is not None and bundle.feature_stats is not None:
            self.skew.offer(SkewSample(
                bundle.run_id, scorer.name, bundle.feature_stats,
                tuple(scorer.feature_names),  # type: ignore[attr-defined]
                x, scores, dt.datetime.now(dt.UTC),
            ))  # fmt: skip
        return np.asarray(scores, dtype=np.float32)

    def _budget(self, started: float | None) -> Budget:
        """The request's budget, counted from its arrival when the caller knows it."""
        budget = Budget(self.config.budget_ms, self.costs, self.config.force_fallback)
        if started is not None:
            budget.started = started
        return budget

    def recommend(self, bundle: LoadedBundle, q: Query, started: float | None = None) -> Answer:
        cfg = self.config
        budget = self._budget(started)
        with Stage(self.costs, "resolve"):
            r = self._resolve(bundle, q)
        reasons: list[str] = []
        outcome: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        scored_cache = bundle.caches.scored
        scorer = None if q.scorer == NO_SCORER else self.scorer_for(bundle, q.scorer)
        ann_k = q.ann_k or cfg.ann_k
        # Arms that score differently must not share cached scores.
        key = (r.user_idx, r.recent.tobytes(), r.region, q.device,
               scorer.name if scorer else None, ann_k)  # fmt: skip
        if cfg.popular_only:
            reasons.append("popular_only")  # the baseline arm: nobody gets a personal row
        elif scorer is None:
            pass  # an arm without re-rank: the precomputed list (not a fallback)
        elif r.vector is None:
            reasons.append("unknown_user")
        elif self.observe and (hit := scored_cache.get(key)) is not None:
            outcome = hit  # same bundle, user and context: the same candidates and scores
        elif not budget.allows("candidates"):
            reasons.append("budget_exceeded:candidates")
        else:
            with Stage(self.costs, "candidates"):
                items, masks = retrieval.candidates(
                    bundle,
                    r.user_idx,
                    r.recent,
                    ann_k=ann_k,
                    recent_k=cfg.recent_k,
                    limit=cfg.max_candidates,
                )
            scored = (
                self._score(bundle, r, q, items, masks, budget, scorer)
                if len(items)
                else "no_candidates"
            )
            if isinstance(scored, str):
                reasons.append(scored)
            else:
                outcome = (items, scored, masks)
                if self.observe:
                    scored_cache.put(key, outcome)
        served_by = "rerank"
        scorer_name = scorer.name if scorer else None
        if outcome is None:
            scorer_name = None
            outcome, served_by = self._fallback_list(bundle, r, reasons)
        with Stage(self.costs, "rules"):
            rows = self._apply_rules(bundle, r, q.k, *outcome, diversity=q.diversity)
        if self.observe:
            metrics.SERVED.labels("recommendations", served_by).inc()
            for reason in reasons:
                metrics.FALLBACKS.labels(reason).inc()
            if scorer_name is not None:
                observe_scores(scorer_name, rows)
        return Answer(rows, served_by, scorer_name, reasons)

    def _fallback_list(
        self, bundle: LoadedBundle, r: _Resolved, reasons: list[str]
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str]:
        listed = None if "popular_only" in reasons else bundle.precomputed_list(r.user_idx)
        if listed is not None:
            return (listed.items, listed.scores, listed.sources), "precomputed"
        if "popular_only" in reasons:
            pass
        elif r.user_idx is None:
            if "unknown_user" not in reasons:
                reasons.append("unknown_user")
        else:
            reasons.append("no_precomputed_list")
        pop, served_by = fallback.popular(bundle, r.region)
        return (pop.items, pop.scores, pop.sources), served_by

    def _apply_rules(
        self,
        bundle: LoadedBundle,
        r: _Resolved,
        k: int,
        items: np.ndarray,
        scores: np.ndarray,
        masks: np.ndarray,
        diversity: bool = True,
    ) -> list[dict[str, Any]]:
        extra = fallback.topup(bundle, r.region)
        all_items = np.concatenate([items, extra.items]).astype(np.int32, copy=False)
        all_scores = np.concatenate([scores, extra.scores]).astype(np.float32, copy=False)
        all_masks = np.concatenate([masks, extra.sources]).astype(np.uint32, copy=False)
        picked = rules.select(
            all_items,
            all_scores,
            blocked=r.blocked,
            region_mask=bundle.region_mask(r.region),
            first_genre=bundle.first_genre,
            k=k,
            n_primary=len(items),
            cap=None if diversity else k,  # k per genre: no cap
        )
        return item_rows(
            bundle,
            all_items[picked],
            all_scores[picked],
            [names_of(m) for m in all_masks[picked].tolist()],
        )

    def rerank(
        self, bundle: LoadedBundle, q: Query, candidate_ids: list[str], started: float | None = None
    ) -> Answer:
        budget = self._budget(started)
        with Stage(self.costs, "resolve"):
            r = self._resolve(bundle, q)
            unknown = [c for c in candidate_ids if c not in bundle.item_index]
            known = list(
                dict.fromkeys(bundle.item_index[c] for c in candidate_ids if c in bundle.item_index)
            )
            items = np.asarray(known, dtype=np.int32)
        reasons: list[str] = []
        scorer = None if q.scorer == NO_SCORER else self.scorer_for(bundle, q.scorer)
        scored: np.ndarray | str = "unknown_user" if r.vector is None else "no_candidates"
        if scorer is None:
            scored = NO_SCORER
        elif r.vector is not None and len(items):
            masks = np.full(len(items), CALLER, dtype=np.uint32)
            scored = self._score(bundle, r, q, items, masks, budget, scorer)
        served_by = "rerank"
        scorer_name = scorer.name if scorer else None
        if isinstance(scored, str):
            if len(items) and scored != NO_SCORER:  # an arm without re-rank: not a fallback
                reasons.append(scored)
            # Without a usable score the caller's own order is the best evidence we have.
            scored, served_by, scorer_name = (
                -np.arange(len(items), dtype=np.float32),
                "caller_order",
                None,
            )
        with Stage(self.costs, "rules"):
            picked = rules.select(
                items,
                scored,
                blocked=r.blocked,
                region_mask=bundle.region_mask(r.region),
                first_genre=bundle.first_genre,
                k=q.k,
                cap=None if q.diversity else q.k,
            )
        rows = item_rows(bundle, items[picked], scored[picked], [names_of(CALLER)] * len(picked))
        metrics.SERVED.labels("rerank", served_by).inc()
        for reason in reasons:
            metrics.FALLBACKS.labels(reason).inc()
        if scorer_name is not None and self.observe:
            observe_scores(scorer_name, rows)
        return Answer(rows, served_by, scorer_name, reasons, unknown)

    def similar(self, bundle: LoadedBundle, item_id: str, k: int) -> list[dict[str, Any]] | None:
        item_idx = bundle.item_index.get(item_id)
        if item_idx is None:
            return None
        with Stage(self.costs, "similar"):
            found = retrieval.item_neighbours(bundle, item_idx, k)
        metrics.SERVED.labels("similar", "ann").inc()
        return item_rows(bundle, found.items, found.scores, [names_of(ANN)] * len(found.items))


def observe_scores(scorer: str, rows: list[dict[str, Any]]) -> None:
    """recsys_served_score: the re-ranked scores of the items served (k per request)."""
    histogram = metrics.SERVED_SCORE.labels(scorer)
    for row in rows:
        histogram.observe(row["score"])


def item_rows(
    bundle: LoadedBundle, items: np.ndarray, scores: np.ndarray, sources: list[tuple[str, ...]]
) -> list[dict[str, Any]]:
    """The answer's rows (id, score rounded to 6 decimals, sources, title), with one
    conversion to Python numbers for the whole answer instead of one per item. `sources`
    are shared.sources.names_of tuples, shared between items (never mutated)."""
    ids, titles = bundle.item_ids, bundle.titles
    return [
        {"item_id": ids[i], "score": s, "sources": src, "title": titles[i] or None}
        for i, s, src in zip(items.tolist(), np.round(scores.astype(np.float64), 6).tolist(),
                             sources, strict=True)
    ]
