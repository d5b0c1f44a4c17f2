"""Policies: what a moderation team does with a score, as actions at operating points.

A policy file (YAML) names actions in order, each at an operating point; the first whose
threshold the calibrated probability reaches wins, and ``default`` takes the rest::

    actions:
      remove: precision>=0.9      # chosen on the model's dev scores, like --threshold-metric
      review: recall>=0.95
    default: allow
    communities:                  # selected by a request's ``community`` field
      kids:
        actions: {remove: precision>=0.8, review: recall>=0.99}

An operating point is a threshold metric (``precision>=P``, ``recall>=R``, ``fpr<=F``, ``f1``,
...), chosen on the dev labels and calibrated dev probabilities saved with the model, or a fixed
calibrated probability (``remove: 0.95``). A community section may set ``actions``, ``default``
or both; what it leaves out is the base policy's. Without a policy file a model's one rule is
its decision threshold: the action is the label, as the verdict has always been.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memetrm.config import read_yaml
from memetrm.errors import ConfigError, DataError
from memetrm.evaluation.calibration import Calibrator
from memetrm.evaluation.metrics import (
    band_rates,
    choose_threshold,
    compute_metrics,
    parse_threshold_metric,
)
from memetrm.utils import plural

#: the action of a policy file that names no ``default``
DEFAULT_ACTION = "allow"
#: longest community name a request may send
MAX_COMMUNITY_CHARS = 200


@dataclass(frozen=True)
class Rule:
    action: str
    #: a threshold metric chosen on dev (``precision>=0.9``) or a fixed calibrated probability
    point: str | float


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default: str


@dataclass(frozen=True)
class PolicyFile:
    """A policy file as written: rule sets, not yet tied to a model."""

    base: RuleSet
    communities: dict[str, RuleSet]
    name: str

    @classmethod
    def read(cls, path: str | Path) -> PolicyFile:
        return cls.parse(read_yaml(path), str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], where: str) -> PolicyFile:
        _only(data, {"actions", "default", "communities"}, where)
        if "actions" not in data:
            raise ConfigError(f"{where}: a policy names its actions in order under 'actions', "
                              "e.g. {remove: precision>=0.9, review: recall>=0.95}")
        base = _rule_set(data, None, where)
        communities = data.get("communities") or {}
        if not isinstance(communities, dict):
            raise ConfigError(f"{where}: 'communities' must map community names to "
                              "{actions, default} sections")
        return cls(base, {str(name): _rule_set(section, base, f"{where}: communities.{name}")
                          for name, section in communities.items()}, Path(where).name)


def _only(data: Any, keys: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {sorted(keys)}")
    unknown = sorted(set(map(str, data)) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a policy section has "
                          f"{sorted(keys)}")


def _rule_set(section: Any, base: RuleSet | None, where: str) -> RuleSet:
    _only(section, {"actions", "default"} | ({"communities"} if base is None else set()), where)
    default = section.get("default", base.default if base else DEFAULT_ACTION)
    if not isinstance(default, str) or not default.strip():
        raise ConfigError(f"{where}: 'default' must be an action name, got {default!r}")
    if "actions" not in section:
        return RuleSet(base.rules if base else (), default)
    actions = section["actions"]
    if not isinstance(actions, dict) or not actions:
        raise ConfigError(f"{where}: 'actions' must map action names to operating points, in "
                          "order, e.g. {remove: precision>=0.9, review: recall>=0.95}")
    rules = []
    for action, point in actions.items():
        if not isinstance(action, str) or not action.strip():
            raise ConfigError(f"{where}: an action name must be a non-empty string, got {action!r}")
        if action == default:
            raise ConfigError(f"{where}: {action!r} is both a rule's action and the default")
        rules.append(Rule(action, _point(point, f"{where}: actions.{action}")))
    return RuleSet(tuple(rules), default)


def _point(point: Any, where: str) -> str | float:
    if isinstance(point, int | float) and not isinstance(point, bool):
        if not 0 <= point <= 1:
            raise ConfigError(f"{where}: a fixed operating point is a calibrated probability in "
                              f"[0, 1], got {point!r}")
        return float(point)
    if not isinstance(point, str):
        raise ConfigError(f"{where}: an operating point is a threshold metric (precision>=0.9) "
                          f"or a probability, got {point!r}")
    try:
        parse_threshold_metric(point)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return point.replace(" ", "")


@dataclass(frozen=True)
class OperatingPoint:
    """One rule tied to a model: its threshold on the calibrated scale."""

    action: str
    #: the rule as written (``precision>=0.9``, ``0.95``, or ``threshold`` for a model's own)
    rule: str
    threshold: float
    #: where the threshold came from: the dev split's name, ``fixed`` or the model's threshold
    chosen_on: str
    #: the rule's constraint holds on dev at the threshold (else it is the closest to holding)
    met: bool = True


@dataclass(frozen=True)
class Decisions:
    """A compiled rule set: operating points in order, then the default."""

    points: tuple[OperatingPoint, ...]
    default: str
    #: the community whose section this is (None: the base policy)
    community: str | None = None

    def bands(self) -> list[tuple[OperatingPoint | None, float, float | None]]:
        """(operating point, low, high) per rule, then (None, 0, high) for the default: the
        calibrated probabilities ``[low, high)`` each gets, the first rule winning."""
        out: list[tuple[OperatingPoint | None, float, float | None]] = []
        high = None
        for p in self.points:
            low = p.threshold if high is None else min(p.threshold, high)
            out.append((p, low, high))
            high = low
        return [*out, (None, 0.0, high)]


@dataclass(frozen=True)
class DevScores:
    """The model's dev labels and calibrated probabilities, which operating points come from."""

    split: str
    labels: np.ndarray
    prob: np.ndarray

    @classmethod
    def of_model(cls, config: dict[str, Any], calibrator: Calibrator, where: str
                 ) -> DevScores | None:
        saved = config.get("dev_scores")
        if saved is None:
            return None
        ok = (isinstance(saved, dict) and isinstance(saved.get("labels"), list)
              and isinstance(saved.get("prob_raw"), list)
              and len(saved["labels"]) == len(saved["prob_raw"]) > 0
              and set(saved["labels"]) <= {0, 1}
              and all(isinstance(v, int | float) and 0 <= v <= 1 for v in saved["prob_raw"]))
        if not ok:
            raise ConfigError(f"{where}: 'dev_scores' must hold 'labels' (0/1) and 'prob_raw' "
                              "(probabilities in [0, 1]) of equal, non-zero length")
        return cls(str(saved.get("split", "dev")), np.array(saved["labels"]),
                   calibrator(np.array(saved["prob_raw"], dtype=float)))


class Policy:
    """A policy tied to one model revision: every operating point chosen on its dev scores.
    ``decide`` maps a calibrated probability (or a list's label) to an action and says why."""

    def __init__(self, base: Decisions, communities: dict[str, Decisions],
                 name: str | None, dev: DevScores | None) -> None:
        self.base, self.communities, self.name, self.dev = base, communities, name, dev

    @classmethod
    def of_model(cls, spec: PolicyFile | None, config: dict[str, Any], calibrator: Calibrator,
                 threshold: float, label_names: list[str], where: str) -> Policy:
        """``spec`` compiled against a model; None: the model's threshold as the one rule."""
        dev = DevScores.of_model(config, calibrator, where)
        if spec is None:
            point = OperatingPoint(label_names[1], "threshold", threshold, "the model's threshold")
            return cls(Decisions((point,), label_names[0]), {}, None, dev)

        def compile_set(rules: RuleSet, community: str | None) -> Decisions:
            return Decisions(tuple(_operating_point(r, dev, where) for r in rules.rules),
                             rules.default, community)

        return cls(compile_set(spec.base, None),
                   {c: compile_set(rs, c) for c, rs in spec.communities.items()}, spec.name, dev)

    def rules_for(self, community: str | None) -> Decisions:
        return self.communities.get(community, self.base) if community is not None else self.base

    def decide(self, prob: float, community: str | None = None) -> dict[str, Any]:
        """``action`` and ``action_reason`` for a calibrated probability: the first operating
        point it reaches, else the default."""
        rules = self.rules_for(community)
        for p in rules.points:
            if prob >= p.threshold:
                return self._answer(rules, p.action, f"{p.action}: {p.rule}", p.threshold,
                                    community, f"p {prob:.3f} >= {p.threshold:.3f}, the "
                                    f"operating point of {_point_words(p)}")
        lowest = min(rules.points, key=lambda p: p.threshold, default=None)
        below = (f"p {prob:.3f} < {lowest.threshold:.3f}, below every operating point"
                 if lowest else "no rules")
        return self._answer(rules, rules.default, "default", None, community,
                            f"{below}: the default")

    def for_label(self, label: int, community: str | None = None) -> dict[str, Any]:
        """A known-meme list's answer as an action: label 1 takes the first rule's action,
        label 0 the default."""
        rules = self.rules_for(community)
        first = rules.points[0] if label and rules.points else None
        action = first.action if first else rules.default
        return self._answer(rules, action, f"list: {action}", None, community,
                            f"a listed meme of label {label}: "
                            + ("the first action" if first else "the default"))

    def _answer(self, rules: Decisions, action: str, rule: str, threshold: float | None,
                community: str | None, words: str) -> dict[str, Any]:
        if community is not None and rules.community is None and self.name is not None:
            words += f"; no section for community {community!r}: the base policy"
        elif rules.community is not None:
            words += f"; community {rules.community!r}"
        return {"action": action, "action_reason": {
            "rule": rule, "threshold": threshold, "policy": self.name,
            "community": rules.community, "words": words}}

    def describe(self) -> dict[str, Any]:
        """The compiled policy, for ``/v1/model``."""
        def one(d: Decisions) -> dict[str, Any]:
            return {"rules": [{"action": p.action, "rule": p.rule, "threshold": p.threshold,
                               "chosen_on": p.chosen_on, "met": p.met} for p in d.points],
                    "default": d.default}
        return {"name": self.name, **one(self.base),
                "communities": {c: one(d) for c, d in self.communities.items()}}

    def expected_rates(self, community: str | None = None) -> list[dict[str, Any]]:
        """Per action of a rule set, in order, then the default: its operating point and what
        share of the dev memes it gets, with their precision and recall for label 1; and for a
        rule, the precision and recall of all memes at or above its threshold (what the rule
        asked of dev, whatever earlier rules took)."""
        if self.dev is None:
            raise ConfigError("the model keeps no dev scores (it was saved before policies "
                              "existed): retrain it to see a policy's expected rates")
        rules = self.rules_for(community)
        dev = self.dev
        return [{"action": p.action if p else rules.default, "rule": p.rule if p else "default",
                 "threshold": p.threshold if p else None, "met": p.met if p else True,
                 **band_rates(dev.labels, dev.prob, low, high),
                 "at_threshold": band_rates(dev.labels, dev.prob, p.threshold) if p else None}
                for p, low, high in rules.bands()]


def _point_words(p: OperatingPoint) -> str:
    if p.rule == "threshold":
        return f"{p.action} (the model's threshold)"
    if p.chosen_on == "fixed":
        return f"{p.action} (a fixed probability)"
    return f"{p.action} ({p.rule} on {p.chosen_on}" + ("" if p.met else ", not reached") + ")"


def _operating_point(rule: Rule, dev: DevScores | None, where: str) -> OperatingPoint:
    if isinstance(rule.point, float):
        return OperatingPoint(rule.action, f"p>={rule.point:g}", rule.point, "fixed")
    if dev is None:
        raise ConfigError(f"{where}: the model keeps no dev scores (saved before policies "
                          f"existed), so {rule.action}: {rule.point} cannot be chosen on dev; "
                          "retrain it, or give the action a fixed probability "
                          f"({rule.action}: 0.9)")
    thr = choose_threshold(dev.labels, dev.prob, rule.point)
    name, op, bound = parse_threshold_metric(rule.point)
    value = compute_metrics(dev.labels, dev.prob, thr)[name]
    met = op is None or (value <= bound if op == "<=" else value >= bound)  # type: ignore[operator]
    return OperatingPoint(rule.action, rule.point, thr, dev.split, bool(met))


def check_community(value: Any) -> str | None:
    """A request's ``community``: None, or a name of at most ``MAX_COMMUNITY_CHARS``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DataError(f"'community' must be a string, got {type(value).__name__}")
    if len(value) > MAX_COMMUNITY_CHARS:
        raise DataError(f"'community' is {plural(len(value), 'character')}, above the limit "
                          f"of {MAX_COMMUNITY_CHARS}")
    return value
