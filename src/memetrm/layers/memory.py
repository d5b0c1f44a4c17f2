"""A memory of labelled examples: embeddings and labels as buffers (saved with the weights), ids
beside them, exact inner-product search."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MemoryBank(nn.Module):
    """Rows of (unit-norm embedding, label, id); ``search`` returns the nearest by inner product.

    The buffers grow with every ``add``; a checkpoint of any size loads into a fresh (empty)
    bank, whose buffers take the saved shapes. ``ids`` are strings, so they live beside the
    weights (``memory_ids.json`` in a model directory), not in the safetensors file.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(0, dim))
        self.register_buffer("labels", torch.zeros(0))
        self.ids: list[str] = []

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def reset(self) -> None:
        self.embeddings = self.embeddings[:0]
        self.labels = self.labels[:0]
        self.ids = []

    def add(self, vectors: torch.Tensor, labels: torch.Tensor, ids: list[str]) -> None:
        if not len(vectors) == len(labels) == len(ids):
            raise ValueError(f"{len(vectors)} vectors, {len(labels)} labels and {len(ids)} ids")
        self.embeddings = torch.cat([self.embeddings, vectors.detach().to(self.embeddings)])
        self.labels = torch.cat([self.labels, labels.detach().float().to(self.labels)])
        self.ids = [*self.ids, *ids]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of the ``k`` nearest (fewer if the bank is smaller), (B, k) each."""
        sims = queries.to(self.embeddings) @ self.embeddings.T
        return sims.topk(min(k, sims.shape[1]), dim=1)

    def describe(self, rows: torch.Tensor, sims: torch.Tensor) -> list[list[dict[str, Any]]]:
        """Per query: id, label and similarity of each neighbour (what a moderator is shown)."""
        labels = self.labels.cpu().tolist()
        return [[{"id": self.ids[j], "label": int(labels[j]), "similarity": round(s, 4)}
                 for j, s in zip(row, sim, strict=True)]
                for row, sim in zip(rows.cpu().tolist(), sims.float().cpu().tolist(), strict=True)]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # a saved bank has as many rows as it had then: take its shapes before copying
        for name in ("embeddings", "labels"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args)
