"""In-memory features of one split: small enough to live in RAM, indexed like a batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from memetrm.layers import Batch


@dataclass
class FeatureSet:
    """``tensors`` uses the head batch keys: ``field`` pooled, ``field.tokens`` / ``field.mask``.

    ``labels`` is float with NaN where a record has no label. ``views[field]`` (N, V, D) holds
    the variants of a random-view field (``caption_random``): a shuffled (training) pass draws
    one per row, while ``tensors[field]`` keeps their mean for every other pass.
    """

    ids: list[str]
    tensors: dict[str, torch.Tensor]
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    views: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fields(self) -> list[str]:
        return [k for k in self.tensors if not k.endswith((".tokens", ".mask"))]

    @property
    def input_dims(self) -> dict[str, int]:
        return {f: self.tensors[f].shape[-1] for f in self.fields}

    @property
    def token_dims(self) -> dict[str, int]:
        return {k.removesuffix(".tokens"): v.shape[-1] for k, v in self.tensors.items()
                if k.endswith(".tokens")}

    def subset(self, idx: torch.Tensor | list[int]) -> FeatureSet:
        """Rows ``idx`` as a new feature set (the folds of cross-validation)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return FeatureSet([self.ids[i] for i in idx.tolist()],
                          {k: v[idx] for k, v in self.tensors.items()}, self.labels[idx], self.meta,
                          {k: v[idx] for k, v in self.views.items()})

    @staticmethod
    def concat(sets: list[FeatureSet]) -> FeatureSet:
        """Rows of several splits with the same fields (train + dev for cross-validation);
        token features are padded to the longest split."""
        keys = list(sets[0].tensors)
        tensors = {}
        for k in keys:
            parts = [s.tensors[k] for s in sets]
            if parts[0].dim() > 1 and k.endswith((".tokens", ".mask")):
                n = max(p.shape[1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, n - p.shape[1]))
                         for p in parts]
            tensors[k] = torch.cat(parts)
        views = {k: torch.cat([s.views[k] for s in sets]) for k in sets[0].views}
        return FeatureSet([i for s in sets for i in s.ids], tensors,
                          torch.cat([s.labels for s in sets]), sets[0].meta, views)

    def batch(self, idx: torch.Tensor | slice | None = None,
              device: torch.device | str | None = None,
              choice: torch.Tensor | None = None) -> Batch:
        """Rows ``idx`` (all by default) as a batch on ``device``; floats become fp32 there.
        ``choice`` (N,) in [0, 1) picks the variant of each row for the random-view fields."""
        idx = slice(None) if idx is None else idx
        out = {k: v[idx].to(device, non_blocking=True) for k, v in self.tensors.items()}
        if choice is not None:
            rows = torch.arange(len(self))[idx]
            out.update({k: v[rows, (choice[rows] * v.shape[1]).long()].to(device)
                        for k, v in self.views.items()})
        out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
        out["label"] = self.labels[idx].to(device)
        out["row"] = torch.arange(len(self))[idx].to(device)
        return out

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                drop_last: bool = False) -> Iterator[Batch]:
        """Mini-batches in order (or shuffled by ``generator``, drawing a variant per row of each
        random-view field); ``drop_last`` skips a ragged tail."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        choice = None
        if shuffle and self.views:
            choice = torch.rand(len(self), generator=generator)
        stop = len(self) - len(self) % batch_size if drop_last and len(self) >= batch_size else len(self)
        for i in range(0, stop, batch_size):
            yield self.batch(order[i:i + batch_size], device, choice)
