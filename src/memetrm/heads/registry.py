"""``@register_head`` beside each head class, ``create_head(name, input_dims, **cfg)``, and
safetensors + JSON model directories (``save_pretrained`` / ``from_pretrained``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX as EXTRA

from memetrm.checkpoint import load_checkpoint, save_checkpoint
from memetrm.config import check_type
from memetrm.errors import ConfigError
from memetrm.heads.base import Head, HeadConfig
from memetrm.layers import MemoryBank
from memetrm.modelstore import check_sizes, model_file
from memetrm.progress import warn

#: every module's extra state (``get_extra_state``: a memory's ids, a head's fitted values) by
#: state-dict key, as JSON inside the weights file: it can never disagree with the weights
EXTRA_STATE = "extra_state"
#: where a model saved before its modules had extra state kept its memories' ids (its fitted
#: values were only in config.json)
LEGACY_MEMORY_IDS = "memory_ids"
#: the config key recording each memory's saved approximate index: its file, the file's sha256
#: and the index's parameters (links, ``ef_search``, held-out recall), by module name
INDEX_KEY = "memory_index"
#: the suffix of those files (derived from the memories: never carried from an older revision)
INDEX_SUFFIX = ".faiss"

H = TypeVar("H", bound=type[Head])


@dataclass
class HeadEntry:
    cls: type[Head]
    #: head options this name implies over the config class's defaults
    preset: dict[str, Any] = field(default_factory=dict)
    #: training-config overrides this name implies (e.g. the paper's lr and epochs)
    train: dict[str, Any] = field(default_factory=dict)
    #: part of ``--heads all``; costly variants of a listed head are not
    in_all: bool = True

    @property
    def description(self) -> str:
        return self.cls.description or (self.cls.__doc__ or "").strip().split("\n")[0]


_HEADS: dict[str, HeadEntry] = {}


def register_head(name: str, *, train: dict[str, Any] | None = None, in_all: bool = True,
                  **preset: Any) -> Callable[[H], H]:
    """Class decorator: register a head under ``name``; stack it to add presets of one class."""

    def deco(cls: H) -> H:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered (by {_HEADS[name].cls.__name__})")
        _HEADS[name] = HeadEntry(cls, preset, dict(train or {}), in_all)
        return cls

    return deco


def list_heads(all_only: bool = False) -> list[str]:
    """Registered names; ``all_only`` keeps those ``--heads all`` runs."""
    return sorted(n for n, e in _HEADS.items() if e.in_all or not all_only)


def head_entry(name: str) -> HeadEntry:
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}; known: {list_heads()}")
    return _HEADS[name]


def head_config(name: str, **cfg: Any) -> HeadConfig:
    """The head's config: class defaults < the name's preset < ``cfg``; unknown keys are named."""
    entry = head_entry(name)
    known = {f.name for f in dataclasses.fields(entry.cls.config_class)}
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"head {name!r} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
    hints = typing.get_type_hints(entry.cls.config_class)
    for key, value in cfg.items():
        check_type(f"head_cfg.{key}", value, hints[key])
    return entry.cls.config_class(**{**entry.preset, **cfg})


def create_head(name: str, input_dims: dict[str, int], token_dims: dict[str, int] | None = None,
                **cfg: Any) -> Head:
    """Build a registered head for features of the given widths, e.g. ``create_head("mlp",
    {"image": 1280, "text": 384}, hidden=256)``; ``memetrm list`` shows the names."""
    config = head_config(name, **cfg)
    try:
        head = head_entry(name).cls(config, input_dims, token_dims)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"head {name!r} cannot be built with {config} for inputs {input_dims} "
                          f"({str(e).splitlines()[0]})") from e
    head.name = name
    return head


def save_pretrained(head: Head, path: str | Path, card: str | None = None,
                    files: dict[str, bytes] | None = None, **meta: Any) -> Path:
    """Write ``model.safetensors`` (with every module's extra state: memory ids, fitted
    values) + ``config.json`` (+ a ``README.md`` model card) atomically; ``meta`` carries the
    threshold, encoder, fields, provenance and so on; ``files`` are more files of the folder (a
    known-meme list). config.json's "fitted" is a readable copy of the fitted values."""
    if not head.name:
        raise ConfigError("only heads built by create_head (with a registered name) can be saved")
    fitted = {name: m.fitted() for name, m in head.named_modules()
              if isinstance(m, Head) and m.fitted_attrs}
    config = {"head": head.name, "config": dataclasses.asdict(head.cfg),
              "input_dims": head.input_dims, "token_dims": head.token_dims, "fitted": fitted,
              **{k: v for k, v in meta.items() if k != INDEX_KEY}}
    state = {k: v for k, v in head.state_dict().items() if k.endswith(EXTRA)}
    extra = {**{n: d for n, d in (files or {}).items() if not n.endswith(INDEX_SUFFIX)},
             **({"README.md": card.encode()} if card else {})}
    indexes = {}
    for name, m in head.named_modules():
        if isinstance(m, MemoryBank) and (saved := m.index_bytes()) is not None:
            (data, params), file = saved, f"{name or 'memory'}{INDEX_SUFFIX}"
            extra[file] = data
            indexes[name] = {**params, "file": file, "sha256": hashlib.sha256(data).hexdigest()}
    if indexes:
        config[INDEX_KEY] = indexes
    # none at all is left out: the same weights then save to the same bytes (safetensors writes
    # several metadata keys in no fixed order)
    return save_checkpoint(path, head, config, extra or None,
                           {EXTRA_STATE: json.dumps(state)} if any(state.values()) else None)


def from_pretrained(path: str | Path) -> tuple[Head, dict[str, Any]]:
    """Rebuild a head from its JSON config and safetensors weights (no pickle involved).

    The config is untrusted: its sizes are bounded, and the head is first built on the meta
    device (no memory) and its shapes matched to the weights before it is built for real."""
    config, weights, strings = load_checkpoint(path)
    check_sizes(config, path)

    def build() -> Head:
        return create_head(config["head"], config["input_dims"], config.get("token_dims") or None,
                           **config["config"])

    try:
        with torch.device("meta"):
            meta = build()
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as e:
        raise ConfigError(f"{path}: config.json does not describe a usable memetrm head "
                          f"({e})") from e
    shapes = {k: v for k, v in meta.state_dict().items() if not k.endswith(EXTRA)}
    wrong = sorted(k for k in shapes.keys() | weights.keys()
                   if not _fits(meta, k, shapes.get(k), weights.get(k)))
    if wrong:
        raise ConfigError(f"{path}: weights do not fit the config ({len(wrong)} tensor(s) "
                          f"differ in name or shape, e.g. {wrong[0]!r})")
    extra = _extra_state(meta, config, strings, Path(path))
    head = build()
    try:
        head.load_state_dict({**weights, **extra})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{path}: weights do not fit the config ({first})") from e
    except (ValueError, ConfigError) as e:
        raise ConfigError(f"{path}: the state stored with the weights does not fit ({e})") from e
    _attach_indexes(head, config, Path(path))
    return head.eval(), config


def _attach_indexes(head: Head, config: dict[str, Any], path: Path) -> None:
    """Give each memory the approximate index saved beside the weights. One that is missing,
    changed since it was saved, or does not fit the memory's rows is named and built anew on
    the first search (correct, but minutes at a million rows)."""
    saved = config.get(INDEX_KEY) or {}
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: config.json {INDEX_KEY!r} must map memories to their index")
    for name, entry in saved.items():
        try:
            bank = head.get_submodule(name)
            if not isinstance(bank, MemoryBank):
                raise ValueError(f"{name!r} is not a memory")
            file = model_file(path, entry["file"])
            if file is None:
                raise ValueError(f"{entry['file']} is missing")
            data = file.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError(f"{entry['file']} changed since the model was saved")
            bank.attach_index(data, {k: v for k, v in entry.items()
                                     if k not in ("file", "sha256")})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            warn(f"{path}: the saved index of memory {name!r} is not used ({e}); it is built "
                 "anew on the first search")


def _extra_state(meta: Head, config: dict[str, Any], strings: dict[str, str],
                 path: Path) -> dict[str, Any]:
    """The modules' extra state stored with the weights; for a model saved before there was
    any, rebuilt from where it kept the same facts (memory ids beside the weights, fitted
    values in config.json)."""
    try:
        if EXTRA_STATE in strings:
            state = json.loads(strings[EXTRA_STATE])
        else:
            ids, fitted = json.loads(strings.get(LEGACY_MEMORY_IDS) or "{}"), config.get("fitted") or {}
            state = {(f"{name}.{EXTRA}" if name else EXTRA):
                     {"ids": ids.get(name, [])} if isinstance(m, MemoryBank) else fitted.get(name, {})
                     for name, m in meta.named_modules() if isinstance(m, MemoryBank | Head)}
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: the state stored with the weights is not a JSON mapping "
                          f"({e})") from e
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: the state stored with the weights is not a JSON mapping")
    return state


def _fits(meta: Head, key: str, want: torch.Tensor | None, saved: torch.Tensor | None) -> bool:
    """Whether a saved tensor has the shape the config implies; a memory's rows may be any
    number (it grows after training)."""
    if want is None or saved is None:
        return False
    module = meta.get_submodule(key.rpartition(".")[0]) if "." in key else meta
    if isinstance(module, MemoryBank):
        return want.shape[1:] == saved.shape[1:]
    return want.shape == saved.shape
