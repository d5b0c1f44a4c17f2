"""Named datasets plus "any folder of Hateful-Memes-format jsonl", behind one lookup."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memetrm.config import MISSING_IMAGE_POLICIES
from memetrm.data.base import MemeDataset, MissingImagePolicy, resolve_data_root
from memetrm.data.jsonl import JsonlFolder
from memetrm.data.records import MemeRecord
from memetrm.errors import ConfigError, DataError
from memetrm.utils import plural

_DATASETS: dict[str, type[MemeDataset]] = {}


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
    known_missing: Collection[str] = (),
) -> Selection:
    """Check that every record has every field it will be encoded from.

    Missing images raise by default, naming the ids; with ``skip`` they are dropped and
    counted, never silently. ``known_missing`` ids (gaps of the published dataset) are
    dropped and counted under either policy.
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
            f"{plural(len(missing_text), 'record')} with empty or missing text: "
            + ", ".join(missing_text[:10])
        )
    if "image" not in fields:
        return Selection(list(records), [])
    missing = [r.id for r in records if r.image is None or not r.image.is_file()]
    unexpected = [i for i in missing if i not in known_missing]
    if unexpected and on_missing_image == "error":
        raise DataError(
            f"{plural(len(unexpected), 'image')} missing, ids: {', '.join(unexpected[:10])}"
            + (" ..." if len(unexpected) > 10 else "")
            + ". Pass --on-missing-image skip to leave them out (they are counted)."
        )
    if missing and warn:
        known = "" if unexpected else " (a known gap of the published dataset)"
        warn(f"skipped {plural(len(missing), 'record')} with missing images{known}: "
             f"{', '.join(missing[:10])}")
    kept = [r for r in records if r.id not in set(missing)]
    return Selection(kept, missing)
