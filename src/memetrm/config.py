"""Typed run configuration, loadable from YAML, with ``a.b=value`` command-line overrides.

Precedence, lowest first: ``RunConfig`` defaults < the head's preset (its options and training
overrides, applied when the run is resolved) < the YAML file < options the user typed < ``--set``.
Typed options and ``--set`` go through one rule: each names a key path (``train.lr``) and a
value, checked against that key's type.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from memetrm.errors import ConfigError

#: what to do with a record whose image file is missing: fail naming ids, or drop and count
MISSING_IMAGE_POLICIES = ("error", "skip")
#: what to do with a malformed dataset line: fail listing them, or leave out and count
BAD_LINE_POLICIES = ("error", "skip")
#: how a saved model's probabilities are calibrated on dev (``memetrm.evaluation.calibration``)
CALIBRATIONS = ("temperature", "platt", "isotonic", "none")


@dataclass(frozen=True)
class DataOptions:
    """Where records are read from and how bad ones are handled, plus the feature cache: what
    every command that reads a dataset passes down to extraction."""

    data_root: str | None = None
    cache_dir: str | None = None
    on_missing_image: str = "error"
    on_bad_line: str = "error"
    allow_outside_images: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("on_missing_image", MISSING_IMAGE_POLICIES),
                              ("on_bad_line", BAD_LINE_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass
class RunConfig:
    """One experiment: data, encoder, head and its options, training options, seeds, outputs."""

    dataset: str = "multioff"
    #: None: the default encoder (``memetrm.encoders.DEFAULT_ENCODER``)
    encoder: str | None = None
    head: str = "mlp"
    #: head options passed to ``create_head`` (over the head preset's defaults)
    head_cfg: dict[str, Any] = field(default_factory=dict)
    #: training options over the head preset's, over ``TrainConfig``'s defaults
    train: dict[str, Any] = field(default_factory=dict)
    #: text/image fields fed to the head; None = the dataset's default
    fields: list[str] | None = None
    seeds: int = 5
    #: K > 1: merge train and dev and cross-validate (K folds) instead of selecting on dev
    cv: int = 0
    data_root: str | None = None
    cache_dir: str | None = None
    #: error (default) or skip: records whose image file is missing
    on_missing_image: str = "error"
    #: error (default: one error lists the bad lines) or skip (left out, counted)
    on_bad_line: str = "error"
    #: follow image paths that leave the dataset folder
    allow_outside_images: bool = False
    train_split: str | None = None
    #: fit on these training memes only: a file of ids (one per line) or a ``tuning.json``
    #: (its ``held_out_ids``: the memes a tuned tower never saw)
    train_ids: str | None = None
    dev_split: str | None = None
    test_split: str | None = None
    #: extra splits to evaluate (e.g. dev_unseen)
    eval_splits: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    #: fitted on dev (out-of-fold under cv) and saved with the model: temperature, platt,
    #: isotonic (1,000 examples or more) or none
    calibration: str = "temperature"
    #: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps: extraction and training
    device: str = "auto"
    #: encoder precision on an accelerator: auto, fp32, fp16 or bf16 (cached features stay fp32)
    precision: str = "auto"
    #: where results.json and predictions.json go
    out_dir: str | None = None
    #: save the best-dev seed's checkpoint here
    save: str | None = None

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name])
        if self.seeds < 1:
            raise ConfigError(f"seeds must be a positive integer, got {self.seeds!r}")
        if self.cv == 1 or self.cv < 0:
            raise ConfigError(f"cv must be 0 (select on dev) or a number of folds >= 2, got {self.cv!r}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be an integer >= 0, got {self.bootstrap!r}")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        self.data  # noqa: B018  (checks the data policies)

    @property
    def data(self) -> DataOptions:
        return DataOptions(self.data_root, self.cache_dir, self.on_missing_image, self.on_bad_line,
                           self.allow_outside_images)


def check_type(name: str, value: Any, hint: Any) -> None:
    """Refuse a value that does not fit its field's annotation (an int is a float too)."""
    if not _fits(value, hint):
        raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, f"a {getattr(typing.get_origin(hint), '__name__', hint)}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-4`` is a number, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$"
               r"|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def parse_value(text: str) -> Any:
    """A command-line value by YAML's rules: ``3`` int, ``1e-4`` float, ``true`` bool,
    ``[a, b]`` list, anything else the string itself."""
    try:
        return load_yaml(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b] = value`` for ``key = "a.b"``, creating the mappings on the way."""
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p!r} is not a mapping")
    node[leaf] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
        key, value = item.split("=", 1)
        set_key(data, key.strip(), parse_value(value))
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = load_yaml(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping of keys to values")
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    typed: dict[str, Any] | None = None) -> RunConfig:
    """YAML file < ``typed`` options < ``--set`` overrides.

    ``typed`` maps key paths (``"dataset"``, ``"train.threshold_metric"``) to what the user
    typed; None means not typed and never overrides the file.
    """
    data = read_yaml(path) if path else {}
    for key, value in (typed or {}).items():
        if value is not None:
            set_key(data, key, value)
    apply_overrides(data, overrides or [])
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    return RunConfig(**data)
