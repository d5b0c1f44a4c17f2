"""Model folders as shared, untrusted files: one writer at a time, readers that never see a
missing or half-written model, even while a writer runs or after it was killed, and writers
that never remove what they did not write.

The layout stays ``config.json`` + ``model.safetensors`` (+ a card, a hash list, metrics,
plots). ``config.json`` marks the folder as memetrm's: it carries a ``format`` key and the
manifest of the files its revision owns (``files``). Folders written before the manifest (a
``revision`` key, no ``format``) own the files those versions wrote. A write refuses a folder
that holds other things and no model (``train --save .`` in a project), refuses to replace a
file memetrm did not write, and removes only files of the old revision that the new one lacks:
a user's file in a model folder stays.

Each write publishes one revision: ``revision`` is a digest of everything it holds (the config,
the weights and every other file), so any change to the folder gives a new one. The weights
carry their own digest (a safetensors metadata entry, named by the config's
``weights_revision``). Files are replaced one at a time with ``os.replace``, ``config.json``
last. Until then the weights the old config names are kept as a hard link
``.model.<weights revision>.safetensors``, so a reader that finds the weights newer than its
config reads that link instead; the writer removes it once ``config.json`` names the new
weights. A killed writer leaves the old model readable; its temporaries are removed by the next
write. Every writer of a folder (weights, memory, hash list, card) holds ``.memetrm.lock``
(``filelock``) around its read-modify-write: concurrent ``memory add`` and ``hashes add`` runs
queue, none loses the other's rows.

A folder that is a symlink is written through (the target is updated); a file inside the
folder that links outside it, or that is not a regular file (a FIFO, a device), is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
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
#: the config key (and value) that marks a folder as a memetrm model
FORMAT_KEY = "format"
FORMAT = "memetrm.model/1"
#: the config key listing the files the revision owns
FILES_KEY = "manifest"
#: the config key naming the weights' own digest (the ``revision`` of their metadata)
WEIGHTS_KEY = "weights_revision"
#: config keys the store writes itself; a caller's values for them are replaced
STORE_KEYS = (FORMAT_KEY, FILES_KEY, REVISION_KEY, WEIGHTS_KEY)
#: what versions before the manifest wrote into a model folder: config, weights, model card,
#: known-meme list, and the metrics and plot of an alignment run
_LEGACY_FILES = (CONFIG_NAME, WEIGHTS_NAME, "README.md", "hashes.csv", "metrics.json",
                 "history.json", "specificity.png")
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

_DIGEST = re.compile(r"^[0-9a-f]{32}$")
_KEPT = re.compile(r"^\.model\.([0-9a-f]{32})\.safetensors$")
#: what older versions left beside a folder when killed mid-write (``atomic_write_dir``)
_LEGACY_TEMP = r"^\.{name}\.(old\d+|[a-z0-9_]{{8}})$"


def _kept_name(revision: str) -> str:
    return f".model.{revision}.safetensors"


def _temporary(name: str) -> bool:
    """The store's own hidden files: the lock, staging folders, kept weights."""
    return name == LOCK_NAME or name.startswith(STAGING_PREFIX) or bool(_KEPT.match(name))


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
    memory or a hash list. Without ``create``, the folder must hold a memetrm model."""
    folder = model_folder(path)
    if not create and not folder.is_dir():
        raise ConfigError(f"{path}: no such model folder")
    if not create and owned_files(folder) is None:
        raise ConfigError(f"{path}: not a memetrm model folder (no {CONFIG_NAME} with a "
                          f"{FORMAT_KEY!r} key); refusing to write into it")
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


def _inside(folder: Path, name: str) -> Path:
    """``folder/name``, refused if it is a symlink leading out of the folder."""
    path = folder / name
    real = folder.resolve()
    if path.is_symlink() and not path.resolve().is_relative_to(real):
        raise ConfigError(f"{path}: a symlink to {path.resolve()}, outside the model folder; "
                          "refusing to follow it")
    return path


def _regular(path: Path) -> bool:
    """Whether ``path`` exists; refused when it is not a regular file (a FIFO would block the
    open, a device never ends)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from e
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a regular file; refusing to read it")
    return True


def model_file(path: str | Path, name: str) -> Path | None:
    """``name`` in a model folder, for reading (a card, a hash list); None when absent. A symlink
    leaving the folder and anything that is not a regular file are refused."""
    file = _inside(Path(path), name)
    return file if _regular(file) else None


def _revision_of(folder: Path, name: str) -> str | None:
    """The digest a weights file of the folder carries (None when absent or unreadable)."""
    if (weights := model_file(folder, name)) is None:
        return None
    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(REVISION_KEY)
    except (SafetensorError, OSError):
        return None


def _named_weights(config: dict[str, Any]) -> Any:
    """The weights digest a config names (before the manifest, the config's own revision)."""
    return config.get(WEIGHTS_KEY) if FORMAT_KEY in config else config.get(REVISION_KEY)


def _current_weights(folder: Path) -> Any:
    """The weights digest the folder's config names; None without a readable config."""
    try:
        return _named_weights(read_config(folder))
    except ConfigError:
        return None


def _plain_name(name: Any) -> bool:
    """A file name a manifest may hold: no path, nothing hidden (the store's own files)."""
    return (isinstance(name, str) and name != "" and not name.startswith(".")
            and not any(c in name for c in "/\\\0"))


def owned_files(path: str | Path) -> frozenset[str] | None:
    """The files memetrm wrote in the folder's current revision (its manifest; for a folder
    written before manifests, those of the files older versions wrote that are there), or None
    when the folder holds no memetrm model. A manifest that names paths is refused."""
    folder = Path(path)
    if not os.path.lexists(folder / CONFIG_NAME):
        return None
    config = read_config(folder)
    if FORMAT_KEY not in config:
        if REVISION_KEY not in config:
            return None
        return frozenset(n for n in _LEGACY_FILES if os.path.lexists(folder / n))
    files = config.get(FILES_KEY)
    if config[FORMAT_KEY] != FORMAT:
        raise ConfigError(f"{folder / CONFIG_NAME}: format {config[FORMAT_KEY]!r}, not the "
                          f"{FORMAT!r} this memetrm writes (a newer version?)")
    if not isinstance(files, list) or not all(_plain_name(n) for n in files):
        raise ConfigError(f"{folder / CONFIG_NAME}: {FILES_KEY!r} must list the names of the "
                          f"model's files, got {files!r}")
    return frozenset(files) | {CONFIG_NAME}


def check_destination(path: str | Path) -> None:
    """Refuse, before any work, a destination that a model cannot be written to."""
    _check_destination(model_folder(path), ())


def _check_destination(folder: Path, names: Iterable[str]) -> frozenset[str]:
    """What memetrm wrote in ``folder`` (nothing when it is new or empty). Refused: a folder
    that holds other things and no memetrm model, and a new file that would replace one
    memetrm did not write."""
    if not folder.is_dir() or all(_temporary(p.name) for p in folder.iterdir()):
        return frozenset()
    why = ""
    try:
        owned = owned_files(folder)
    except ConfigError as e:
        owned, why = None, f" ({e})"
    if owned is None:
        raise ConfigError(f"{folder}: not empty and not a memetrm model folder{why}; refusing "
                          "to write a model into it (choose a new or empty folder)")
    theirs = sorted(n for n in names if n not in owned and os.path.lexists(folder / n))
    if theirs:
        raise ConfigError(f"{folder}: {', '.join(theirs)} not written by memetrm; refusing to "
                          "replace it (move it out of the model folder first)")
    return owned


def remove_stale(folder: Path) -> None:
    """Temporaries of killed writers (call with the lock held): staging folders, kept weights no
    reader needs, and the hidden siblings older versions left beside the folder."""
    current = _current_weights(folder)
    needed = current if _revision_of(folder, WEIGHTS_NAME) != current else None
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
    when this process is killed at any point. Files memetrm wrote in the old revision that the
    new one does not have are removed; other files stay. A folder that is not empty and holds
    no memetrm model is refused before anything is written into it."""
    from safetensors.torch import save_file

    files = dict(extra_files or {})
    names = [CONFIG_NAME, WEIGHTS_NAME, *files]
    _check_destination(model_folder(path), names)  # before the lock file is made in it
    weights = weights_revision(state, strings)
    with writer_lock(path) as folder:
        owned = _check_destination(folder, names)
        _publish(folder, config, weights, lambda p: save_file(
                     state, str(p), metadata={**(strings or {}), REVISION_KEY: weights}),
                 files, {}, owned)
    return Path(path)


def carried_files(path: str | Path, leave: tuple[str, ...] = ()) -> dict[str, bytes]:
    """The files besides config and weights that memetrm wrote in the folder's current revision
    (card, hash list, metrics), for a writer that publishes them again (hold ``writer_lock``);
    names ending in one of ``leave`` (files the writer makes anew) are not read."""
    return {name: file.read_bytes() for name in _carried_names(Path(path))
            if not (leave and name.endswith(leave)) and (file := model_file(path, name)) is not None}


def _carried_names(folder: Path) -> list[str]:
    return sorted((owned_files(folder) or frozenset()) - {CONFIG_NAME, WEIGHTS_NAME})


def _file_digest(path: Path) -> str:
    """sha256 of a file read in chunks (a memory's index can be gigabytes)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def republish(path: str | Path, files: dict[str, bytes]) -> str:
    """Publish the folder's current revision again with ``files`` added or replaced (a hash
    list): config and weights stay, every other file memetrm wrote is carried over. Returns the
    new revision. Around a read-modify-write, hold ``writer_lock`` from the read to this call."""
    with writer_lock(path, create=False) as folder:
        owned = owned_files(folder) or frozenset()
        config = read_config(folder)
        weights = _named_weights(config)
        source = _weights_file(folder, weights)
        copy = None if source.name == WEIGHTS_NAME else (lambda p: shutil.copyfile(source, p))
        carried = {n: _file_digest(file) for n in _carried_names(folder)
                   if n not in files and (file := model_file(folder, n)) is not None}
        return _publish(folder, config, weights, copy, files, carried, owned)


def _weights_file(folder: Path, weights: Any) -> Path:
    """The file holding the weights a config names: ``model.safetensors``, or the copy kept
    while a killed writer had replaced them."""
    if not isinstance(weights, str) or not _DIGEST.match(weights):
        raise ConfigError(f"{folder / CONFIG_NAME}: names no weights revision ({weights!r})")
    found = None
    for name in (WEIGHTS_NAME, _kept_name(weights)):
        got = _revision_of(folder, name)
        if got == weights:
            return folder / name
        found = found or got
    raise ConfigError(_mismatch(folder, weights, found))


def _mismatch(folder: Path, weights: str, found: str | None) -> str:
    """Why the weights do not match the config, once no writer can be mid-swap."""
    got = f"revision {found}" if found else "no revision"
    if (folder / _kept_name(weights)).exists():
        return (f"{folder}: {CONFIG_NAME} (weights revision {weights}) and {WEIGHTS_NAME} "
                f"({got}) are from different writes")
    return (f"{folder}: {WEIGHTS_NAME} ({got}) is not the weights {CONFIG_NAME} names "
            f"({weights}), and no earlier weights are kept: they belong to another model or "
            f"write (copied in from another folder?); put back this model's {WEIGHTS_NAME} or "
            "save the model again")


def _publish(folder: Path, config: dict[str, Any], weights: str,
             write_weights: Callable[[Path], None] | None, files: dict[str, bytes],
             carried: dict[str, str], owned: frozenset[str]) -> str:
    """Write one revision (the lock held): ``files``, the weights (unless ``write_weights`` is
    None: the current ones stay) and ``config.json`` last; ``carried`` files (name: sha256)
    stay as they are.
    Files of the old revision (``owned``) that the new one lacks are removed. Returns the
    revision: a digest of the config, the weights and every file."""
    names = sorted({CONFIG_NAME, WEIGHTS_NAME, *files, *carried})
    body = {**{k: v for k, v in config.items() if k not in STORE_KEYS},
            FORMAT_KEY: FORMAT, FILES_KEY: names, WEIGHTS_KEY: weights}
    digests = {**carried, **{n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    revision = hashlib.sha256(json.dumps([body, digests], sort_keys=True).encode()
                              ).hexdigest()[:32]
    remove_stale(folder)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        writers = {**({WEIGHTS_NAME: write_weights} if write_weights else {}),
                   **{name: _bytes_writer(data) for name, data in files.items()},
                   CONFIG_NAME: _bytes_writer(json.dumps({**body, REVISION_KEY: revision},
                                                         indent=2).encode())}
        for name, write in writers.items():
            write(staging / name)
            publish_mode(staging / name, 0o666)
            _fsync(staging / name)
        if write_weights:
            _keep_old_weights(folder)
        for name in writers:  # config.json last: it is what makes the new revision current
            os.replace(staging / name, folder / name)
        for name in owned - set(names):
            p = folder / name
            if p.is_symlink() or p.is_file():
                p.unlink()
        remove_stale(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return revision


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
    current = _current_weights(folder)
    if not isinstance(current, str) or not _DIGEST.match(current) \
            or _revision_of(folder, WEIGHTS_NAME) != current:
        return
    weights = folder / WEIGHTS_NAME
    kept = folder / _kept_name(current)
    kept.unlink(missing_ok=True)
    try:
        os.link(weights, kept)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(weights, kept)


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a model folder, size-checked before it is read."""
    cfg_path = model_file(path, CONFIG_NAME)
    if cfg_path is None:
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
        revision = _named_weights(config)
        kept = isinstance(revision, str) and _DIGEST.match(revision)
        found = None
        for name in [WEIGHTS_NAME] + ([_kept_name(revision)] if kept else []):
            wpath = _inside(folder, name)
            if not _regular(wpath):
                if name == WEIGHTS_NAME:  # replaced atomically, never removed: not transient
                    raise ConfigError(f"no {WEIGHTS_NAME} in {path}: not a memetrm model "
                                      "directory")
                continue
            try:
                weights, meta = _read_weights(wpath)
            except (SafetensorError, OSError) as e:
                if name != WEIGHTS_NAME:  # the kept copy, removed once its write completed
                    continue
                raise ConfigError(f"{wpath}: not a readable safetensors file ({e})") from e
            got = meta.pop(REVISION_KEY, None)
            if revision is None or got == revision:
                return config, weights, meta
            found = found or got
        if time.monotonic() > deadline:
            raise ConfigError(_mismatch(folder, str(revision), found))
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
