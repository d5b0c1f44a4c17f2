"""The exact linear probe: scikit-learn's logistic regression, C chosen on dev."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from memetrm.errors import ConfigError
from memetrm.features import FeatureSet
from memetrm.heads import create_head
from memetrm.heads.simple import C_GRID
from memetrm.training import TrainConfig, fit
from memetrm.training.engine import predict

from . import fakes  # noqa: F401  (registers the test-fake encoder)


def toy(n: int, seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = ((x[:, 0] + 0.7 * torch.randn(n, generator=g)) > 0).float()
    return FeatureSet([f"{seed}-{i}" for i in range(n)], {"text": x}, y)


def test_linear_probe_is_the_exact_logistic_regression_with_c_chosen_on_dev() -> None:
    train, dev = toy(200, 0), toy(100, 1)
    result = fit(create_head("linear-probe", train.input_dims), train, dev, TrainConfig())
    c = result.calibration["C"]
    assert c in C_GRID and len(result.calibration["dev_auroc_by_C"]) == len(C_GRID)
    assert result.dev_score == pytest.approx(max(result.calibration["dev_auroc_by_C"].values()))
    head = result.head
    x = head.features(train.batch()).double().numpy()
    ref = LogisticRegression(C=c, max_iter=5000).fit(x, train.labels.numpy())
    xd = head.features(dev.batch()).double().numpy()
    ours = predict(head, dev)["prob"].double().numpy()
    assert np.allclose(ours, ref.predict_proba(xd)[:, 1], atol=1e-4)  # solver tolerance


def test_linear_probe_needs_c_without_dev() -> None:
    train = toy(50, 0)
    with pytest.raises(ConfigError, match="C must be given"):
        fit(create_head("linear-probe", train.input_dims), train, None, TrainConfig())
    fit(create_head("linear-probe", train.input_dims, C=1.0), train, None, TrainConfig())
