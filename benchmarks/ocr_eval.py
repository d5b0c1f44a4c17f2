"""OCR quality on MultiOFF's test split: corpus CER and WER of RapidOCR vs the published text.

The ``sentence`` column is the dataset authors' transcription (PTB-tokenised: "do n't",
" , "), so even perfect OCR scores above zero WER; both CER and WER are case-folded with
whitespace collapsed and nothing else. Reports raw engine output and output after
``restore_spaces``.

    python -m benchmarks.ocr_eval [--data ../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.ocr_metrics import error_counts
from benchmarks.render.ocr_eval import DATA, render
from memetrm.data.images import open_image
from memetrm.errors import DataError
from memetrm.serving.ocr import OCR, restore_spaces
from memetrm.utils import atomic_write_text

DEFAULT_DATA = Path(os.environ.get("MEMETRM_DATA",
                                   Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="shared data root (or MEMETRM_DATA)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="only the first N rows (0 = all)")
    args = ap.parse_args()

    root = args.data / "multioff"
    with open(root / f"{args.split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if args.limit:
        rows = rows[: args.limit]
    ocr = OCR(restore=False).load()
    totals = {"raw": [0, 0, 0, 0], "restored": [0, 0, 0, 0]}
    skipped, start = 0, time.perf_counter()
    for row in rows:
        try:
            image = open_image(root / "images" / row["image_name"])
        except DataError as e:
            print(f"skip: {e}")
            skipped += 1
            continue
        raw = ocr(image)
        for key, hyp in (("raw", raw), ("restored", restore_spaces(raw))):
            totals[key] = [t + c for t, c in zip(totals[key], error_counts(row["sentence"], hyp),
                                                 strict=True)]
    n = len(rows) - skipped
    result = {"command": "python -m benchmarks.ocr_eval " + " ".join(sys.argv[1:]),
              "split": args.split, "images": n, "skipped": skipped,
              "seconds_per_image": (time.perf_counter() - start) / max(n, 1),
              "rates": {key: {"cer": ce / max(cn, 1), "wer": we / max(wn, 1), "ref_chars": cn,
                              "ref_words": wn} for key, (ce, cn, we, wn) in totals.items()}}
    atomic_write_text(DATA, json.dumps(result, indent=2))
    render()
    print(f"MultiOFF {args.split}: {n} images OCR'd ({skipped} skipped), "
          f"{result['seconds_per_image']:.2f} s/image on CPU")
    for key, r in result["rates"].items():
        print(f"{key:>9}: CER {r['cer']:.3f}  WER {r['wer']:.3f}")


if __name__ == "__main__":
    main()
