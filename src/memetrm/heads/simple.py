"""Baselines on pooled features: logistic regression (SGD or exact) and the origin recipe's concat + MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, HeadConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, FieldNorm, MetricFn, mlp

#: inverse L2 strengths the linear probe tries (1e-6 ... 1e2, half-decade steps)
C_GRID = tuple(float(f"{c:.3g}") for c in 10.0 ** np.arange(-6, 2.01, 0.5))


@register_head("linear")
class LinearHead(Head):
    """Logistic regression on the concatenated, per-field LayerNorm'd embeddings."""

    def __init__(self, cfg: HeadConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.net = nn.Linear(self.norm.out_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.norm(batch)).squeeze(-1)


@dataclass
class LinearProbeConfig(HeadConfig):
    #: inverse L2 strength; None sweeps ``C_GRID`` and keeps the best dev AUROC
    C: float | None = None
    #: weight classes inversely to their frequency
    balanced: bool = False


@register_head("linear-probe", train={"epochs": 1})
class LinearProbeHead(Head):
    """L2 logistic regression fitted exactly (L-BFGS), C swept on dev: CLIP's linear-probe
    protocol, and the reference row every head has to beat."""

    config_class = LinearProbeConfig
    seeded = False
    fitted_attrs = ("C_",)

    def __init__(self, cfg: LinearProbeConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.net = nn.Linear(sum(input_dims.values()), 1)
        #: the C of the fit: ``cfg.C``, the best of the sweep on dev, or set before a refit
        self.C_: float | None = cfg.C

    def features(self, batch: Batch) -> torch.Tensor:
        """Each field scaled to unit length, then concatenated: the embeddings as the towers
        give them (sentence-transformers and CLIP vectors are unit-norm already), with no
        field drowning another by its scale, and nothing learned before the convex fit."""
        return torch.cat([F.normalize(batch[f].float(), dim=-1) for f in self.fields], -1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.features(batch)).squeeze(-1)

    def solve(self, train: Batch, dev: Batch | None, metric: MetricFn) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        if self.C_ is None and dev is None:
            raise ConfigError("linear-probe: without a dev split, C must be given (head_cfg.C)")

        def features(batch: Batch) -> np.ndarray:
            with torch.no_grad():
                return self.features(batch).double().cpu().numpy()

        x, y = features(train), train["label"].cpu().numpy()
        xd = features(dev) if dev is not None else None
        grid = [self.C_] if self.cfg.C is not None or dev is None else C_GRID
        # one model refitted along the C path, each fit starting from the last (warm start)
        clf = LogisticRegression(max_iter=5000, tol=1e-6, warm_start=True,
                                 class_weight="balanced" if self.cfg.balanced else None)
        fits, scores = [], []
        for c in grid:
            clf.set_params(C=c).fit(x, y)
            fits.append((clf.coef_.copy(), clf.intercept_.copy()))
            if xd is not None:
                scores.append(metric(dev["label"], torch.from_numpy(clf.decision_function(xd))))
        best = int(np.nanargmax(scores)) if len(grid) > 1 else 0
        with torch.no_grad():
            self.net.weight.copy_(torch.from_numpy(fits[best][0]))
            self.net.bias.copy_(torch.from_numpy(fits[best][1]))
        self.C_ = grid[best]
        return {"C": grid[best], **({"dev_auroc_by_C": dict(zip(map(str, grid), scores, strict=True))}
                                  if scores else {})}


@dataclass
class MLPConfig(HeadConfig):
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.2


@register_head("mlp")
class MLPHead(Head):
    """Concat of modality embeddings -> MLP, as in the origin recipe's (blog post 000) CLIP + MLP baseline."""

    config_class = MLPConfig

    def __init__(self, cfg: MLPConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.net = mlp(self.norm.out_dim, cfg.hidden, cfg.layers, cfg.dropout, norm=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.input_dropout(self.norm(batch))).squeeze(-1)
