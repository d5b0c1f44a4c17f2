"""``tuned:PATH``: a text tower tuned by ``memetrm tune`` beside the packaged image tower.

The cache identity is the SHA-256 of the folder's ``model.safetensors`` (not its path or
mtime), so features of one tuned tower are reused wherever it is copied, and a re-tuned tower
at the same path gets new features. Runs record it in their provenance as the encoder version.

A tuned folder is untrusted like a model folder: its ``config.json`` is size-checked and its
sizes bounded, and the transformer it describes is built on the meta device and matched to the
weights' shapes before anything is allocated.

A model trained on a tuned tower records it under ``tuned_towers`` in its config: the SHA-256
of its weights and where it was, relative to the model folder and as an absolute path. Scoring
looks for it there (never relative to the current directory) and refuses a tower whose weights
changed: the head was fitted to the old tower's features.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from memetrm.encoders.base import Encoder
from memetrm.encoders.registry import register_encoder
from memetrm.encoders.runtimes import split_runtime, with_runtime
from memetrm.encoders.towers import EFFNET_VERSION, Towers, file_sha256
from memetrm.errors import ConfigError
from memetrm.modelstore import MAX_CONFIG_BYTES, MAX_COUNT, MAX_WIDTH
from memetrm.utils import split_field

IMAGE_TOWER = "efficientnet_lite0"
WEIGHTS = "model.safetensors"
#: the model-config key recording the tuned towers a model was trained on
TOWERS_KEY = "tuned_towers"
#: the largest vocabulary a tuned tower may declare (multilingual towers have about 250,000)
MAX_VOCAB = 2**18
#: transformer config keys bounded as counts (``MAX_COUNT``) and as widths (``MAX_WIDTH``)
_COUNT_KEYS = {"num_hidden_layers", "num_attention_heads", "num_key_value_heads", "n_layer",
               "n_layers", "n_head", "n_heads"}
_WIDTH_KEYS = {"hidden_size", "intermediate_size", "max_position_embeddings", "type_vocab_size",
               "d_model", "dim", "hidden_dim", "n_embd", "n_positions", "embedding_size"}
#: parameters the config may build beyond those the weights hold (buffers, untied copies)
_SLACK = 2**20


def tuned_folder(arg: str) -> Path:
    """The tuned tower's folder, checked to hold sentence-transformers weights."""
    if not arg:
        raise ConfigError("tuned encoder needs a folder: --encoder tuned:PATH (from memetrm tune)")
    path = Path(arg).expanduser()
    if not (path / WEIGHTS).is_file():
        raise ConfigError(f"{path}: no {WEIGHTS}; give a folder written by memetrm tune")
    return path


def weights_sha256(folder: Path) -> str:
    """SHA-256 of the folder's weights, computed once per file version in a process."""
    weights = folder / WEIGHTS
    try:
        return file_sha256(weights)
    except OSError as e:
        raise ConfigError(f"{weights}: cannot be read ({e.strerror or e})") from e


def tuned_version(arg: str) -> str:
    return f"{EFFNET_VERSION}+tuned-{weights_sha256(tuned_folder(arg))[:16]}"


def _read_json(path: Path) -> Any:
    """A JSON file, size-checked before it is read."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes, above the limit of {MAX_CONFIG_BYTES:,}")
        return json.loads(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from e
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e


def check_tower(folder: Path) -> None:
    """Refuse a tuned tower whose transformer config is out of bounds, or asks for other or
    many more parameters than its weights hold, before any of it is allocated."""
    from safetensors import SafetensorError, safe_open

    where = folder / "config.json"
    if not where.is_file():
        raise ConfigError(f"{where}: missing; give a folder written by memetrm tune")
    config = _read_json(where)
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: must hold a JSON object, got {type(config).__name__}")
    for key, v in config.items():
        limit = (MAX_COUNT if key in _COUNT_KEYS else MAX_WIDTH if key in _WIDTH_KEYS
                 else MAX_VOCAB if key == "vocab_size" else None)
        if limit is not None and (isinstance(v, bool) or not isinstance(v, int)
                                  or not 0 <= v <= limit):
            raise ConfigError(f"{where}: {key} = {v!r}; must be an integer in [0, {limit:,}]")
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{folder / WEIGHTS}: not a readable safetensors file ({e})") from e
    try:
        from transformers import AutoConfig, AutoModel

        with torch.device("meta"):
            built = AutoModel.from_config(AutoConfig.from_pretrained(str(folder)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{where}: does not describe a transformer ({first})") from e
    built_shapes = {k: tuple(t.shape) for k, t in built.state_dict().items()}
    wrong = [k for k, shape in built_shapes.items() if k in shapes and shape != shapes[k]]
    if wrong:
        raise ConfigError(f"{where}: the weights do not fit the config (e.g. {wrong[0]!r} is "
                          f"{built_shapes[wrong[0]]} by the config, {shapes[wrong[0]]} in "
                          f"{WEIGHTS})")
    asked = sum(p.numel() for p in built.parameters())
    held = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if asked > 2 * held + _SLACK:
        raise ConfigError(f"{where}: asks for {asked:,} parameters; {WEIGHTS} holds {held:,}")


@register_encoder("tuned", version=tuned_version)
def _create_tuned(arg: str = "") -> Encoder:
    folder = tuned_folder(arg)
    check_tower(folder)
    enc = Towers(str(folder), IMAGE_TOWER)
    enc.version = tuned_version(arg)
    return enc


# --- towers recorded in a model ----------------------------------------------------------------


def _tuned_args(encoder: str, fields: Sequence[str]) -> list[str]:
    """The ``PATH`` of every ``tuned:PATH`` a model reads (its encoder and its fields')."""
    names = [encoder, *(split_field(f, encoder)[1] for f in fields)]
    bases = (split_runtime(n)[1] for n in names)
    return list(dict.fromkeys(b.removeprefix("tuned:") for b in bases if b.startswith("tuned:")))


def towers_meta(encoder: str | None, fields: Sequence[str], model_dir: str | Path
                ) -> dict[str, Any]:
    """What a model's config records about the tuned towers it is trained on (nothing when it
    reads none): each tower's weights digest and where it is, relative to ``model_dir`` and
    absolute, so scoring finds it from any working directory."""
    root = Path(model_dir).resolve()
    records = {}
    for arg in _tuned_args(encoder or "", fields):
        folder = tuned_folder(arg).resolve()
        records[arg] = {"sha256": weights_sha256(folder),
                        "path": Path(os.path.relpath(folder, root)).as_posix(),
                        "absolute": str(folder)}
    return {TOWERS_KEY: records} if records else {}


def locate_towers(config: dict[str, Any], model_dir: str | Path) -> dict[str, Path]:
    """``PATH`` -> the folder holding the weights the model was trained on, for every
    ``tuned:PATH`` of the model: beside the model folder first, then at its absolute path.
    A missing record, a missing tower or a tower with other weights is a ``ConfigError``."""
    model_dir = Path(model_dir)
    encoder, fields = str(config.get("encoder") or ""), list(config.get("fields") or [])
    records = config.get(TOWERS_KEY) or {}
    found = {}
    for arg in _tuned_args(encoder, fields):
        record = records.get(arg) if isinstance(records, dict) else None
        if not (isinstance(record, dict)
                and all(isinstance(record.get(k), str) for k in ("sha256", "path", "absolute"))):
            raise ConfigError(f"{model_dir}: trained on tuned:{arg} without a record of that "
                              f"tower's weights in {TOWERS_KEY}; retrain it (memetrm train "
                              f"--encoder tuned:PATH --save {model_dir}) to record them")
        places = list(dict.fromkeys([model_dir / record["path"], Path(record["absolute"])]))
        present = [p for p in places if (p / WEIGHTS).is_file()]
        if not present:
            raise ConfigError(f"{model_dir}: its tuned tower is neither at {places[0]} (beside "
                              f"the model) nor at {places[-1]}; put it back, or retrain the "
                              f"model on a tower (memetrm train --encoder tuned:PATH --save "
                              f"{model_dir})")
        match = next((p for p in present if weights_sha256(p) == record["sha256"]), None)
        if match is None:
            got = weights_sha256(present[0])
            raise ConfigError(f"{present[0]}: this tuned tower changed since {model_dir} was "
                              f"trained on it (weights SHA-256 {got[:12]}, trained on "
                              f"{record['sha256'][:12]}), so its features no longer fit the "
                              f"model; retrain it on this tower: memetrm train --encoder "
                              f"tuned:{present[0]} --save {model_dir} (with the other settings "
                              "of its config's run_config)")
        found[arg] = match.resolve()
    return found


def with_towers(name: str, located: dict[str, Path]) -> str:
    """``name`` with a ``tuned:PATH`` replaced by the folder ``locate_towers`` found for it."""
    runtime, base = split_runtime(name)
    arg = base.removeprefix("tuned:")
    if not base.startswith("tuned:") or arg not in located:
        return name
    return with_runtime(f"tuned:{located[arg]}", runtime)
