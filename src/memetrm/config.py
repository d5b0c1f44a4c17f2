"""Typed run configuration, loadable from YAML, with ``a.b=value`` command-line overrides.

Precedence, lowest first: ``RunConfig`` defaults < the head's preset (its options and training
overrides, applied when the run is resolved) < the YAML file < options the user typed < ``--set``.
Typed options and ``--set`` go through one rule: each names a key path (``train.lr``) and a
value, checked against that key's type. Files and values are read as YAML 1.2, by ruamel.yaml
(``no`` is a string, ``010`` the int 10, ``1e-4`` a float); a config file is read only if it is
a regular file within a size limit, and aliases are refused.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from memetrm.devices import DEVICE_HELP
from memetrm.errors import ConfigError

#: what to do with a record whose image file is missing: fail naming ids, or drop and count
MISSING_IMAGE_POLICIES = ("error", "skip")
#: what to do with a malformed dataset line: fail listing them, or leave out and count
BAD_LINE_POLICIES = ("error", "skip")
#: how a saved model's probabilities are calibrated on dev (``memetrm.evaluation.calibration``)
CALIBRATIONS = ("temperature", "platt", "isotonic", "none")


#: upper bounds of a run's counts: far above any real run, below what exhausts a machine
MAX_SEEDS, MAX_FOLDS, MAX_BOOTSTRAP = 1_000, 100, 100_000


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
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise ConfigError(f"seeds must be a positive integer up to {MAX_SEEDS:,}, "
                              f"got {self.seeds!r}")
        if self.cv == 1 or not 0 <= self.cv <= MAX_FOLDS:
            raise ConfigError(f"cv must be 0 (select on dev) or a number of folds in "
                              f"[2, {MAX_FOLDS}], got {self.cv!r}")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise ConfigError(f"bootstrap must be an integer in [0, {MAX_BOOTSTRAP:,}], "
                              f"got {self.bootstrap!r}")
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


#: a config file above this is refused before it is read (a run config is a few hundred bytes)
MAX_CONFIG_FILE_BYTES = 2**20
#: deepest nesting a YAML value may have (a run config nests 2 levels)
MAX_YAML_DEPTH = 32


class _NoAliases(Composer):
    """Refuses an alias (``*name``) where it stands, before anything is expanded: nested aliases
    ("billion laughs") load as a small shared structure that is gigabytes once walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed: write the value out",
                                self.parser.peek_event().start_mark)
        return super().compose_node(parent, index)


def _yaml() -> YAML:
    """ruamel.yaml's safe loader (YAML 1.2), pure Python (its C loader reads YAML 1.1)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _NoAliases
    yaml.max_depth = MAX_YAML_DEPTH
    return yaml


def load_yaml(text: str) -> Any:
    return _yaml().load(text)


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML, keys in their order, that ``load_yaml`` reads back to the
    same values."""
    yaml = _yaml()
    yaml.default_flow_style = False
    yaml.representer.sort_base_mapping_type_on_output = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def parse_value(text: str) -> Any:
    """A command-line value by YAML's rules: ``3`` int, ``1e-4`` float, ``true`` bool,
    ``[a, b]`` list, anything else (``no`` included) the string itself."""
    try:
        return load_yaml(text) if text.strip() else text
    except (YAMLError, ValueError):  # ruamel raises ValueError for some scalars (``0x_``)
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


def read_config_text(path: str | Path, what: str = "config",
                     limit: int = MAX_CONFIG_FILE_BYTES) -> str:
    """A config file's text: a regular file (a device or a pipe would never end or never
    start), at most ``limit`` bytes, UTF-8 (a byte-order mark is dropped)."""
    path = Path(path)
    try:
        # non-blocking: opening a FIFO returns at once, so the check below can refuse it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: a {what} must be a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise ConfigError(f"{path}: above the limit of {limit:,} bytes for a {what}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x}); a {what} "
                          "must be UTF-8") from e


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = read_config_text(path)
    try:
        data = load_yaml(text) or {}
    except MarkedYAMLError as e:
        line = f":{e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({e.problem})") from e
    except (YAMLError, ValueError) as e:
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


#: the losses ``memetrm tune`` trains with
TUNE_LOSSES = ("batch-all", "batch-hard", "batch-semi-hard", "contrastive")


def _setting(default: Any, help: str) -> Any:
    """A setting with its help text: ``memetrm tune`` builds its options from these."""
    return field(default=default, metadata={"help": help})


@dataclass
class TuneConfig:
    """What ``memetrm tune`` trains; every field is one of its options and lands in
    ``tuning.json``."""

    tower: str = _setting("all-MiniLM-L6-v2", "all-MiniLM-L6-v2, all-mpnet-base-v2 or a "
                                              "sentence-transformers folder.")
    field: str = _setting("text+caption", "The field the tower reads: text, caption, or "
                                          "text+caption (the meme as one sequence).")
    loss: str = _setting("batch-all", " | ".join(TUNE_LOSSES) + " (SetFit pairs).")
    epochs: int = _setting(1, "Epochs over the tuned memes.")
    batch_size: int = _setting(32, "Memes per batch (at least 4: a batch needs both labels "
                                   "twice).")
    lr: float = _setting(2e-5, "Peak learning rate.")
    warmup_ratio: float = _setting(0.1, "Share of the steps the learning rate warms up over.")
    lora_rank: int = _setting(0, "LoRA rank (0: full tuning).")
    train_layers: int = _setting(0, "Train only the top N transformer layers (0: all).")
    fraction: float = _setting(1.0, "Stratified share of train to tune on; the rest is held "
                                    "out for fitting heads.")
    max_seq_length: int = _setting(64, "Tokens kept per text.")
    probe_sample: int = _setting(2000, "Training memes the dev probe fits on each epoch "
                                       "(0: all).")
    max_steps: int = _setting(-1, "Stop after N optimizer steps, no dev selection (-1: the "
                                  "full epochs; benchmarks and tests).")
    probe: bool = _setting(True, "Score the dev probe (off: a speed benchmark, dev AUROC not "
                                 "measured).")
    seed: int = _setting(0, "Seed of the split, the pairs and the weights.")
    device: str = _setting("auto", f"Where to tune: {DEVICE_HELP}")

    def __post_init__(self) -> None:
        if self.loss not in TUNE_LOSSES:
            raise ConfigError(f"--loss must be one of {TUNE_LOSSES}, got {self.loss!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.batch_size < 4:
            raise ConfigError("--batch-size must be at least 4 (a batch needs both labels twice)")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ConfigError(f"--lr must be a number in (0, 1], got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1], got {self.warmup_ratio}")
        for name, low in (("epochs", 1), ("lora_rank", 0), ("train_layers", 0),
                          ("max_seq_length", 8), ("probe_sample", 0), ("max_steps", -1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}, got "
                                  f"{getattr(self, name)}")
