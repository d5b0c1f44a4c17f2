"""Known-meme hash lists: memes already judged, answered from the list before any model runs.

File format (CSV, UTF-8, one header line; lines starting with ``#`` are comments)::

    pdq,label,source_id
    f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,1,case-1234

``pdq`` is the 64-hex-digit PDQ hash ThreatExchange users exchange, ``label`` the model's
label index (0/1), ``source_id`` where the judgement came from. ``memetrm hashes add`` keeps a
model's own list in ``<model>/hashes.csv``; ``--hash-list FILE`` adds others.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memetrm.errors import DataError
from memetrm.serving.hashindex import HashIndex
from memetrm.serving.hashing import PDQ_DISTANCE, ImageHash
from memetrm.utils import atomic_write_text

HEADER = ["pdq", "label", "source_id"]
#: a model directory's own list
MODEL_LIST = "hashes.csv"


@dataclass(frozen=True)
class Entry:
    hash: ImageHash
    label: int
    source_id: str


class HashList:
    """Entries searched by Hamming distance; ``match`` returns the nearest within ``distance``."""

    def __init__(self, entries: Iterable[Entry] = (), distance: int = PDQ_DISTANCE,
                 name: str = "") -> None:
        self.entries = list(entries)
        self.distance, self.name = distance, name
        self._index = HashIndex(np.array([np.frombuffer(e.hash.bits, np.uint8)
                                          for e in self.entries], np.uint8), distance)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def read(cls, path: Path, distance: int = PDQ_DISTANCE) -> HashList:
        """Parse a list file; a bad row is a ``DataError`` naming its line."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the hash list ({e})") from e
        rows = [(n, line) for n, line in enumerate(lines, 1)
                if line.strip() and not line.lstrip().startswith("#")]
        if not rows or next(csv.reader([rows[0][1]])) != HEADER:
            raise DataError(f"{path}: a hash list starts with the header line {','.join(HEADER)}")
        entries = []
        for n, line in rows[1:]:
            try:
                pdq, label, source = next(csv.reader([line]))
                if label not in ("0", "1"):
                    raise ValueError(f"label must be 0 or 1, got {label!r}")
                entries.append(Entry(ImageHash.from_hex(pdq.strip()), int(label), source))
            except ValueError as e:
                raise DataError(f"{path}:{n}: {e} (expected {','.join(HEADER)})") from e
        return cls(entries, distance, name=Path(path).name)

    def text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows([e.hash.hex, e.label, e.source_id] for e in self.entries)
        return buf.getvalue()

    def write(self, path: Path) -> None:
        atomic_write_text(Path(path), self.text())

    def match(self, h: ImageHash | None) -> dict[str, Any] | None:
        """The nearest listed meme within the distance, as the response reports it; an
        unreliable (low-quality) hash matches nothing."""
        if h is None or not h.reliable or not self.entries:
            return None
        (best,), (d,) = self._index.nearest(np.frombuffer(h.bits, np.uint8))
        if best < 0:
            return None
        e = self.entries[best]
        return {"label": e.label, "source_id": e.source_id, "distance": int(d),
                "list": self.name}



def best_match(lists: Iterable[HashList], h: ImageHash | None) -> dict[str, Any] | None:
    """The nearest match over several lists."""
    found = [m for lst in lists if (m := lst.match(h)) is not None]
    return min(found, key=lambda m: m["distance"]) if found else None


def labelled_entries(source: Path) -> tuple[list[Entry], list[str]]:
    """PDQ entries for the labelled memes of a jsonl (id, label 0/1, img), and the ids left out
    because their image has too little detail for PDQ to match reliably. A bad row (no image,
    bad label, unreadable image) is a ``DataError`` naming every bad row."""
    from memetrm.data.images import open_image
    from memetrm.serving.batch import iter_inputs
    from memetrm.serving.hashing import pdq

    entries, flat, errors = [], [], []
    for item in iter_inputs(source):
        if item.error is None and item.label not in (0, 1):
            item.error = f"{source}: id {item.id}: label must be 0 or 1, got {item.label!r}"
        if item.error is None and item.image is None:
            item.error = f"{source}: id {item.id}: no 'img' to hash"
        if item.error is None:
            try:
                h = pdq(open_image(item.image, name=f"id {item.id}"))
            except DataError as e:
                item.error = f"{source}: {e}"
        if item.error:
            errors.append(item.error)
        elif h.reliable:
            entries.append(Entry(h, int(item.label), item.id))
        else:
            flat.append(item.id)
    if errors:
        raise DataError(f"{len(errors)} bad row(s), nothing added: " + "; ".join(errors[:20]))
    return entries, flat
