"""Model directories: ``model.safetensors`` + ``config.json``, written atomically, never unpickled.

Heads and alignment runs share this format; each adds its own keys to the JSON config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def weights_path(path: str | Path) -> Path:
    return Path(path) / WEIGHTS_NAME


def save_checkpoint(path: str | Path, module: torch.nn.Module, config: dict[str, Any],
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Weights + config (+ metrics, plots) in one atomic write: a crash leaves no half-written model."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_write_dir(Path(path)) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(path)


def load_config(path: str | Path) -> dict[str, Any]:
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {path}: not a memetrm model directory")
    try:
        return json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg_path}: not valid JSON ({e})") from e


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    wpath = weights_path(path)
    if not wpath.is_file():
        raise ConfigError(f"no {WEIGHTS_NAME} in {path}: not a memetrm model directory")
    try:
        return load_file(str(wpath))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{wpath}: not a readable safetensors file ({e})") from e
