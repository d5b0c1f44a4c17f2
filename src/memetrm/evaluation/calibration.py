"""Probability calibration fitted on dev (or out-of-fold) scores, and how calibrated scores are.

A head's raw probability is a ranking score: trained on a split with another base rate than
the one it serves, 0.12 can mean "hateful". A ``Calibrator`` maps it to a probability that
matches observed frequencies. It is fitted by scikit-learn's ``CalibratedClassifierCV`` on the
logit of the raw score (temperature scaling, Platt's sigmoid or isotonic regression), and kept
as a few numbers in the model's ``config.json``, so applying it needs numpy only and no
pickle. ``expected_calibration_error`` and ``reliability`` measure the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memetrm.config import CALIBRATIONS
from memetrm.errors import ConfigError
from memetrm.utils import plural

#: equal-width bins of the expected calibration error and of the reliability diagram
ECE_BINS = 15
#: isotonic regression has one step per distinct score: below this many examples it overfits
ISOTONIC_MIN = 1000
#: raw probabilities are clipped this far from 0 and 1 before their logit is taken
_EPS = 1e-7
#: the key of the fitted calibrator in a saved model's ``config.json``
CONFIG_KEY = "calibrator"


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def check_calibration(method: str, n: int, where: str) -> None:
    """Refuse a method that cannot be fitted on ``n`` examples (isotonic under
    ``ISOTONIC_MIN``), naming where they come from, before anything is trained."""
    if method not in CALIBRATIONS:
        raise ConfigError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    if method == "isotonic" and n < ISOTONIC_MIN:
        raise ConfigError(f"isotonic calibration needs at least {ISOTONIC_MIN:,} examples to fit "
                          f"on, and {where} has {plural(n, 'example')}: it would learn the noise "
                          "of a few steps; use --calibration temperature or platt (or --cv K, "
                          "which calibrates on the out-of-fold predictions of train + dev)")


def _frozen_score() -> Any:
    """The raw score as a fitted, frozen classifier, so ``CalibratedClassifierCV`` calibrates
    it: its decision function is the score's logit (column 0 of X)."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.frozen import FrozenEstimator

    class Score(ClassifierMixin, BaseEstimator):
        def fit(self, X: np.ndarray, y: np.ndarray) -> Score:
            self.classes_ = np.array([0, 1])
            return self

        def decision_function(self, X: np.ndarray) -> np.ndarray:
            return np.asarray(X)[:, 0]

        def predict(self, X: np.ndarray) -> np.ndarray:
            return (self.decision_function(X) > 0).astype(int)

    return FrozenEstimator(Score().fit(None, None))


@dataclass(frozen=True)
class Calibrator:
    """raw probability -> calibrated probability; ``none`` is the identity.

    ``temperature`` and ``platt`` are ``sigmoid(a * logit(raw) + b)`` (temperature: ``b = 0``,
    ``T = 1 / a``); ``isotonic`` interpolates ``logit(raw)`` in the fitted steps ``x -> y``,
    clipped at the ends, as scikit-learn does. None ever swaps two scores (``a >= 0``), and
    with ``a > 0`` the map is strictly increasing, so a threshold moved to the calibrated scale
    labels every meme as before.
    """

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, method: str, y: np.ndarray, raw: np.ndarray, where: str = "dev") -> Calibrator:
        """Fitted on labels ``y`` and raw probabilities ``raw`` (dev or out-of-fold)."""
        check_calibration(method, len(y), where)
        if method == "none":
            return cls()
        if not np.isfinite(raw).all():
            raise ConfigError(f"{where}: the model's scores hold NaN or infinite values: not "
                              "calibrated, not saved (training diverged: lower train.lr or set "
                              "train.grad_clip)")
        from sklearn.calibration import CalibratedClassifierCV

        sk = {"temperature": "temperature", "platt": "sigmoid", "isotonic": "isotonic"}[method]
        # one "fold" holding every example: the frozen score is fitted on nothing and the
        # calibrator on all of them, also where a class has fewer members than 5 folds need
        every = np.arange(len(y))
        cal = CalibratedClassifierCV(_frozen_score(), method=sk, cv=[(every, every)])
        cal.fit(logit(raw)[:, None], np.asarray(y).astype(int))
        if method == "isotonic":
            iso = cal.calibrated_classifiers_[0].calibrators[0]
            return cls(method, {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
        # a sigmoid of the logit: read a and b off the fitted map at logits 0 and 1
        b, a_plus_b = logit(cal.predict_proba(np.array([[0.0], [1.0]]))[:, 1])
        a = float(a_plus_b - b)
        if a < 0:  # scores that rank label 1 lower on dev: the best increasing map is the rate
            a, b = 0.0, float(logit(np.mean(y)))
        return cls(method, {"a": a, "b": 0.0 if method == "temperature" else float(b)})

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "none":
            return raw
        z = logit(raw)
        if self.method == "isotonic":
            return np.interp(z, self.params["x"], self.params["y"])
        return 1 / (1 + np.exp(-(self.params["a"] * z + self.params["b"])))

    def describe(self) -> str:
        """In words, for logs, model cards and ``/v1/model``."""
        if self.method == "temperature":
            a = self.params["a"]
            return f"temperature scaling (T = {1 / a if a else float('inf'):.3f})"
        if self.method == "platt":
            return f"Platt scaling (a = {self.params['a']:.3f}, b = {self.params['b']:.3f})"
        if self.method == "isotonic":
            return f"isotonic regression ({plural(len(self.params['x']), 'step')})"
        return "none (the head's raw probability)"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> Calibrator:
        """The calibrator saved in a model's config; a model saved before calibration existed
        has none and answers its raw probability. A malformed one is an error naming the
        file, never a silent identity."""
        saved = config.get(CONFIG_KEY)
        if saved is None:
            return cls()
        bad = ConfigError(f"{where}: {CONFIG_KEY!r} must be {{'method': one of {CALIBRATIONS}, "
                          f"...its fitted numbers}}, got {str(saved)[:200]}")
        if not isinstance(saved, dict) or saved.get("method") not in CALIBRATIONS:
            raise bad
        method = saved["method"]
        params = {k: v for k, v in saved.items() if k != "method"}
        want = {"none": set(), "temperature": {"a", "b"}, "platt": {"a", "b"},
                "isotonic": {"x", "y"}}[method]
        if set(params) != want:
            raise bad
        if method == "isotonic":
            x, y = params["x"], params["y"]
            if not (isinstance(x, list) and isinstance(y, list) and 0 < len(x) == len(y)
                    and all(_finite(v) for v in x + y) and all(0 <= v <= 1 for v in y)
                    and all(a <= b for a, b in zip(x, x[1:], strict=False))):
                raise bad
        elif params and (not all(_finite(v) for v in params.values()) or params["a"] < 0):
            raise bad
        return cls(method, params)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width bin of ``p`` (the last one closed): the count, the mean predicted
    probability and the observed rate of label 1 (NaN in empty bins)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=p, minlength=bins) / count
        rate = np.bincount(which, weights=y, minlength=bins) / count
    return {"count": count.tolist(), "mean_prob": conf.tolist(), "rate": rate.tolist()}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of p(label 1): the count-weighted mean gap between each bin's mean probability and
    its observed rate of label 1, over ``bins`` equal-width bins."""
    r = reliability(y, p, bins)
    count = np.array(r["count"])
    gaps = np.abs(np.nan_to_num(np.array(r["mean_prob"]) - np.array(r["rate"])))
    return float((count * gaps).sum() / max(count.sum(), 1))
