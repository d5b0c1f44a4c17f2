"""Model directories: ``model.safetensors`` + ``config.json``, written atomically, never unpickled.

Heads and alignment runs share this format; each adds its own keys to the JSON config. The
folder is written and read through ``memetrm.modelstore`` (one writer at a time, readers never
see a half-written model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from memetrm.errors import ConfigError
from memetrm.modelstore import CONFIG_NAME, WEIGHTS_NAME, read_config, read_model, write_model
from memetrm.utils import plural

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_checkpoint", "load_config", "load_weights",
           "save_checkpoint", "weights_path"]


def weights_path(path: str | Path) -> Path:
    return Path(path) / WEIGHTS_NAME


def save_checkpoint(path: str | Path, module: torch.nn.Module, config: dict[str, Any],
                    extra_files: dict[str, bytes] | None = None,
                    strings: dict[str, str] | None = None) -> Path:
    """Weights + config (+ metrics, plots) in one atomic write: a crash leaves no half-written
    model. A module's extra state (not a tensor) is the caller's to store in ``strings``. Weights
    holding NaN or infinities (training diverged) are refused, nothing written."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()
             if isinstance(v, torch.Tensor)}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ConfigError(f"{path}: not saved: {plural(len(bad), 'tensor')} hold NaN or infinite "
                          f"values, e.g. {bad[0]!r} (training diverged: lower train.lr or set "
                          "train.grad_clip)")
    return write_model(path, state, config, extra_files, strings)


def load_config(path: str | Path) -> dict[str, Any]:
    return read_config(path)


def load_checkpoint(path: str | Path
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str]]:
    """Config, weights and the strings stored with them, written together (never a config from
    one write, weights from another)."""
    return read_model(path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return read_model(path)[1]
