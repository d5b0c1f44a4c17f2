"""Honest evaluation: dev-selected thresholds, mean +- std over seeds, bootstrap CIs."""

from memetrm.evaluation.metrics import (
    METRICS,
    auroc,
    bootstrap_ci,
    choose_threshold,
    compute_metrics,
    majority_share,
    parse_threshold_metric,
    summarize,
)

__all__ = ["METRICS", "auroc", "bootstrap_ci", "choose_threshold", "compute_metrics",
           "majority_share", "parse_threshold_metric", "summarize"]
