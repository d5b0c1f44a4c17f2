"""Scoring a trained head on a labelled split at a fixed decision threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from memetrm.errors import ConfigError
from memetrm.evaluation.metrics import bootstrap_ci, compute_metrics, majority_share


def evaluate_scores(y: np.ndarray, prob: np.ndarray, threshold: float,
                    labels: list[str], n_boot: int = 1000) -> dict[str, Any]:
    """n, metrics with a 95% bootstrap CI, the majority-class rate, and the confusion matrix
    (rows: true, columns: predicted) of probabilities ``prob`` against labels ``y`` at
    ``threshold``."""
    if (y != y).any() or len(set(y.tolist())) < 2:
        raise ConfigError("evaluation needs labels of both classes")
    pred = (prob >= threshold).astype(int)
    ci = bootstrap_ci(y, [prob], [threshold], n_boot=n_boot)
    return {
        "n": len(y), "threshold": threshold, "labels": labels,
        # the accuracy of always answering the larger class: what accuracy must beat
        "majority_rate": majority_share(y, 0.5),
        "metrics": {m: {"value": v, "ci95": list(ci[m])}
                    for m, v in compute_metrics(y, prob, threshold).items()},
        "confusion": [[int(((y == i) & (pred == j)).sum()) for j in range(2)] for i in range(2)],
    }
