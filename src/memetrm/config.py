"""Typed run configuration, loadable from YAML, with ``a.b=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from memetrm.errors import ConfigError


@dataclass
class RunConfig:
    dataset: str = "multioff"
    encoder: str = "minilm-effnet"
    head: str = "mlp"
    #: head options passed to ``create_head`` (over the head preset's defaults)
    head_cfg: dict[str, Any] = field(default_factory=dict)
    #: training options over the head preset's, over ``TrainConfig``'s defaults
    train: dict[str, Any] = field(default_factory=dict)
    #: text/image fields fed to the head; None = the dataset's default
    fields: list[str] | None = None
    seeds: int = 5
    data_root: str | None = None
    cache_dir: str | None = None
    on_missing_image: str = "error"
    train_split: str | None = None
    dev_split: str | None = None
    test_split: str | None = None
    #: extra splits to evaluate (e.g. dev_unseen)
    eval_splits: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    #: where results.json and predictions.json go
    out_dir: str | None = None
    #: save the best-dev seed's checkpoint here
    save: str | None = None


def _coerce(value: str) -> Any:
    """YAML scalars: ``1e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list."""
    try:
        return float(value) if "e" in value.lower() and not value.isalpha() else yaml.safe_load(value)
    except (ValueError, yaml.YAMLError):
        return yaml.safe_load(value) if value else value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
        key, value = item.split("=", 1)
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _coerce(value)
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    **kwargs: Any) -> RunConfig:
    """YAML file < keyword arguments (CLI options) < ``--set a.b=v`` overrides."""
    data: dict[str, Any] = {}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in kwargs.items() if v is not None})
    apply_overrides(data, overrides or [])
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    return RunConfig(**data)
