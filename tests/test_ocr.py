"""OCR engine, space restoration and the CER/WER arithmetic the benchmark reports."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from benchmarks.ocr_metrics import error_counts, normalize
from memetrm.data.images import open_image
from memetrm.serving.ocr import OCR, restore_spaces


@pytest.fixture(scope="module")
def ocr() -> OCR:
    return OCR().load()


def test_restore_spaces_splits_glued_words_only() -> None:
    assert restore_spaces("BlacknurseinConnecticutaskedmeifTrumpwas") == \
        "Black nurse in Connecticut asked me if Trump was"
    assert restore_spaces("Iknowwedon'tevertalkabout") == "I know we don't ever talk about"
    assert restore_spaces("TherearetoomanyPuertoRicans.Theyarecominghome") == \
        "There are too many Puerto Ricans. They are coming home"
    kept = "Short words stay, as do 2016 and imgur.com"
    assert restore_spaces(kept) == kept


def test_error_counts_and_normalisation() -> None:
    assert normalize("  Hello\n  WORLD ") == "hello world"
    assert error_counts("Hello world", "hello  world") == (0, 11, 0, 2)
    assert error_counts("the cat sat", "the bat sat") == (1, 11, 1, 3)
    # a lost space costs one character but two words
    assert error_counts("the cat sat", "thecat sat") == (1, 11, 2, 3)
    assert error_counts("ab", "") == (2, 2, 1, 1)


def test_reads_rendered_text(ocr: OCR) -> None:
    img = Image.new("RGB", (720, 240), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=44)
    draw.text((20, 30), "WHEN THE MEME", fill="black", font=font)
    draw.text((20, 140), "IS READ BY OCR", fill="black", font=font)
    text = ocr(img)
    edits, n, _, _ = error_counts("WHEN THE MEME IS READ BY OCR", text)
    assert edits / n < 0.15, text
    assert ocr(Image.new("RGB", (200, 200), "white")) == ""


@pytest.mark.integration
def test_multioff_sample_cer(shared_data: Path, ocr: OCR) -> None:
    """Two real MultiOFF test memes: corpus CER well below the raw-engine level."""
    root = shared_data / "multioff"
    with open(root / "test.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (root / "images" / r["image_name"]).exists()][2:4]
    totals = [0, 0]
    for row in rows:
        text = ocr(open_image(root / "images" / row["image_name"]))
        ce, cn, _, _ = error_counts(row["sentence"], text)
        totals = [totals[0] + ce, totals[1] + cn]
    assert totals[0] / totals[1] < 0.35
