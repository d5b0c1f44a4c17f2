from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from memetrm.evaluation import bootstrap_ci, choose_threshold, compute_metrics, summarize
from memetrm.evaluation.metrics import batched_metrics


def test_metrics_match_sklearn_row_by_row() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (20, 57))
    y[0] = 0  # one single-class row: AUROC undefined
    p = np.round(rng.random((20, 57)), 1)  # many ties
    thr = rng.random(20)
    b = batched_metrics(y, p, thr)
    for i in range(20):
        pred = (p[i] >= thr[i]).astype(int)
        ref = {"accuracy": accuracy_score(y[i], pred),
               "f1": f1_score(y[i], pred, zero_division=0),
               "precision": precision_score(y[i], pred, zero_division=0),
               "recall": recall_score(y[i], pred, zero_division=0),
               "auroc": roc_auc_score(y[i], p[i]) if i else float("nan")}
        one_row = compute_metrics(y[i], p[i], thr[i])
        for k, v in ref.items():
            if i == 0 and k == "auroc":
                assert np.isnan(b[k][i]) and np.isnan(one_row[k])
            else:
                assert v == pytest.approx(b[k][i], abs=1e-12), (i, k)
                assert one_row[k] == pytest.approx(b[k][i], abs=1e-12), (i, k)


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
