"""Datasets: a registry of named loaders, generic jsonl folders, and strict validation."""

from memetrm.data import hateful_memes as _hateful_memes  # noqa: F401  (registers)
from memetrm.data import multioff as _multioff  # noqa: F401  (registers)
from memetrm.data.base import MemeDataset, resolve_data_root
from memetrm.data.images import open_image
from memetrm.data.records import MemeRecord
from memetrm.data.registry import get_dataset, list_datasets, register_dataset, select_fields


def load_split(dataset: str, split: str, data_root: str | None = None) -> list[MemeRecord]:
    """Convenience: validated records of one split of a named dataset or jsonl folder."""
    return get_dataset(dataset, data_root).records(split)


__all__ = [
    "MemeDataset",
    "MemeRecord",
    "get_dataset",
    "list_datasets",
    "load_split",
    "open_image",
    "register_dataset",
    "resolve_data_root",
    "select_fields",
]
