"""Named datasets plus "any folder of Hateful-Memes-format jsonl", behind one lookup."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memetrm.config import MISSING_IMAGE_POLICIES
from memetrm.data.records import MemeRecord
from memetrm.errors import ConfigError, DataError
from memetrm.progress import console

DEFAULT_DATA_ROOT = Path("../shared/data")
_DATASETS: dict[str, type[MemeDataset]] = {}

MissingImagePolicy = Literal["error", "skip"]


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``--data-root`` wins, then ``$MEMETRM_DATA``, then ``../shared/data``."""
    if data_root:
        return Path(data_root)
    return Path(os.environ.get("MEMETRM_DATA") or DEFAULT_DATA_ROOT)


class MemeDataset(ABC):
    """A dataset on disk: named splits of validated ``MemeRecord``s."""

    name: str = ""
    subdir: str = ""  # folder under the data root
    how_to_get: str = ""
    train_split = "train"
    dev_split = "dev"
    test_split = "test"
    #: what labels 0 and 1 mean, for messages, the model card and the web page
    label_names: tuple[str, str] = ("not hateful", "hateful")

    def __init__(self, root: Path, on_bad_line: str = "error", allow_outside_images: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        #: ``error`` lists every bad line in one error; ``skip`` leaves them out, counted
        self.on_bad_line = on_bad_line
        #: image paths must resolve inside ``root`` unless this is set
        self.allow_outside_images = allow_outside_images
        self.warn = warn or (lambda m: console.print(f"[yellow]warning:[/] {m}", soft_wrap=True))
        if not self.root.is_dir():
            raise DataError(
                f"dataset '{self.name or root}' not found: looked in {self.root.resolve()}. "
                f"{self.how_to_get} Set --data-root or MEMETRM_DATA to the folder that holds it."
            )

    @abstractmethod
    def splits(self) -> list[str]: ...

    @abstractmethod
    def _load(self, split: str) -> list[MemeRecord]: ...

    @property
    @abstractmethod
    def default_fields(self) -> tuple[str, ...]: ...

    def records(self, split: str) -> list[MemeRecord]:
        if split not in self.splits():
            raise DataError(f"{self.identity}: no split {split!r} in {self.root} "
                            f"(have: {', '.join(self.splits()) or 'none'})")
        return self._load(split)

    def image_path(self, value: str, where: str) -> Path:
        """``value`` relative to the dataset folder; a path that leaves it is refused unless
        ``allow_outside_images`` (a jsonl file should not make us read arbitrary files)."""
        path = self.root / value
        if not self.allow_outside_images and not path.resolve().is_relative_to(self.root.resolve()):
            raise DataError(f"{where}: image path {value!r} points outside the dataset folder "
                            f"{self.root}; pass --allow-outside-images to allow it")
        return path

    def roles(self, train: str | None = None, dev: str | None = None,
              test: str | None = None) -> dict[str, str]:
        """Split names for training, selection (dev) and the final report (test)."""
        return {"train": train or self.train_split, "dev": dev or self.dev_split,
                "test": test or self.test_split}

    @property
    def identity(self) -> str:
        return self.name or str(self.root.resolve())


def register_dataset(cls: type[MemeDataset]) -> type[MemeDataset]:
    _DATASETS[cls.name] = cls
    return cls


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_dataset(name_or_path: str, data_root: str | Path | None = None,
                **options: Any) -> MemeDataset:
    """A registered name resolves under the data root; anything else is a jsonl folder path.

    ``options`` (``on_bad_line``, ``allow_outside_images``, ``warn``) go to the dataset.
    """
    if name_or_path in _DATASETS:
        cls = _DATASETS[name_or_path]
        return cls(resolve_data_root(data_root) / cls.subdir, **options)
    path = Path(name_or_path)
    if path.is_dir():
        from memetrm.data.hateful_memes import JsonlFolder

        return JsonlFolder(path, **options)
    raise ConfigError(
        f"unknown dataset {name_or_path!r}: not one of {list_datasets()} and not a folder"
    )


@dataclass
class Selection:
    records: list[MemeRecord]
    skipped_missing_images: list[str]


def select_fields(
    records: Sequence[MemeRecord],
    fields: Sequence[str],
    on_missing_image: MissingImagePolicy = "error",
    warn: Callable[[str], None] | None = None,
) -> Selection:
    """Check that every record has every field it will be encoded from.

    Missing images raise by default, naming the ids; with ``skip`` they are dropped and
    counted, never silently.
    """
    if on_missing_image not in MISSING_IMAGE_POLICIES:
        raise ConfigError(f"on_missing_image must be one of {MISSING_IMAGE_POLICIES}, "
                          f"got {on_missing_image!r}")
    missing_text = [
        f"{r.source or r.id} (field '{f}')"
        for r in records
        for f in fields
        if f != "image" and not r.texts.get(f, "").strip()
    ]
    if missing_text:
        raise DataError(
            f"{len(missing_text)} record(s) have empty or missing text: "
            + ", ".join(missing_text[:10])
        )
    if "image" not in fields:
        return Selection(list(records), [])
    missing = [r.id for r in records if r.image is None or not r.image.is_file()]
    if missing and on_missing_image == "error":
        raise DataError(
            f"{len(missing)} image(s) missing, ids: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
            + ". Pass --on-missing-image skip to leave them out (they are counted)."
        )
    if missing and warn:
        warn(f"skipped {len(missing)} record(s) with missing images: {', '.join(missing[:10])}")
    kept = [r for r in records if r.id not in set(missing)]
    return Selection(kept, missing)
