"""Caption views: the embeddings of every caption of a meme, not only the first.

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

from collections.abc import Iterable

import torch

from memetrm.data.fields import is_random_view, is_view, variants, view_base
from memetrm.errors import ConfigError


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
