"""Retrieval recall, shared by model selection during training and the final evaluation."""

from __future__ import annotations

import torch

RECALL_KS = (1, 5, 10)


def retrieval_metrics(i2t: torch.Tensor, t2i: torch.Tensor) -> dict[str, float]:
    """Recall@k of the matching item (the diagonal), both directions, with chance k/N beside it.

    Ties count against the model (rank = number of candidates scoring >= the match, minus one),
    so a constant scorer gets chance-level recall, not a perfect score.
    """
    out: dict[str, float] = {"n": float(len(i2t))}
    for name, s in (("i2t", i2t), ("t2i", t2i)):
        rank = (s >= s.diagonal().unsqueeze(1)).sum(1) - 1
        for k in RECALL_KS:
            out[f"{name}_R@{k}"] = (rank < k).float().mean().item()
    for k in RECALL_KS:
        out[f"chance_R@{k}"] = min(1.0, k / len(i2t))
    return out
