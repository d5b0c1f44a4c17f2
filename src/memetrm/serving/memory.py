"""``memetrm memory add``: labelled memes join a saved model's memories (a memory head's, or
every memory member's of an ensemble), no retraining."""

from __future__ import annotations

from pathlib import Path

import torch

from memetrm.data.images import open_image
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.heads import save_pretrained
from memetrm.heads.base import memories
from memetrm.modelstore import REVISION_KEY, writer_lock
from memetrm.serving.batch import iter_inputs
from memetrm.serving.hashlist import MODEL_LIST
from memetrm.serving.predictor import Predictor

#: keys ``save_pretrained`` writes itself; the rest of config.json is carried over unchanged
_OWN_KEYS = ("head", "config", "input_dims", "token_dims", "fitted", REVISION_KEY)


def add_to_memory(model_dir: str | Path, source: Path, device: str | None = "auto",
                  batch_size: int = 64) -> int:
    """See ``_add``; the model folder stays locked from reading the memory to writing it back, so
    concurrent adds queue and none loses rows."""
    with writer_lock(model_dir, create=False):
        return _add(Path(model_dir), source, device, batch_size)


def _add(model_dir: Path, source: Path, device: str | None, batch_size: int) -> int:
    """Encode the labelled memes of ``source`` (jsonl: id, label 0/1, text fields, optional img)
    and append them to each of the model's memories; the directory is rewritten atomically, and
    only if every row is good (a bad row is named and nothing changes). Returns the memory size
    (of the first memory: an ensemble's grow together)."""
    predictor = Predictor(model_dir, device=device)
    head = predictor.head
    held = memories(head)
    if not held:
        raise ConfigError(f"{model_dir}: head {head.name!r} has no retrieval memory; train a "
                          "`retrieval` head to add memes to")
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
        raise DataError(f"{len(errors)} bad row(s), nothing added: "
                        + "; ".join(str(i.error) for i in errors[:20]))
    if not items:
        raise DataError(f"{source}: no memes to add")
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        try:
            prepared = [predictor.prepare(open_image(it.image, name=it.id) if it.image else None,
                                          it.texts) for it in chunk]
        except MemetrmError as e:
            raise DataError(f"{source}: {e} (nothing added)") from e
        batch = predictor.features(prepared)
        batch["label"] = torch.tensor([float(it.label) for it in chunk], device=predictor.device)
        for memory in held:
            memory.add(batch, [it.id for it in chunk])
    card, known = model_dir / "README.md", model_dir / MODEL_LIST
    save_pretrained(head.cpu(), model_dir, card=card.read_text() if card.is_file() else None,
                    files={MODEL_LIST: known.read_bytes()} if known.is_file() else None,
                    **{k: v for k, v in predictor.config.items() if k not in _OWN_KEYS})
    return len(held[0].memory_ids)
