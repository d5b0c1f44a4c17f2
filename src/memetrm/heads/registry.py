"""``create_head(name, input_dims, **cfg)`` and safetensors + JSON checkpoints."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from memetrm.errors import ConfigError
from memetrm.heads.base import Head
from memetrm.utils import atomic_write_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class HeadEntry:
    cls: type[Head]
    preset: dict[str, Any] = field(default_factory=dict)
    #: training-config overrides this preset implies (e.g. the paper's lr and epochs)
    train: dict[str, Any] = field(default_factory=dict)
    #: part of ``--heads all``; aliases and costly variants of a listed head are not
    in_all: bool = True


_HEADS: dict[str, HeadEntry] = {}


def register_head(name: str, cls: type[Head], train: dict[str, Any] | None = None,
                  in_all: bool = True, **preset: Any) -> None:
    """Register a head class under a name; presets (``trm-seed``) reuse a class with defaults."""
    _HEADS[name] = HeadEntry(cls, preset, train or {}, in_all)


def list_heads(all_only: bool = False) -> list[str]:
    """Registered names; ``all_only`` keeps those ``--heads all`` runs."""
    return sorted(n for n, e in _HEADS.items() if e.in_all or not all_only)


def head_entry(name: str) -> HeadEntry:
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}; known: {list_heads()}")
    return _HEADS[name]


def create_head(name: str, input_dims: dict[str, int], token_dims: dict[str, int] | None = None,
                **cfg: Any) -> Head:
    entry = head_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.cls.config_class)}
    unknown = set(cfg) - fields
    if unknown:
        raise ConfigError(f"head {name!r} has no option(s) {sorted(unknown)}; options: {sorted(fields)}")
    config = entry.cls.config_class(**{**entry.preset, **cfg})
    head = entry.cls(config, input_dims, token_dims)
    head.registry_name = name
    return head


def save_pretrained(head: Head, path: str | Path, **meta: Any) -> Path:
    """Write ``model.safetensors`` + ``config.json`` atomically; ``meta`` carries threshold etc."""
    config = {
        "head": getattr(head, "registry_name", head.name),
        "config": dataclasses.asdict(head.cfg),
        "input_dims": head.input_dims,
        "token_dims": head.token_dims,
        **meta,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    with atomic_write_dir(Path(path)) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return Path(path)


def load_config(path: str | Path) -> dict[str, Any]:
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {path}: not a memetrm checkpoint")
    return json.loads(cfg_path.read_text())


def from_pretrained(path: str | Path) -> tuple[Head, dict[str, Any]]:
    """Rebuild a head from its JSON config and safetensors weights (no pickle involved)."""
    config = load_config(path)
    head = create_head(config["head"], config["input_dims"], config.get("token_dims") or None,
                       **config["config"])
    head.load_state_dict(load_file(str(Path(path) / WEIGHTS_NAME)))
    return head.eval(), config
