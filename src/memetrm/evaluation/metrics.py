"""Metrics, dev-only threshold selection, and bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

METRICS = ("auroc", "accuracy", "f1", "precision", "recall")


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def compute_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC is threshold-free; the others use the threshold chosen on dev."""
    pred = (p >= threshold).astype(int)
    return {
        "auroc": auroc(y, p),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
    }


def choose_threshold(y_dev: np.ndarray, p_dev: np.ndarray, metric: str = "f1") -> float:
    """The dev-split threshold maximising ``metric`` (``f1`` or ``accuracy``); never use test."""
    cands = np.unique(np.concatenate([p_dev, [0.5]]))
    best_t, best = 0.5, -1.0
    for t in cands:
        pred = (p_dev >= t).astype(int)
        s = (f1_score(y_dev, pred, zero_division=0) if metric == "f1"
             else accuracy_score(y_dev, pred))
        if s > best:
            best_t, best = float(t), s
    return best_t


def bootstrap_ci(
    y: np.ndarray,
    probs: Sequence[np.ndarray],
    thresholds: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile CI of the seed-averaged metrics under resampling of the test examples.

    Each resample scores every seed's predictions on the same examples, so the interval
    reflects test-set sampling noise around the mean over seeds.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    stats: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if len(np.unique(yb)) < 2:
            continue
        per_seed = [fast_metrics(yb, p[idx], t) for p, t in zip(probs, thresholds, strict=True)]
        for m in METRICS:
            stats[m].append(float(np.mean([s[m] for s in per_seed])))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {m: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for m, v in stats.items()}


def summarize(per_seed: Sequence[dict[str, float]],
              ci: dict[str, tuple[float, float]] | None = None) -> dict[str, dict]:
    """``{metric: {"mean", "std", "ci95", "values"}}`` over seeds (std with ddof=1)."""
    out = {}
    for m in METRICS:
        vals = np.array([s[m] for s in per_seed], dtype=float)
        out[m] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "ci95": list(ci[m]) if ci else None,
            "values": vals.tolist(),
        }
    return out


def fast_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Vectorised twin of ``compute_metrics`` for the bootstrap's thousands of resamples.

    AUROC is the Mann-Whitney statistic on average ranks (ties handled as sklearn does);
    a unit test checks agreement with sklearn.
    """
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(p)
    auc = (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0) if n1 and n0 else float("nan")
    pred = p >= threshold
    tp = float((pred & pos).sum())
    fp = float((pred & ~pos).sum())
    fn = float((~pred & pos).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auroc": float(auc),
        "accuracy": float((pred == pos).mean()),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "precision": prec,
        "recall": rec,
    }
