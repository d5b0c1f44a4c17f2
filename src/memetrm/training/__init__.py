"""One engine for every head: ``fit`` on cached features, ``predict``, experiment runs."""

from memetrm.training.engine import FitResult, TrainConfig, fit, predict

__all__ = ["FitResult", "TrainConfig", "fit", "predict"]
