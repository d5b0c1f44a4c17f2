"""An ensemble of heads saved as one model: the weighted mean of its members' probabilities.

Members are any registered heads, each reading its own fields (possibly from other encoders,
``text@mpnet-effnet``); the ensemble's inputs are the union. ``compare --ensemble K`` builds
one from the K best configurations on dev (every seed of each) and saves it like any head, so
``predict``, ``evaluate`` and ``serve`` load it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, HeadConfig
from memetrm.heads.registry import create_head, register_head
from memetrm.layers import Batch

#: members when none are given: both pooled baselines over every field (what the registry
#: contract test trains)
DEFAULT_MEMBERS = ({"head": "linear"}, {"head": "mlp"})


@dataclass
class EnsembleConfig(HeadConfig):
    #: ``{"head", "config", "fields"}`` per member (fields default to all inputs)
    members: list[dict[str, Any]] = field(default_factory=list)
    #: one weight per member (default equal); normalised to sum to 1
    weights: list[float] | None = None


@register_head("ensemble", in_all=False)
class EnsembleHead(Head):
    """Weighted mean of member heads' probabilities (members and weights chosen on dev)."""

    config_class = EnsembleConfig

    def __init__(self, cfg: EnsembleConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        specs = cfg.members or [dict(m) for m in DEFAULT_MEMBERS]
        weights = cfg.weights or [1.0] * len(specs)
        if len(weights) != len(specs) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"ensemble: {len(specs)} members need as many weights >= 0, got {weights}")
        members = []
        for spec in specs:
            fields = spec.get("fields") or list(input_dims)
            missing = [f for f in fields if f not in input_dims]
            if missing:
                raise ConfigError(f"ensemble member {spec['head']!r} reads {missing}, not among "
                                  f"the inputs {list(input_dims)}")
            members.append(create_head(
                spec["head"], {f: input_dims[f] for f in fields},
                {f: d for f, d in (token_dims or {}).items() if f in fields} or None,
                **spec.get("config", {})))
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights))
        self.needs_tokens = any(m.needs_tokens for m in members)

    def member_probs(self, batch: Batch) -> torch.Tensor:
        """(B, members) probabilities, each member at its own full depth and threshold-free."""
        return torch.stack([m.predict(batch)["prob"] if not self.training
                            else torch.sigmoid(m(batch)) for m in self.members], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        p = (self.member_probs(batch) * self.weights).sum(1)
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))

    def training_step(self, batch: Batch, step) -> float:
        """Members train side by side, each on its own loss (an ensemble of independent fits)."""
        loss = sum(m.loss(m(batch), batch["label"]) for m in self.members)
        step(loss)
        return loss.item() / len(self.members)

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"prob": (self.member_probs(batch) * self.weights).sum(1)}
