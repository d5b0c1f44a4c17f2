"""Honest evaluation: dev-selected thresholds, mean +- std over seeds, bootstrap CIs."""

from memetrm.evaluation.metrics import (
    METRICS,
    auroc,
    bootstrap_ci,
    choose_threshold,
    compute_metrics,
    summarize,
)

__all__ = ["METRICS", "auroc", "bootstrap_ci", "choose_threshold", "compute_metrics", "summarize"]
