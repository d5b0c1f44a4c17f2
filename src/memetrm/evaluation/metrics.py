"""Metrics, dev-only threshold selection, and bootstrap confidence intervals."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from memetrm.errors import ConfigError

METRICS = ("auroc", "accuracy", "f1", "precision", "recall")
#: also computed (and bootstrapped) for single models: the operating point a moderator reads
ALL_METRICS = (*METRICS, "balanced_accuracy", "fpr")
#: how a decision threshold is chosen on dev (or out-of-fold) predictions
THRESHOLD_METRICS = ("f1", "accuracy", "balanced-accuracy", "precision>=P", "recall>=R", "fpr<=F")
#: a threshold that puts more than this share of dev in one class gets a warning
ONE_CLASS_SHARE = 0.9
_CONSTRAINT = re.compile(r"^(precision|recall|fpr)(>=|<=)(0(\.\d+)?|1(\.0+)?)$")


def batched_metrics(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray | float
                    ) -> dict[str, np.ndarray]:
    """Metrics for many rows at once: ``y``, ``p`` are (R, N), ``thresholds`` (R,) or scalar.

    The bootstrap (R resamples) and the threshold search (R candidate thresholds) need
    thousands of evaluations; one vectorised pass replaces thousands of sklearn calls.
    AUROC is the Mann-Whitney statistic on average ranks (ties as sklearn); a unit test checks
    every metric against sklearn. ``compute_metrics`` is the one-row case.
    """
    from scipy.stats import rankdata

    pos = y.astype(bool)
    n1 = pos.sum(1)
    n0 = pos.shape[1] - n1
    ranks = rankdata(p, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
        pred = p >= np.asarray(thresholds, dtype=float).reshape(-1, 1)
        tp = (pred & pos).sum(1).astype(float)
        fp = (pred & ~pos).sum(1)
        fn = (~pred & pos).sum(1)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        fpr = np.where(n0 > 0, fp / np.maximum(n0, 1), 0.0)
        return {
            "auroc": np.where((n1 > 0) & (n0 > 0), auc, np.nan),
            "accuracy": (pred == pos).mean(1),
            "f1": np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
            "precision": np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0),
            "recall": recall,
            "balanced_accuracy": (recall + 1 - fpr) / 2,
            "fpr": fpr,
        }


def parse_threshold_metric(spec: str) -> tuple[str, str | None, float | None]:
    """``"f1"`` -> ("f1", None, None); ``"precision>=0.9"`` -> ("precision", ">=", 0.9)."""
    spec = str(spec).replace(" ", "")
    if spec in ("f1", "accuracy", "balanced-accuracy"):
        return spec.replace("-", "_"), None, None
    m = _CONSTRAINT.match(spec)
    if not m or (m.group(1) == "fpr") != (m.group(2) == "<="):
        raise ConfigError(f"threshold metric {spec!r} is not one of {', '.join(THRESHOLD_METRICS)} "
                          "(P, R, F in [0, 1], e.g. precision>=0.9)")
    return m.group(1), m.group(2), float(m.group(3))


def threshold_scores(y_dev: np.ndarray, p_dev: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every distinct dev probability (and 0.5) as a candidate threshold, with its metrics."""
    cands = np.unique(np.concatenate([p_dev, [0.5]]))
    rows = len(cands)
    return cands, batched_metrics(np.broadcast_to(y_dev, (rows, len(y_dev))),
                                  np.broadcast_to(p_dev, (rows, len(p_dev))), cands)


def choose_threshold(y_dev: np.ndarray, p_dev: np.ndarray, metric: str = "f1") -> float:
    """The threshold chosen on dev (or out-of-fold) predictions, never on test.

    ``f1``, ``accuracy``, ``balanced-accuracy``: the lowest threshold maximising it. A
    constraint (``precision>=P``, ``recall>=R``, ``fpr<=F``) keeps the thresholds meeting it and
    takes the one with the most recall (precision for ``recall>=R``); if none meets it, the one
    closest to meeting it, so a moderator still gets a usable operating point.
    """
    name, op, bound = parse_threshold_metric(metric)
    cands, scores = threshold_scores(np.asarray(y_dev), np.asarray(p_dev))
    if op is None:
        return float(cands[int(np.argmax(scores[name]))])  # first maximum: the lowest threshold
    value = scores[name]
    ok = value <= bound if op == "<=" else value >= bound
    if not ok.any():
        best = np.argmin(value) if op == "<=" else np.argmax(value)
        return float(cands[int(best)])
    objective = np.where(ok, scores["precision" if name == "recall" else "recall"], -np.inf)
    # ties: the lowest threshold for recall-seeking goals, the highest for precision-seeking
    idx = np.flatnonzero(objective == objective.max())
    return float(cands[int(idx[-1] if name == "recall" else idx[0])])


def majority_share(p: np.ndarray, threshold: float) -> float:
    """The share of examples a threshold puts in its larger class (1.0: one class for all)."""
    pos = float((np.asarray(p) >= threshold).mean())
    return max(pos, 1 - pos)


def compute_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC is threshold-free; the others use the threshold chosen on dev."""
    row = batched_metrics(np.asarray(y)[None], np.asarray(p)[None], threshold)
    return {m: float(v[0]) for m, v in row.items()}


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """NaN when ``y`` has one class only (AUROC is undefined there)."""
    return compute_metrics(y, p, 0.5)["auroc"]


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
    idx = rng.integers(0, len(y), (n_boot, len(y)))
    yb = y[idx]
    keep = (yb.min(1) == 0) & (yb.max(1) == 1)  # AUROC needs both classes
    if not keep.any():
        return {m: (float("nan"), float("nan")) for m in ALL_METRICS}
    per_seed = [batched_metrics(yb[keep], p[idx[keep]], t)
                for p, t in zip(probs, thresholds, strict=True)]
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out = {}
    for m in ALL_METRICS:
        mean_over_seeds = np.mean([s[m] for s in per_seed], axis=0)
        out[m] = (float(np.percentile(mean_over_seeds, lo)), float(np.percentile(mean_over_seeds, hi)))
    return out


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



def band_rates(y: np.ndarray, p: np.ndarray, low: float, high: float | None = None
               ) -> dict[str, float]:
    """Of the examples with ``low <= p < high`` (no upper bound when ``high`` is None): their
    share of all, the precision of label 1 among them, and the share of label-1 examples they
    hold (recall). What a moderator expects of one action of a policy."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=float)
    inside = (p >= low) & (p < high if high is not None else True)
    n_in, tp, pos = int(inside.sum()), int((inside & y).sum()), int(y.sum())
    return {"share": n_in / max(len(y), 1), "precision": tp / n_in if n_in else float("nan"),
            "recall": tp / pos if pos else float("nan"), "n": n_in}
