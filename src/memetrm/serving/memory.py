"""``memetrm memory add`` / ``remove``: labelled memes join or leave a saved model's memories (a
memory head's, or every memory member's of an ensemble), no retraining."""

from __future__ import annotations

from pathlib import Path

import torch

from memetrm.data.images import open_image
from memetrm.encoders import Encoder
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.heads import Head, Memory, from_pretrained, save_pretrained
from memetrm.heads.base import memories
from memetrm.heads.registry import INDEX_SUFFIX
from memetrm.modelstore import STORE_KEYS, carried_files, writer_lock
from memetrm.serving.batch import iter_inputs
from memetrm.serving.predictor import Predictor
from memetrm.utils import plural

#: keys ``save_pretrained`` writes itself; the rest of config.json is carried over unchanged
_OWN_KEYS = ("head", "config", "input_dims", "token_dims", "fitted", *STORE_KEYS)


def add_to_memory(model_dir: str | Path, source: Path, device: str | None = "auto",
                  batch_size: int = 64, encoder: Encoder | None = None) -> int:
    """See ``_add``; the model folder stays locked from reading the memory to writing it back, so
    concurrent adds queue and none loses rows. ``encoder``: the model's encoder, already loaded
    (a server's), so it is not loaded again."""
    with writer_lock(model_dir, create=False):
        return _add(Path(model_dir), source, device, batch_size, encoder)


def remove_from_memory(model_dir: str | Path, ids: list[str]) -> int:
    """Take the memes ``ids`` out of the model's memories (all or none: an id not in them is a
    ``DataError``), under the writer lock, as a new revision. Returns the memory size."""
    with writer_lock(model_dir, create=False):
        head, config = from_pretrained(model_dir)
        banks = [m.bank for m in _memories(head, Path(model_dir))]
        missing = sorted(set(ids) - {i for bank in banks for i in bank.ids})
        if missing:
            raise DataError(f"{model_dir}: {plural(len(missing), 'id')} {missing[:20]} not in the "
                            "memory, nothing removed")
        drop = set(ids)
        for bank in banks:
            keep = [i for i, rid in enumerate(bank.ids) if rid not in drop]
            embeddings, labels, kept = bank.embeddings[keep], bank.labels[keep], [bank.ids[i] for i in keep]
            bank.reset()
            bank.add(embeddings, labels, kept)
        _write_back(head, Path(model_dir), config)
        return len(banks[0])


def _memories(head: Head, model_dir: Path) -> list[Memory]:
    """The memories of a model (its head's, or each memory member's of an ensemble)."""
    held = memories(head)
    if not held:
        raise ConfigError(f"{model_dir}: head {head.name!r} has no retrieval memory; train a "
                          "`retrieval` head to keep memes in one")
    return held


def _write_back(head: Head, model_dir: Path, config: dict) -> None:
    """The head as a new revision of its folder; the card, the hash list and any other file
    memetrm wrote, and the rest of ``config.json``, are carried over (a memory's saved index
    is written anew from the memory)."""
    save_pretrained(head.cpu(), model_dir, files=carried_files(model_dir, leave=(INDEX_SUFFIX,)),
                    **{k: v for k, v in config.items() if k not in _OWN_KEYS})


def _add(model_dir: Path, source: Path, device: str | None, batch_size: int,
         encoder: Encoder | None) -> int:
    """Encode the labelled memes of ``source`` (jsonl: id, label 0/1, text fields, optional img)
    and append them to each of the model's memories; the directory is rewritten atomically, and
    only if every row is good (a bad row is named and nothing changes). Returns the memory size
    (of the first memory: an ensemble's grow together)."""
    predictor = Predictor(model_dir, device=device, encoder=encoder)
    head = predictor.head
    held = _memories(head, model_dir)
    items, errors = [], []
    known = {i for m in held for i in m.memory_ids}
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
        for memory in held:
            memory.add(batch, [it.id for it in chunk])
    _write_back(head, model_dir, predictor.config)
    return len(held[0].memory_ids)
