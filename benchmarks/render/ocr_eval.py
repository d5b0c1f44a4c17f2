"""The OCR table in docs/serving.md, from docs/data/ocr.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/ocr.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """The OCR table in docs/serving.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    rows = [[key, f"{v['cer']:.3f}", f"{v['wer']:.3f}"] for key, v in r["rates"].items()]
    replace_block(DOC, "ocr", f"`{r['command']}`: MultiOFF {r['split']}, {r['images']} images "
                  f"({r['skipped']} skipped), {r['seconds_per_image']:.2f} s per image on the "
                  "CPU.\n\n" + markdown_table(["text", "CER", "WER"], rows, "lrr"))
