"""Folders of Hateful-Memes-format jsonl: ``--dataset path/to/folder``."""

from __future__ import annotations

from functools import cached_property

from memetrm.data.base import MemeDataset
from memetrm.data.records import MemeRecord
from memetrm.data.validation import (
    BadLines,
    check_text,
    check_unique_ids,
    parse_label,
    read_jsonl,
)
from memetrm.errors import DataError

CAPTIONS_FILE = "captions.jsonl"


class JsonlFolder(MemeDataset):
    """Every ``*.jsonl`` (but captions) is a split of ``{"id", "img", "label", "text"}`` rows.

    An optional ``captions.jsonl`` of ``{"id", "captions": [...]}`` adds a ``caption`` field
    (the first, best-beam caption), which stands in for the image when images are absent, and
    the other captions as ``caption_2``, ``caption_3``, ... (read by the caption views of
    ``memetrm.features.views``).
    """

    @property
    def dev_split(self) -> str:
        """``dev`` or, as many folders name it, ``val``."""
        return "val" if "val" in self.splits() and "dev" not in self.splits() else "dev"

    def splits(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.jsonl") if p.name != CAPTIONS_FILE)

    @cached_property
    def captions(self) -> dict[str, list[str]]:
        path = self.root / CAPTIONS_FILE
        if not path.exists():
            return {}
        out: dict[str, list[str]] = {}
        bad = BadLines(path, self.on_bad_line)
        for lineno, obj in read_jsonl(path, bad):
            with bad.check():
                caps = obj.get("captions", obj.get("caption"))
                caps = caps if isinstance(caps, list) and caps else [caps]
                out[str(obj.get("id"))] = [check_text(c, f"{path}:{lineno}", "captions")
                                           for c in caps]
        bad.finish(self.warn)
        return out

    @property
    def default_fields(self) -> tuple[str, ...]:
        """``image`` + ``text`` when the rows name images (missing files then follow
        ``on_missing_image``, never a silent switch to text only), else the text fields."""
        first = self.train_split if self.train_split in self.splits() else self.splits()[0]
        if any(r.image is not None for r in self.records(first)):
            return ("image", "text")
        return ("text", "caption") if self.captions else ("text",)

    def _load(self, split: str) -> list[MemeRecord]:
        path = self.root / f"{split}.jsonl"
        records: list[MemeRecord] = []
        bad = BadLines(path, self.on_bad_line)
        for lineno, obj in read_jsonl(path, bad):
            where = f"{path}:{lineno}"
            with bad.check():
                if "id" not in obj:
                    raise DataError(f"{where}: missing 'id'")
                rid = str(obj["id"])
                texts = {"text": check_text(obj.get("text"), f"{where} (id {rid})")}
                for i, caption in enumerate(self.captions.get(rid, []), 1):
                    texts["caption" if i == 1 else f"caption_{i}"] = caption
                img = obj.get("img")
                if img is not None and not isinstance(img, str):
                    raise DataError(f"{where} (id {rid}): 'img' must be a path string")
                records.append(MemeRecord(
                    id=rid,
                    label=parse_label(obj.get("label"), f"{where} (id {rid})"),
                    texts=texts,
                    image=self.image_path(img, f"{where} (id {rid})") if img else None,
                    source=where,
                ))
        bad.finish(self.warn)
        check_unique_ids([r.id for r in records], [r.source for r in records])
        return records
