"""Decision thresholds a moderator can use, chosen on dev with a bound or by Youden's J."""

from __future__ import annotations

import numpy as np
import pytest

from memetrm.errors import ConfigError
from memetrm.evaluation.metrics import batched_metrics, choose_threshold, parse_threshold_metric
from memetrm.training import TrainConfig

from . import fakes  # noqa: F401  (registers the test-fake encoder)


def scores(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)


@pytest.mark.parametrize("spec", ["precision>=0.8", "recall>=0.9", "fpr<=0.1"])
def test_constrained_thresholds_meet_their_bound_and_are_the_best_that_do(spec: str) -> None:
    y, p = scores()
    name, op, bound = parse_threshold_metric(spec)
    thr = choose_threshold(y, p, spec)
    cands = np.unique(np.concatenate([p, [0.5]]))
    m = batched_metrics(np.broadcast_to(y, (len(cands), len(y))),
                        np.broadcast_to(p, (len(cands), len(p))), cands)
    ok = m[name] <= bound if op == "<=" else m[name] >= bound
    at = batched_metrics(y[None], p[None], thr)
    assert (at[name][0] <= bound) if op == "<=" else (at[name][0] >= bound)
    goal = "precision" if name == "recall" else "recall"
    assert at[goal][0] == pytest.approx(m[goal][ok].max())


def test_balanced_accuracy_threshold_maximises_youden_j() -> None:
    y, p = scores(1)
    thr = choose_threshold(y, p, "balanced-accuracy")
    best = max(((p >= t)[y == 1].mean() + (p < t)[y == 0].mean()) / 2 for t in np.unique(p))
    pred = p >= thr
    assert (pred[y == 1].mean() + (~pred)[y == 0].mean()) / 2 == pytest.approx(best)


@pytest.mark.parametrize("bad", ["fpr>=0.1", "precision<=0.5", "recall>=1.5", "f2", "precision>="])
def test_unknown_threshold_metrics_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="threshold metric"):
        parse_threshold_metric(bad)
    with pytest.raises(ConfigError):
        TrainConfig(threshold_metric=bad)
