"""Typed run configuration, loadable from YAML, with ``a.b=value`` command-line overrides.

Precedence, lowest first: ``RunConfig`` defaults < the head's preset (its options and training
overrides, applied when the run is resolved) < the YAML file < options the user typed < ``--set``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from memetrm.data.registry import MISSING_IMAGE_POLICIES
from memetrm.data.validation import BAD_LINE_POLICIES
from memetrm.errors import ConfigError

DEFAULT_ENCODER = "minilm-effnet"


@dataclass
class RunConfig:
    """One experiment: data, encoder, head and its options, training options, seeds, outputs."""

    dataset: str = "multioff"
    encoder: str = DEFAULT_ENCODER
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
    dev_split: str | None = None
    test_split: str | None = None
    #: extra splits to evaluate (e.g. dev_unseen)
    eval_splits: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    #: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps: extraction and training
    device: str = "auto"
    #: encoder precision on an accelerator: auto, fp32, fp16 or bf16 (cached features stay fp32)
    precision: str = "auto"
    #: where results.json and predictions.json go
    out_dir: str | None = None
    #: save the best-dev seed's checkpoint here
    save: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds must be a positive integer, got {self.seeds!r}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv == 1 or self.cv < 0:
            raise ConfigError(f"cv must be 0 (select on dev) or a number of folds >= 2, got {self.cv!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be an integer >= 0, got {self.bootstrap!r}")
        for name, allowed in (("on_missing_image", MISSING_IMAGE_POLICIES),
                              ("on_bad_line", BAD_LINE_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("head_cfg", "train"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping, got {getattr(self, name)!r}")


def _coerce(value: str) -> Any:
    """YAML scalars: ``1e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list."""
    try:
        return float(value) if "e" in value.lower() and not value.isalpha() else yaml.safe_load(value)
    except (ValueError, yaml.YAMLError):
        return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
        key, value = item.split("=", 1)
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a mapping")
        node[leaf] = _coerce(value)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping of keys to values")
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    **typed: Any) -> RunConfig:
    """YAML file < ``typed`` options (None = not typed, never overrides) < ``--set`` overrides."""
    data = read_yaml(path) if path else {}
    data.update({k: v for k, v in typed.items() if v is not None})
    apply_overrides(data, overrides or [])
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    return RunConfig(**data)
