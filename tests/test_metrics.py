from __future__ import annotations

import numpy as np
import pytest

from memetrm.evaluation import bootstrap_ci, choose_threshold, compute_metrics, summarize
from memetrm.evaluation.metrics import fast_metrics


def test_fast_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 57)
        p = np.round(rng.random(57), 1)  # many ties
        a, b = compute_metrics(y, p, 0.5), fast_metrics(y, p, 0.5)
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-12), k


def test_threshold_is_chosen_on_given_split_only() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    assert choose_threshold(y, p, "f1") == pytest.approx(0.35)
    assert compute_metrics(y, p, 0.35)["f1"] == 1.0


def test_bootstrap_ci_brackets_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)

    def width(n: int) -> float:
        y = rng.integers(0, 2, n)
        probs = [np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1) for _ in range(3)]
        ci = bootstrap_ci(y, probs, [0.5] * 3, n_boot=300)
        mean = np.mean([compute_metrics(y, p, 0.5)["auroc"] for p in probs])
        assert ci["auroc"][0] <= mean <= ci["auroc"][1]
        return ci["auroc"][1] - ci["auroc"][0]

    assert width(2000) < width(100)


def test_summarize_mean_std() -> None:
    s = summarize([{"auroc": 0.6, "accuracy": 0.5, "f1": 0.1, "precision": 0, "recall": 0},
                   {"auroc": 0.8, "accuracy": 0.7, "f1": 0.3, "precision": 0, "recall": 0}])
    assert s["auroc"]["mean"] == pytest.approx(0.7)
    assert s["auroc"]["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
