"""Training the re-ranker: sampled listwise softmax, early stopping on held-out users.

Each training example is one relevant candidate against `negatives` candidates of the same
user that were not relevant (drawn afresh each epoch, seeded): softmax cross-entropy with
the relevant one as the target, i.e. a listwise loss over sampled lists. Validation scores
every sampled candidate of the held-out users and measures nDCG@10; the best epoch wins.
Deterministic: a seed, one thread, deterministic algorithms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from batch.ranker.model import Ranker
from shared.config import RankerConfig
from shared.features import FEATURE_NAMES, TIME_CONTEXT
from shared.metrics import grouped_ndcg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Rows sorted by user: features x, label y, user, held-out flag, |relevant| of the user."""

    x: np.ndarray
    y: np.ndarray
    user: np.ndarray
    is_val: np.ndarray
    n_rel: np.ndarray

    @classmethod
    def load(cls, path: Path) -> TrainingData:
        with np.load(path) as z:
            return cls(x=z["x"], y=z["y"], user=z["user"], is_val=z["is_val"], n_rel=z["n_rel"])

    def subset(self, mask: np.ndarray) -> TrainingData:
        return TrainingData(self.x[mask], self.y[mask], self.user[mask], self.is_val[mask],
                            self.n_rel[mask])


def _groups(data: TrainingData, negatives: int, rng: np.random.Generator) -> np.ndarray:
    """[n_positives, 1 + negatives] row indices: a positive, then negatives of its user."""
    pos_rows = np.flatnonzero(data.y > 0)
    neg_rows = np.flatnonzero(data.y <= 0)
    users, inverse = np.unique(data.user, return_inverse=True)
    neg_count = np.bincount(inverse[neg_rows], minlength=len(users))
    neg_start = np.concatenate([[0], np.cumsum(neg_count)[:-1]])
    pos_user = inverse[pos_rows]
    keep = neg_count[pos_user] > 0
    pos_rows, pos_user = pos_rows[keep], pos_user[keep]
    draws = rng.random((len(pos_rows), negatives))
    picks = neg_start[pos_user, None] + (draws * neg_count[pos_user, None]).astype(np.int64)
    return np.concatenate([pos_rows[:, None], neg_rows[picks]], axis=1)


def _scores(model: Ranker, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def train_ranker(data: TrainingData, cfg: RankerConfig) -> tuple[Ranker, dict[str, object]]:
    """Fit on the training users, stop on the held-out ones; returns the best epoch's model."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(cfg.seed)
    train, val = data.subset(~data.is_val), data.subset(data.is_val)
    if not (train.y > 0).any() or not (val.y > 0).any():
        raise ValueError("the ranker window has no relevant candidates for training or validation")
    mean = train.x.mean(axis=0)
    std = np.maximum(train.x.std(axis=0), 1e-6)  # a constant feature must not divide by 0
    model = Ranker(mean, std, cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay)
    x_train = torch.from_numpy(np.ascontiguousarray(train.x, np.float32))
    # Time-context dropout: those rows see the training mean of the time features (0 after
    # the model's standardisation), so "where the item stood at the user's last event"
    # cannot carry the ranking alone. Training only; the exported model is unchanged.
    time_cols = torch.tensor([FEATURE_NAMES.index(f) for f in TIME_CONTEXT], dtype=torch.long)
    time_means = torch.from_numpy(mean[time_cols.numpy()].astype(np.float32))
    best_ndcg, best_epoch, best_state = -1.0, 0, model.state_dict()
    history: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        groups = _groups(train, cfg.negatives, rng)
        groups = groups[rng.permutation(len(groups))]
        for lo in range(0, len(groups), cfg.batch_size):
            idx = torch.from_numpy(groups[lo:lo + cfg.batch_size])
            x = x_train[idx.reshape(-1)]
            if cfg.time_feature_dropout > 0:
                drop = torch.from_numpy(rng.random(len(x)) < cfg.time_feature_dropout)
                x[drop.nonzero(as_tuple=True)[0].unsqueeze(1), time_cols] = time_means
            logits = model(x).reshape(idx.shape)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        ndcg = grouped_ndcg(val.user, _scores(model, val.x), val.y, val.n_rel)
        history.append(round(ndcg, 5))
        if ndcg > best_ndcg + 1e-6:
            best_ndcg, best_epoch = ndcg, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    report: dict[str, object] = {
        "hidden": list(cfg.hidden), "epochs_run": len(history), "best_epoch": best_epoch,
        "val_ndcg@10": round(best_ndcg, 5), "val_history": history,
        "train_rows": len(train.y), "train_positives": int((train.y > 0).sum()),
        "val_users": len(np.unique(val.user)), "train_users": len(np.unique(train.user)),
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    log.info("ranker: val nDCG@10 %.4f at epoch %d of %d", best_ndcg, best_epoch, len(history))
    return model, report
