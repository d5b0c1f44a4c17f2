"""Known-meme hash lists: memes already judged, answered from the list before any model runs.

File format (CSV, UTF-8 with or without a BOM, one header line; rows whose first field starts
with ``#`` are comments)::

    pdq,label,source_id,text
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",1,"case-1234","when you see it"

``pdq`` is the 64-hex-digit PDQ hash ThreatExchange users exchange, ``label`` the model's
label index (0/1), ``source_id`` where the judgement came from, ``text`` the meme's normalised
text (empty: the picture alone identifies the meme). Lists of the first three columns (as
ThreatExchange exports, and as memetrm wrote before) are read as entries without text.
``memetrm hashes add`` keeps a model's own list in ``<model>/hashes.csv``; ``--hash-list FILE``
adds others.

This module is the one reader and writer of the format, both through the csv module: strings
are quoted on write and records are parsed whole, so an id may hold commas, quotes, newlines
or any other line separator (``\\u2028``, ``\\x1c``) and still round-trip.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memetrm.errors import DataError
from memetrm.modelstore import model_file, republish, writer_lock
from memetrm.serving.hashindex import HashIndex
from memetrm.serving.hashing import LIST_DISTANCE, ImageHash, normalise_text, texts_agree
from memetrm.utils import atomic_write_text, plural

HEADER = ["pdq", "label", "source_id", "text"]
#: the header of a list whose entries have no text
PICTURE_HEADER = HEADER[:3]
#: a model directory's own list
MODEL_LIST = "hashes.csv"


@dataclass(frozen=True)
class Entry:
    hash: ImageHash
    label: int
    source_id: str
    #: the meme's normalised text; "" when it had none (the picture alone identifies it)
    text: str = ""


class HashList:
    """The entries of one list file, in file order."""

    def __init__(self, entries: Iterable[Entry] = (), name: str = "") -> None:
        self.entries, self.name = list(entries), name

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def read(cls, path: Path) -> HashList:
        """Parse a list file; a bad row is a ``DataError`` naming the line it starts on."""
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                entries = list(_parse(csv.reader(f), Path(path)))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the hash list ({e})") from e
        return cls(entries, name=Path(path).name)

    @classmethod
    def of_model(cls, model_dir: Path) -> HashList:
        """A model folder's own list (empty when it has none)."""
        path = model_file(Path(model_dir), MODEL_LIST)
        return cls.read(path) if path else cls(name=MODEL_LIST)

    def text(self) -> str:
        buf = io.StringIO()
        buf.write(",".join(HEADER) + "\n")
        csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerows(
            [e.hash.hex, e.label, e.source_id, e.text] for e in self.entries)
        return buf.getvalue()

    def add(self, entries: Iterable[Entry]) -> HashList:
        """The list with ``entries`` appended; an id already on it is a ``DataError`` naming it."""
        entries = list(entries)
        clash = sorted({e.source_id for e in entries} & {e.source_id for e in self.entries})
        if clash:
            raise DataError(f"{self.name or 'hash list'}: {plural(len(clash), 'id')} {clash[:20]} "
                            "already on the list, nothing added")
        return HashList([*self.entries, *entries], name=self.name)

    def remove(self, ids: Iterable[str]) -> HashList:
        """The list without the entries of ``ids`` (every entry of a meme listed with several
        pictures); an id not on the list is a ``DataError`` naming it."""
        ids = set(ids)
        missing = sorted(ids - {e.source_id for e in self.entries})
        if missing:
            raise DataError(f"{self.name or 'hash list'}: id(s) {missing[:20]} not on the list, "
                            "nothing removed")
        return HashList([e for e in self.entries if e.source_id not in ids], name=self.name)

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically; a folder or an unwritable path is a ``DataError``."""
        if Path(path).is_dir():
            raise DataError(f"{path}: is a folder; give the hash list's file name")
        try:
            atomic_write_text(Path(path), self.text())
        except OSError as e:
            raise DataError(f"{path}: cannot write the hash list ({e.strerror or e})") from e


def edit_model_list(model_dir: Path, edit: Callable[[HashList], HashList]) -> HashList:
    """Replace a model folder's own list by ``edit(current list)`` under the folder's writer
    lock, as a new revision of the folder (concurrent editors queue, none loses entries, and a
    running server reloads the list)."""
    with writer_lock(model_dir, create=False) as folder:
        new = edit(HashList.of_model(folder))
        republish(folder, {MODEL_LIST: new.text().encode()})
    return new


def _parse(reader: Any, path: Path) -> Iterator[Entry]:
    """Entries of a csv reader over a list file: the header first, then one entry per record."""
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip() for c in row]
                if header not in (HEADER, PICTURE_HEADER):
                    break
                continue
            try:
                yield _entry(row, len(header))
            except ValueError as e:
                raise DataError(f"{path}:{start}: {e} (expected {','.join(header)})") from e
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not a valid CSV record ({e})") from e
    if header not in (HEADER, PICTURE_HEADER):
        raise DataError(f"{path}: a hash list starts with the header line {','.join(HEADER)} "
                        f"(or {','.join(PICTURE_HEADER)})")


def _entry(row: list[str], columns: int) -> Entry:
    if len(row) != columns:
        raise ValueError(f"{len(row)} fields, not {columns}")
    pdq, label, source = row[:3]
    if label.strip() not in ("0", "1"):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    text = normalise_text(row[3]) if columns > 3 else ""
    return Entry(ImageHash.from_hex(pdq.strip()), int(label), source, text)


@dataclass(frozen=True)
class ListMatch:
    """A listed meme whose picture is near a query's. ``text_agrees`` False: the picture is on
    the list, but the query's text is not the listed meme's (another meme on that picture)."""

    entry: Entry
    list: str
    #: Hamming distance between the PDQ hashes (of 256 bits)
    distance: int
    text_agrees: bool = True

    def as_dict(self) -> dict[str, Any]:
        """As a response reports it (``hash_match``)."""
        return {"label": self.entry.label, "source_id": self.entry.source_id,
                "distance": self.distance, "list": self.list}


class KnownMemes:
    """Every list a predictor answers from, searched as one: a meme listed twice (on one list
    or several) is one entry, where it was listed first."""

    def __init__(self, lists: Iterable[HashList] = (), distance: int = LIST_DISTANCE) -> None:
        unique: dict[tuple[bytes, str], tuple[Entry, str]] = {}
        for lst in lists:
            for e in lst.entries:
                unique.setdefault((e.hash.bits, e.text), (e, lst.name))
        self.entries = [e for e, _ in unique.values()]
        self._list_names = [name for _, name in unique.values()]
        #: whether a match may need the meme's text (OCR, when it was not sent)
        self.has_text = any(e.text for e in self.entries)
        self.distance = distance
        self._index = HashIndex(np.array([np.frombuffer(e.hash.bits, np.uint8)
                                          for e in self.entries], np.uint8), distance)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, h: ImageHash | None, read_text: Callable[[], str]) -> ListMatch | None:
        """The nearest entry within the distance whose text agrees with the meme's (an entry
        without text agrees with any); ``read_text`` gives the meme's text and is called only
        when an entry near the picture has one. If entries are near but none agrees, the
        nearest with ``text_agrees`` False. An unreliable (low-quality) hash matches nothing."""
        if h is None or not h.reliable or not self.entries:
            return None
        [(near, d)] = self._index.within(np.frombuffer(h.bits, np.uint8))
        if not len(near):
            return None
        text = normalise_text(read_text()) if any(self.entries[i].text for i in near) else ""
        agrees = (k for k, i in enumerate(near) if not self.entries[i].text
                  or texts_agree(self.entries[i].text, text))
        k = next(agrees, None)
        best = near[0 if k is None else k]
        return ListMatch(self.entries[best], self._list_names[best], int(d[0 if k is None else k]),
                         k is not None)


def labelled_entries(source: Path) -> tuple[list[Entry], list[str]]:
    """PDQ entries (with their normalised text) for the labelled memes of a jsonl (id, label
    0/1, img, text), and the ids left out because their image has too little detail for PDQ to
    match reliably. A bad row (no image, bad label or text, unreadable image) is a
    ``DataError`` naming every bad row."""
    from memetrm.data.images import open_image
    from memetrm.serving.batch import iter_inputs
    from memetrm.serving.hashing import pdq

    entries, flat, errors = [], [], []
    for item in iter_inputs(source):
        text = item.texts.get("text")
        if item.error is None and item.label not in (0, 1):
            item.error = f"{source}: id {item.id}: label must be 0 or 1, got {item.label!r}"
        if item.error is None and text is not None and not isinstance(text, str):
            item.error = f"{source}: id {item.id}: 'text' must be a string, got {text!r}"
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
            entries.append(Entry(h, int(item.label), item.id, normalise_text(text or "")))
        else:
            flat.append(item.id)
    if errors:
        raise DataError(f"{plural(len(errors), 'bad row')}, nothing added: " + "; ".join(errors[:20]))
    return entries, flat
