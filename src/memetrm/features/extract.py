"""Streaming extraction: workers decode images while the main process runs the encoder."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from memetrm.config import DataOptions
from memetrm.data import get_dataset, open_image, select_fields
from memetrm.data.base import MemeDataset
from memetrm.data.fields import expand_views, with_joined
from memetrm.data.records import MemeRecord
from memetrm.devices import autocast, resolve_device
from memetrm.encoders import Encoder, create_encoder, encoder_version
from memetrm.errors import ConfigError, DataError
from memetrm.features.cache import FeatureCache, content_hash, entry_key
from memetrm.features.featureset import FeatureSet
from memetrm.features.views import combine_views
from memetrm.progress import make_progress
from memetrm.provenance import combined_hash
from memetrm.utils import sha256_text, split_field


class _ImageDataset(Dataset):
    """Returns errors as values so a bad image is reported by id, not as a worker traceback."""

    def __init__(self, records: Sequence[MemeRecord], transform):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        try:
            return i, self.transform(open_image(r.image, name=f"id {r.id} ({r.image})")), None
        except DataError as e:
            return i, None, str(e)


def _collate(items):
    errors = [e for _, _, e in items if e]
    if errors:
        return None, None, errors
    idx = torch.tensor([i for i, _, _ in items])
    return idx, torch.stack([x for _, x, _ in items]), []


def default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 2) - 1))


def encode_field(encoder: Encoder, records: Sequence[MemeRecord], field: str, tokens: bool,
                 batch_size: int = 32, num_workers: int | None = None,
                 desc: str = "", precision: str = "auto") -> dict[str, torch.Tensor]:
    """Encode one field of all records into preallocated tensors (memory = output size).

    The encoder runs under autocast on an accelerator (``precision``); pooled features are
    stored in fp32 and token features in fp16 (they are 10-50x larger), whatever the device.
    """
    n = len(records)
    pooled = torch.empty(n, encoder.dims(field))
    tok = mask = None
    with make_progress() as progress, autocast(encoder.device, precision):
        task = progress.add_task(desc or f"encode {field}", total=n)

        def store(idx: torch.Tensor, out) -> None:
            nonlocal tok, mask
            pooled[idx] = out.pooled.float().cpu()
            if tokens:
                if tok is None:
                    length = out.tokens.shape[1] if field == "image" else encoder.max_text_tokens
                    tok = torch.zeros(n, length, out.tokens.shape[-1], dtype=torch.float16)
                    mask = torch.zeros(n, length, dtype=torch.bool)
                L = out.tokens.shape[1]
                tok[idx, :L] = out.tokens.to(torch.float16).cpu()
                mask[idx, :L] = out.mask.cpu()
            progress.advance(task, len(idx))

        if field == "image":
            workers = default_workers() if num_workers is None else num_workers
            loader = DataLoader(_ImageDataset(records, encoder.image_transform()),
                                batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                                persistent_workers=False, prefetch_factor=4 if workers else None,
                                pin_memory=encoder.device.type == "cuda")
            for idx, pixels, errors in loader:
                if errors:
                    raise DataError("; ".join(errors))
                store(idx, encoder.encode_images(pixels.to(encoder.device, non_blocking=True),
                                                 tokens=tokens))
        else:
            for i in range(0, n, batch_size):
                chunk = records[i:i + batch_size]
                store(torch.arange(i, i + len(chunk)),
                      encoder.encode_texts([r.texts[field] for r in chunk], tokens=tokens))
    out = {field: pooled}
    if tokens:
        out[f"{field}.tokens"], out[f"{field}.mask"] = tok, mask
    return out


@dataclass
class ExtractionPlan:
    """One split's records as they will be encoded, and the cache key of each field: shared
    by the local path and the distributed ones, so all write the very same cache entries."""

    dataset: MemeDataset
    split: str
    encoder: str
    version: str
    records: list[MemeRecord]
    fields: list[str]
    tokens: bool
    keys: dict[str, str]
    hashes: dict[str, str]
    skipped_missing_images: list[str]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def cache_meta(self, field: str, device: str, precision: str) -> dict[str, Any]:
        return {"encoder": self.encoder, "encoder_version": self.version,
                "dataset": self.dataset.identity, "split": self.split, "field": field,
                "tokens": self.tokens, "ids": self.ids, "device": device, "precision": precision}

    def cached(self, cache: FeatureCache, field: str) -> dict[str, torch.Tensor] | None:
        hit = cache.load(self.keys[field], self.ids)
        if hit is None and not self.tokens:  # a token entry holds the pooled features too
            key = entry_key(self.encoder, self.version, field, True, Encoder.max_text_tokens,
                            self.hashes[field])
            tok_hit = cache.load(key, self.ids)
            hit = {field: tok_hit[field]} if tok_hit else None
        return hit


def plan_extraction(dataset: str, split: str, encoder: str, fields: Sequence[str],
                    tokens: bool = False, data: DataOptions = DataOptions()) -> ExtractionPlan:
    """Validate a split for ``fields`` and name the cache entries its features go to; a view
    field (``caption_mean``) stands for every variant of its base field, and a joined field
    (``text+caption``) reads its parts as one sequence."""
    ds = get_dataset(dataset, data.data_root, on_bad_line=data.on_bad_line,
                     allow_outside_images=data.allow_outside_images)
    all_records = with_joined(ds.records(split), fields)
    if not all_records:
        raise DataError(f"{ds.identity}/{split} is empty: its file holds no rows")
    have = {k for r in all_records for k in r.texts} | {"image" for r in all_records if r.image}
    fields = expand_views(fields, have)
    lacking = [f for f in fields if f not in have]
    if lacking:
        raise ConfigError(f"{ds.identity}/{split} has no field(s) {lacking}; its fields are "
                          f"{sorted(have)}")
    try:
        selection = select_fields(all_records, fields, data.on_missing_image,
                                  warn=lambda m: ds.warn(f"{ds.identity}/{split}: {m}"),
                                  known_missing=ds.known_missing_images)
    except DataError as e:
        raise DataError(f"{ds.identity}/{split}: {e}") from e
    records = selection.records
    if not records:
        raise DataError(f"{ds.identity}/{split}: no records left to encode")
    version = encoder_version(encoder)
    hashes = {"labels": sha256_text(*(f"{r.id}:{r.label}" for r in records))}
    keys = {}
    for field in fields:
        hashes[field] = content_hash(records, field)
        keys[field] = entry_key(encoder, version, field, tokens, Encoder.max_text_tokens,
                                hashes[field])
    return ExtractionPlan(ds, split, encoder, version, records, list(fields), tokens, keys, hashes,
                          selection.skipped_missing_images)


def load_features(dataset: str, split: str, encoder: str, fields: Sequence[str],
                  **options: Any) -> FeatureSet:
    """Features of one split, from the cache when it is warm, else extracted and cached.

    A field may name its own encoder, ``text@mpnet-effnet``, so one run can read several
    encoders (MiniLM and mpnet text features side by side); its features keep that name.
    ``options`` are the keyword arguments of ``load_encoder_features``.
    """
    groups: dict[str, list[str]] = {}
    for spec in fields:
        groups.setdefault(split_field(spec, encoder)[1], []).append(spec)
    sets = {enc: load_encoder_features(dataset, split, enc, [split_field(s, enc)[0] for s in specs],
                                       **options)
            for enc, specs in groups.items()}
    if len(sets) == 1 and not any("@" in s for s in fields):
        return sets[encoder] if encoder in sets else next(iter(sets.values()))
    first = next(iter(sets.values()))
    tensors: dict[str, torch.Tensor] = {}
    views: dict[str, torch.Tensor] = {}
    for enc, specs in groups.items():
        fs = sets[enc]
        if fs.ids != first.ids:
            raise DataError(f"{dataset}/{split}: encoders {list(sets)} kept different records "
                            "(missing images?); use the same --on-missing-image for all")
        for spec in specs:
            base = split_field(spec, enc)[0]
            tensors.update({spec + k[len(base):]: v for k, v in fs.tensors.items()
                            if k == base or k.startswith(base + ".")})
            if base in fs.views:
                views[spec] = fs.views[base]
    meta = {**first.meta, "encoder": {enc: specs for enc, specs in groups.items()},
            "encoded": [e for fs in sets.values() for e in fs.meta["encoded"]],
            "extract_seconds": sum(fs.meta["extract_seconds"] for fs in sets.values())}
    return FeatureSet(first.ids, tensors, first.labels, meta, views)


def load_encoder_features(
    dataset: str,
    split: str,
    encoder: str,
    fields: Sequence[str],
    *,
    tokens: bool = False,
    data: DataOptions = DataOptions(),
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> FeatureSet:
    """Features of one split from one encoder: cached, or extracted and cached.

    The encoder is built only on a miss (on ``device``), so a warm run does no model work at
    all. ``meta["encoded"]`` lists the fields that needed a forward pass.
    """
    dev = resolve_device(device)
    plan = plan_extraction(dataset, split, encoder, fields, tokens, data)
    cache = FeatureCache(data.cache_dir)
    enc: Encoder | None = None
    tensors: dict[str, torch.Tensor] = {}
    encoded, seconds = [], 0.0
    for field in plan.fields:
        hit = plan.cached(cache, field)
        if hit is None:
            t0 = time.perf_counter()
            enc = enc or create_encoder(encoder, device=dev)
            hit = encode_field(enc, plan.records, field, tokens, batch_size, num_workers,
                               desc=f"{plan.dataset.identity}/{split} {field}",
                               precision=precision)
            seconds += time.perf_counter() - t0
            cache.save(plan.keys[field], hit, plan.cache_meta(field, str(dev), precision))
            encoded.append(field)
        tensors.update(hit)
    return feature_set(plan, tensors, encoded, seconds, fields)


def feature_set(plan: ExtractionPlan, tensors: dict[str, torch.Tensor], encoded: list[str],
                seconds: float, fields: Sequence[str] | None = None) -> FeatureSet:
    """The split's feature set; ``fields`` (default: the plan's) may name caption views,
    which are built here from the plan's per-variant tensors."""
    labels = torch.tensor([float("nan") if r.label is None else float(r.label)
                           for r in plan.records])
    tensors, views = combine_views(tensors, fields or plan.fields, plan.fields, plan.tokens)
    return FeatureSet(plan.ids, tensors, labels, views=views, meta={
        "dataset": plan.dataset.identity, "split": plan.split, "encoder": plan.encoder,
        "encoded": encoded, "extract_seconds": seconds,
        "skipped_missing_images": plan.skipped_missing_images,
        "data_hash": combined_hash(plan.hashes), "label_names": list(plan.dataset.label_names),
    })
