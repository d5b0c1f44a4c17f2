"""``memetrm memory add``: labelled memes join a saved retrieval head's memory, no retraining."""

from __future__ import annotations

from pathlib import Path

import torch

from memetrm.data.images import open_image
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.heads import Memory, save_pretrained
from memetrm.modelstore import STORE_KEYS, carried_files, writer_lock
from memetrm.serving.batch import iter_inputs
from memetrm.serving.predictor import Predictor
from memetrm.utils import plural

#: keys ``save_pretrained`` writes itself; the rest of config.json is carried over unchanged
_OWN_KEYS = ("head", "config", "input_dims", "token_dims", "fitted", *STORE_KEYS)


def add_to_memory(model_dir: str | Path, source: Path, device: str | None = "auto",
                  batch_size: int = 64) -> int:
    """See ``_add``; the model folder stays locked from reading the memory to writing it back, so
    concurrent adds queue and none loses rows."""
    with writer_lock(model_dir, create=False):
        return _add(Path(model_dir), source, device, batch_size)


def _add(model_dir: Path, source: Path, device: str | None, batch_size: int) -> int:
    """Encode the labelled memes of ``source`` (jsonl: id, label 0/1, text fields, optional img)
    and append them to the model's memory; the directory is rewritten atomically, and only if
    every row is good (a bad row is named and nothing changes). Returns the memory size."""
    predictor = Predictor(model_dir, device=device)
    head = predictor.head
    if not isinstance(head, Memory):
        raise ConfigError(f"{model_dir}: head {head.name!r} has no retrieval memory; train a "
                          "`retrieval` head to add memes to")
    items, errors = [], []
    known = set(head.memory_ids)
    for item in iter_inputs(source):
        if item.error is None and item.label not in (0, 1, True, False):
            item.error = f"{source}: id {item.id}: label must be 0 or 1, got {item.label!r}"
        if item.error is None and item.id in known:
            item.error = f"{source}: id {item.id} is already in the memory"
        known.add(item.id)
        (errors if item.error else items).append(item)
    if errors:
        raise DataError(f"{plural(len(errors), 'bad row')}, nothing added: "
                        + "; ".join(str(i.error) for i in errors[:20]))
    if not items:
        raise DataError(f"{source}: no memes to add")
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        try:
            prepared = [predictor.prepare(open_image(it.image, name=it.id) if it.image else None,
                                          it.texts, lists=False) for it in chunk]
        except MemetrmError as e:
            raise DataError(f"{source}: {e} (nothing added)") from e
        batch = predictor.features(prepared)
        batch["label"] = torch.tensor([float(it.label) for it in chunk], device=predictor.device)
        head.add(batch, [it.id for it in chunk])
    # the card, the hash list and any other file memetrm wrote stay in the new revision
    save_pretrained(head.cpu(), model_dir, files=carried_files(model_dir),
                    **{k: v for k, v in predictor.config.items() if k not in _OWN_KEYS})
    return len(head.memory_ids)
