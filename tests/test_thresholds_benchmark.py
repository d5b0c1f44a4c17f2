"""The threshold-policy benchmark picks every threshold on dev and only scores test."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.thresholds import POLICIES, score_policies


def test_policies_choose_on_dev_and_never_look_at_test_labels() -> None:
    rng = np.random.default_rng(0)
    y_dev, y_test = rng.integers(0, 2, 200), rng.integers(0, 2, 150)
    dev = [np.clip(0.3 * y_dev + 0.7 * rng.random(200), 0, 1) for _ in range(3)]
    test = [rng.random(150) for _ in range(3)]
    a = score_policies(y_dev, dev, y_test, test)
    b = score_policies(y_dev, dev, 1 - y_test, test)  # other test labels: same thresholds
    assert set(a) == set(POLICIES)
    for policy in POLICIES:
        assert a[policy]["threshold"] == b[policy]["threshold"]
        assert a[policy]["flagged"] == b[policy]["flagged"]
    assert a["fixed 0.5"]["threshold"]["mean"] == 0.5
    assert a["accuracy"]["accuracy"]["mean"] + b["accuracy"]["accuracy"]["mean"] == pytest.approx(1)


def test_the_summary_counts_runs_whose_accuracy_beats_the_majority_rate() -> None:
    from benchmarks.render.thresholds import summary

    def stat(v: float) -> dict:
        return {"mean": v, "std": None}

    def pol(acc: float, flagged: float) -> dict:
        return {"accuracy": stat(acc), "balanced_accuracy": stat(0.6), "flagged": stat(flagged)}

    r = {"policies": ["f1", "fixed 0.5"], "rows": [
        {"test_majority_rate": 0.6, "policies": {"f1": pol(0.5, 0.8), "fixed 0.5": pol(0.65, 0.0)}},
        {"test_majority_rate": 0.5, "policies": {"f1": pol(0.55, 0.7), "fixed 0.5": pol(0.6, 0.3)}}]}
    text = summary(r)
    assert "| f1 | 1 of 2 | -0.025 | 0.600 | 0.800 |" in text
    assert "| fixed 0.5 | 2 of 2 | +0.075 | 0.600 | 1.000 |" in text
