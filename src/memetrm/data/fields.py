"""Field names that stand for more than one stored text: caption views and joined fields.

``caption_mean`` / ``caption_random`` stand for every variant of ``caption`` (``caption``,
``caption_2``, ...; see ``memetrm.features.views`` for how their embeddings combine), and
``text+caption`` for the meme read as one sequence, ``"<text> [SEP] <caption>"``. Plain string
work, shared by extraction and serving. A client scoring one meme sends base names only
(``client_fields``): one given caption is its own mean.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from memetrm.data.records import MemeRecord
from memetrm.utils import split_field

#: suffixes of the view fields: the variants' mean, or one drawn per example per epoch
VIEW_SUFFIXES = ("_mean", "_random")
JOIN = "+"
SEPARATOR = " [SEP] "


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


def joined_parts(field: str) -> list[str]:
    """``text+caption`` -> ``["text", "caption"]``; a plain field is its own only part."""
    return field.split(JOIN)


def source_field(spec: str) -> str:
    """The item field a model field reads when one meme is scored: its encoder dropped and a
    view by its base name (``caption_mean@clip`` -> ``caption``); joined fields stay joined."""
    return view_base(split_field(spec, "")[0])


def client_fields(specs: Iterable[str]) -> list[str]:
    """The fields a client sends to score one meme with a model trained on ``specs``, in
    order, no repeats: ``["image", "text+caption_mean"]`` -> ``["image", "text", "caption"]``."""
    return list(dict.fromkeys(p for s in specs for p in joined_parts(source_field(s))))


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
