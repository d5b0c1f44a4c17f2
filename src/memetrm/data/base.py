"""What every dataset is: named splits of validated ``MemeRecord``s under a root folder."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from memetrm.data.records import MemeRecord
from memetrm.errors import DataError
from memetrm.progress import warn as progress_warn

DEFAULT_DATA_ROOT = Path("../shared/data")

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
    #: ids the published dataset ships without an image: always skipped, with a warning
    known_missing_images: frozenset[str] = frozenset()

    def __init__(self, root: Path, on_bad_line: str = "error", allow_outside_images: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        #: ``error`` lists every bad line in one error; ``skip`` leaves them out, counted
        self.on_bad_line = on_bad_line
        #: image paths must resolve inside ``root`` unless this is set
        self.allow_outside_images = allow_outside_images
        self.warn = warn or progress_warn
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
        if "\0" in value:
            raise DataError(f"{where}: image path {value!r} contains a NUL byte")
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
