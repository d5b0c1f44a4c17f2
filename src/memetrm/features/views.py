"""Field views: every caption of a meme, not only the first, and fields read as one sequence.

A dataset may give a text field several variants (Hateful Memes ships five beam captions per
image: ``caption`` is the first, ``caption_2`` ... ``caption_5`` the others). Two derived
fields read them all:

- ``<field>_mean``: the mean of the variants' pooled embeddings, in training and prediction;
- ``<field>_random``: in training one variant per example, drawn afresh each epoch (a cheap
  augmentation); at prediction the mean, as for ``_mean``.

Each variant is extracted and cached as its own field, so the views cost one extraction per
variant once. A served model reads the base field (``caption``); a single given caption is
then its own mean.

A joined field ``text+caption`` is the meme as one sequence, ``"<text> [SEP] <caption>"``:
the input a text tower tuned on whole memes (``memetrm tune``) was tuned on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from memetrm.data.records import MemeRecord
from memetrm.errors import ConfigError

JOIN = "+"
SEPARATOR = " [SEP] "

#: derived-field suffix -> whether training draws one variant per example per epoch
VIEW_SUFFIXES = {"_mean": False, "_random": True}


def view_base(field: str) -> str:
    """``caption_mean`` -> ``caption``; any other field is returned as is."""
    for suffix in VIEW_SUFFIXES:
        if field.endswith(suffix) and len(field) > len(suffix):
            return field.removesuffix(suffix)
    return field


def is_view(field: str) -> bool:
    return view_base(field) != field


def is_random_view(field: str) -> bool:
    return field.endswith("_random") and is_view(field)


def variants(base: str, available: Iterable[str]) -> list[str]:
    """``base`` then ``base_2``, ``base_3``, ... as far as ``available`` names them."""
    numbered = {int(m.group(1)): f for f in available
                if (m := re.fullmatch(re.escape(base) + r"_(\d+)", f))}
    return [base, *(numbered[i] for i in sorted(numbered) if i >= 2)]


def expand_views(fields: Iterable[str], available: Iterable[str]) -> list[str]:
    """The fields to extract: view fields replaced by their variants, in order, no repeats."""
    available = set(available)
    out: list[str] = []
    for f in fields:
        out.extend(variants(view_base(f), available) if is_view(f) else [f])
    return list(dict.fromkeys(out))


def combine_views(tensors: dict[str, torch.Tensor], fields: Iterable[str], available: Iterable[str],
                  tokens: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The requested fields from per-variant tensors: ``(tensors, views)`` where a view field
    holds the variants' mean and ``views[field]`` (N, V, D) the variants a training pass
    draws from (random views only). Fields not asked for are dropped."""
    fields, available = list(fields), set(available)
    if tokens and any(is_view(f) for f in fields):
        raise ConfigError("caption views (fields ending in _mean/_random) give pooled features "
                          "only; use them with heads that read no token features")
    out: dict[str, torch.Tensor] = {}
    views: dict[str, torch.Tensor] = {}
    for f in fields:
        if not is_view(f):
            out.update({k: v for k, v in tensors.items() if k == f or k.startswith(f + ".")})
            continue
        stacked = torch.stack([tensors[v] for v in variants(view_base(f), available)], 1)
        out[f] = stacked.mean(1)
        if is_random_view(f):
            views[f] = stacked
    return out, views


def joined_parts(field: str) -> list[str]:
    """``text+caption`` -> ``["text", "caption"]``; a plain field is its own only part."""
    return field.split(JOIN)


def join_texts(texts: Mapping[str, str], field: str) -> str:
    """The text a (possibly joined) field reads from a record's or a request's texts."""
    return SEPARATOR.join(texts[p] for p in joined_parts(field))


def with_joined(records: Sequence[MemeRecord], fields: Iterable[str]) -> list[MemeRecord]:
    """Records with each joined field of ``fields`` added to the texts of those having every part."""
    joined = [f for f in fields if JOIN in f]
    if not joined:
        return list(records)
    out = []
    for r in records:
        extra = {f: join_texts(r.texts, f) for f in joined
                 if all(p in r.texts for p in joined_parts(f))}
        out.append(dataclasses.replace(r, texts={**r.texts, **extra}) if extra else r)
    return out
