"""MultiOFF (Suryawanshi et al. 2020): csv splits with the published label strings."""

from __future__ import annotations

import csv
import io

from memetrm.data.base import MemeDataset
from memetrm.data.records import MemeRecord
from memetrm.data.registry import register_dataset
from memetrm.data.validation import BadLines, check_text, check_unique_ids, read_text
from memetrm.errors import DataError

#: As published, including the truncated "Non-offensiv".
LABELS = {"offensive": 1, "non-offensiv": 0, "non-offensive": 0}


@register_dataset
class MultiOFF(MemeDataset):
    name = "multioff"
    subdir = "multioff"
    how_to_get = (
        "Get MultiOFF (Suryawanshi et al., 2020) and place train.csv, val.csv, test.csv "
        "and images/ in that folder."
    )
    dev_split = "val"
    default_fields = ("image", "text")
    label_names = ("not offensive", "offensive")
    #: published without its image file (val split)
    known_missing_images = frozenset({"KbTk7Rq.jpg"})

    def splits(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.csv"))

    def _load(self, split: str) -> list[MemeRecord]:
        path = self.root / f"{split}.csv"
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        need = {"image_name", "sentence", "label"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        records = []
        bad = BadLines(path, self.on_bad_line)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            with bad.check():
                name = (row["image_name"] or "").strip()
                if not name:
                    raise DataError(f"{where}: empty image_name")
                raw = (row["label"] or "").strip().lower()
                if raw not in LABELS:
                    raise DataError(f"{where} (id {name}): label {row['label']!r} is not one of "
                                    "'offensive' / 'Non-offensiv'")
                records.append(MemeRecord(
                    id=name,
                    label=LABELS[raw],
                    texts={"text": check_text(row["sentence"], f"{where} (id {name})")},
                    image=self.image_path(f"images/{name}", f"{where} (id {name})"),
                    source=where,
                ))
        bad.finish(self.warn)
        check_unique_ids([r.id for r in records], [r.source for r in records])
        return records
