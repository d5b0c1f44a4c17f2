"""Model folders as shared, untrusted files: one writer at a time, and readers that never see
a missing or half-written model, even while a writer runs or after it was killed.

The layout stays ``config.json`` + ``model.safetensors`` (+ a card, metrics, plots). Each write
stamps both files with one ``revision`` (a digest of the weights, kept as a config key and a
safetensors metadata entry) and replaces them one file at a time with ``os.replace``,
``config.json`` last. Until then the weights the old config names are kept as a hard link
``.model.<revision>.safetensors``, so a reader that finds the weights newer than its config
reads that link instead; the writer removes it once ``config.json`` names the new weights. A
killed writer leaves the old model readable; its temporaries are removed by the next write.
Writers hold ``.memetrm.lock`` in the folder (``filelock``): two ``memory add`` runs on one
model queue, neither loses rows.

A folder that is a symlink is written through (the target is updated); a file inside the
folder that links outside it is refused on reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on use: commands read a model's config before loading it
    import torch

from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open

from memetrm.errors import ConfigError
from memetrm.utils import publish_mode

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REVISION_KEY = "revision"
LOCK_NAME = ".memetrm.lock"
#: staging folders of a write; any left when the lock is taken belong to a killed writer
STAGING_PREFIX = ".staging-"
#: a ``config.json`` above this is refused before it is read (a retrieval memory of 100,000
#: ids is about 3 MB)
MAX_CONFIG_BYTES = 64 * 2**20
#: how long a writer waits for another writer of the same folder
LOCK_TIMEOUT_S = 600.0
#: how long a reader retries while a writer is between its two renames
READ_RETRY_S = 5.0

_KEPT = re.compile(r"^\.model\.([0-9a-f]{32})\.safetensors$")
#: what older versions left beside a folder when killed mid-write (``atomic_write_dir``)
_LEGACY_TEMP = r"^\.{name}\.(old\d+|[a-z0-9_]{{8}})$"


def _kept_name(revision: str) -> str:
    return f".model.{revision}.safetensors"


def model_folder(path: str | Path) -> Path:
    """The real folder a model path names: a symlinked folder is written through."""
    path = Path(path)
    if path.is_symlink() and not path.resolve().is_dir():
        raise ConfigError(f"{path}: a symlink to {path.resolve()}, which is not a folder; "
                          "refusing to write through it")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder")
    return path.resolve()


@contextlib.contextmanager
def writer_lock(path: str | Path, *, create: bool = True,
                timeout: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Exclusive, re-entrant lock on a model folder (created if missing and ``create``), across
    processes; yields the real folder. Hold it around a read-modify-write such as adding to a
    memory."""
    folder = model_folder(path)
    if not create and not folder.is_dir():
        raise ConfigError(f"{path}: no such model folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{folder}: cannot create the model folder ({e.strerror})") from e
    lock = FileLock(folder / LOCK_NAME, timeout=timeout, is_singleton=True)
    try:
        lock.acquire()
    except Timeout as e:
        raise ConfigError(f"{folder}: another process has been writing this model for "
                          f"{timeout:g} s ({folder / LOCK_NAME}); try again later") from e
    except OSError as e:
        raise ConfigError(f"{folder}: cannot lock the model folder for writing "
                          f"({e.strerror})") from e
    try:
        yield folder
    finally:
        lock.release()


def _revision_of(weights: Path) -> str | None:
    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(REVISION_KEY)
    except (SafetensorError, OSError):
        return None


def _config_revision(folder: Path) -> str | None:
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get(REVISION_KEY)
    except (OSError, ValueError, AttributeError):
        return None


def remove_stale(folder: Path) -> None:
    """Temporaries of killed writers (call with the lock held): staging folders, kept weights no
    reader needs, and the hidden siblings older versions left beside the folder."""
    current = _config_revision(folder)
    needed = current if _revision_of(folder / WEIGHTS_NAME) != current else None
    for p in folder.iterdir():
        kept = _KEPT.match(p.name)
        if p.name.startswith(STAGING_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
        elif kept and kept.group(1) != needed:
            p.unlink(missing_ok=True)
    legacy = re.compile(_LEGACY_TEMP.format(name=re.escape(folder.name)))
    for p in folder.parent.iterdir():
        if legacy.match(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_model(path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                extra_files: dict[str, bytes] | None = None,
                strings: dict[str, str] | None = None) -> Path:
    """Publish weights + config (+ extra files) as one new revision of the folder at ``path``;
    ``strings`` travel inside the weights file (safetensors metadata), so they always match them.

    Readers of the folder see the old model or the new one, never a mix and never nothing, also
    when this process is killed at any point; files of the old revision that the new one does
    not have are removed."""
    from safetensors.torch import save_file

    revision = weights_revision(state, strings)
    with writer_lock(path) as folder:
        remove_stale(folder)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            files = {WEIGHTS_NAME: lambda p: save_file(
                         state, str(p), metadata={**(strings or {}), REVISION_KEY: revision}),
                     **{name: _bytes_writer(data) for name, data in (extra_files or {}).items()},
                     CONFIG_NAME: _bytes_writer(json.dumps({**config, REVISION_KEY: revision},
                                                           indent=2).encode())}
            for name, write in files.items():
                write(staging / name)
                publish_mode(staging / name, 0o666)
                _fsync(staging / name)
            _keep_old_weights(folder)
            for name in files:  # config.json last: it is what makes the new revision current
                os.replace(staging / name, folder / name)
            for p in folder.iterdir():
                if p.is_file() and not p.name.startswith(".") and p.name not in files:
                    p.unlink()
            remove_stale(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Path(path)


def weights_revision(state: dict[str, torch.Tensor], strings: dict[str, str] | None = None) -> str:
    """A digest of the weights (and the strings stored with them): the same weights saved twice
    are byte-identical, and weights that differ never share a revision (any config pairs safely
    with identical weights)."""
    import torch

    h = hashlib.sha256(json.dumps(strings or {}, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _bytes_writer(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _keep_old_weights(folder: Path) -> None:
    """Hard-link the weights the current config names, so readers of that config still find them
    once ``model.safetensors`` is replaced (already kept if a killed writer got that far)."""
    current = _config_revision(folder)
    weights = folder / WEIGHTS_NAME
    if current is None or not weights.is_file() or _revision_of(weights) != current:
        return
    kept = folder / _kept_name(current)
    kept.unlink(missing_ok=True)
    try:
        os.link(weights, kept)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(weights, kept)


def _inside(folder: Path, name: str) -> Path:
    """``folder/name``, refused if it is a symlink leading out of the folder."""
    path = folder / name
    real = folder.resolve()
    if path.is_symlink() and not path.resolve().is_relative_to(real):
        raise ConfigError(f"{path}: a symlink to {path.resolve()}, outside the model folder; "
                          "refusing to follow it")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a model folder, size-checked before it is read."""
    cfg_path = _inside(Path(path), CONFIG_NAME)
    if not cfg_path.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {path}: not a memetrm model directory")
    size = cfg_path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{cfg_path}: {size:,} bytes, above the limit of {MAX_CONFIG_BYTES:,} "
                          "for a model config")
    try:
        config = json.loads(cfg_path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{cfg_path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_path}: must hold a JSON object, got {type(config).__name__}")
    return config


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata (revision, strings) from one open of the file (one version)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        return tensors, dict(f.metadata() or {})


def read_model(path: str | Path
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str]]:
    """Config, weights and the strings stored with them, of one revision: retried while a
    writer is mid-swap."""
    folder = Path(path)
    deadline = time.monotonic() + READ_RETRY_S
    while True:
        config = read_config(folder)
        revision = config.get(REVISION_KEY)
        candidates = [WEIGHTS_NAME] + ([_kept_name(revision)] if isinstance(revision, str) else [])
        found = None
        for name in candidates:
            wpath = _inside(folder, name)
            try:
                weights, meta = _read_weights(wpath)
                got = meta.pop(REVISION_KEY, None)
            except FileNotFoundError as e:
                if name == WEIGHTS_NAME:  # replaced atomically, never removed: not transient
                    raise ConfigError(f"no {WEIGHTS_NAME} in {path}: not a memetrm model "
                                      "directory") from e
                continue
            except (SafetensorError, OSError) as e:
                if name != WEIGHTS_NAME:
                    continue
                raise ConfigError(f"{wpath}: not a readable safetensors file ({e})") from e
            if revision is None or got == revision:
                return config, weights, meta
            found = got
        if time.monotonic() > deadline:
            raise ConfigError(f"{path}: {CONFIG_NAME} (revision {revision}) and {WEIGHTS_NAME} "
                              f"(revision {found}) are from different writes")
        time.sleep(0.02)


#: Bounds on what a config may ask for, checked before anything is allocated: a feature width,
#: a layer width, and every other integer option (layers, heads, steps, neighbours, ...).
MAX_INPUT_DIM = 65_536
MAX_WIDTH = 65_536
MAX_COUNT = 1_024
_WIDTHS = {"hidden", "d_model", "map_dim", "embed_dim"}


def check_sizes(config: dict[str, Any], path: str | Path) -> None:
    """Refuse a config whose sizes are out of bounds (a hostile or corrupt ``config.json``),
    naming the key, before a head of that size is built."""
    where = Path(path) / CONFIG_NAME
    for key in ("input_dims", "token_dims"):
        dims = config.get(key) or {}
        if not isinstance(dims, dict):
            raise ConfigError(f"{where}: {key!r} must map field names to widths")
        for name, d in dims.items():
            if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_INPUT_DIM:
                raise ConfigError(f"{where}: {key}.{name} = {d!r}; a width must be an integer "
                                  f"in [1, {MAX_INPUT_DIM:,}]")
    options = config.get("config")
    for name, v in (options.items() if isinstance(options, dict) else []):
        limit = MAX_WIDTH if name in _WIDTHS else MAX_COUNT
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit:
            raise ConfigError(f"{where}: config.{name} = {v:,} is above the limit of {limit:,}")
    labels = config.get("labels")
    if labels is not None and not (isinstance(labels, list) and len(labels) == 2
                                   and all(isinstance(x, str) for x in labels)):
        raise ConfigError(f"{where}: 'labels' must be the names of labels 0 and 1 (two "
                          f"strings), got {labels!r}")
