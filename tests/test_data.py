"""Loaders and the bad-input cases: each names the file, line or id and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from memetrm.data import get_dataset, open_image, select_fields
from memetrm.errors import ConfigError, DataError

from .conftest import make_image


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_folder_loads_splits_and_captions(tiny_jsonl_dataset: Path) -> None:
    ds = get_dataset(str(tiny_jsonl_dataset))
    assert ds.splits() == ["dev", "test", "train"]
    recs = ds.records("train")
    assert len(recs) == 24
    assert recs[0].texts["caption"].startswith("a picture of")
    assert recs[1].label == 1 and recs[0].label == 0
    assert ds.default_fields == ("image", "text")


def test_malformed_jsonl_reports_file_and_line(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d" / "train.jsonl",
                    [{"id": "a", "img": "a.png", "label": 0, "text": "ok"}, '{"id": "b", '])
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed JSON"):
        get_dataset(str(p.parent)).records("train")


@pytest.mark.parametrize("label", [2, -1, "yes", 0.5])
def test_label_outside_0_1(tmp_path: Path, label) -> None:
    p = write_jsonl(tmp_path / "d" / "train.jsonl",
                    [{"id": "a", "label": 0, "text": "ok"}, {"id": "b", "label": label, "text": "x"}])
    with pytest.raises(DataError, match=r"train\.jsonl:2 \(id b\): label .* is not 0 or 1"):
        get_dataset(str(p.parent)).records("train")


def test_duplicate_ids(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d" / "train.jsonl",
                    [{"id": "a", "label": 0, "text": "x"}, {"id": "a", "label": 1, "text": "y"}])
    with pytest.raises(DataError, match=r"duplicate id 'a' at .*train\.jsonl:2 \(first seen at .*:1\)"):
        get_dataset(str(p.parent)).records("train")


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text(tmp_path: Path, text) -> None:
    p = write_jsonl(tmp_path / "d" / "train.jsonl", [{"id": "a", "label": 0, "text": text}])
    with pytest.raises(DataError, match=r"train\.jsonl:1 \(id a\): field 'text'"):
        get_dataset(str(p.parent)).records("train")


def test_missing_images_error_by_default_and_skip_counts(tiny_jsonl_dataset: Path) -> None:
    ds = get_dataset(str(tiny_jsonl_dataset))
    recs = ds.records("dev")
    recs[3].image.unlink()
    with pytest.raises(DataError, match=r"1 image missing, ids: dev003"):
        select_fields(recs, ["image", "text"])
    warned = []
    sel = select_fields(recs, ["image", "text"], "skip", warn=warned.append)
    assert sel.skipped_missing_images == ["dev003"]
    assert len(sel.records) == len(recs) - 1 and "dev003" in warned[0]
    # text-only fields never look at images
    assert len(select_fields(recs, ["text"]).records) == len(recs)
    # a gap the dataset is published with is skipped under "error" too, with a warning
    warned.clear()
    sel = select_fields(recs, ["image", "text"], warn=warned.append, known_missing={"dev003"})
    assert sel.skipped_missing_images == ["dev003"] and "known gap" in warned[0]


def test_corrupt_and_truncated_images(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        open_image(bad)
    good = make_image(tmp_path / "good.png", 0, size=128)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="trunc.png: corrupt or truncated"):
        open_image(truncated)
    with pytest.raises(DataError, match="empty image data"):
        open_image(b"")


def test_decompression_bomb_rejected_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 MP, a few KB on disk
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match="decompression bomb"):
        open_image(bomb)
    with pytest.raises(DataError, match="decompression bomb"):
        open_image(bomb.read_bytes(), name="upload")


def test_unknown_dataset_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        get_dataset("no-such-dataset")
    with pytest.raises(DataError, match=r"looked in .*nowhere.*MEMETRM_DATA"):
        get_dataset("multioff", tmp_path / "nowhere")


def test_multioff_label_strings(tmp_path: Path) -> None:
    root = tmp_path / "multioff"
    (root / "images").mkdir(parents=True)
    (root / "train.csv").write_text(
        'image_name,sentence,label\na.jpg,"hello",offensive\nb.jpg,"hi",Non-offensiv\n'
        'c.jpg,"hey",maybe\n')
    ds = get_dataset("multioff", tmp_path)
    with pytest.raises(DataError, match=r"train\.csv:4 \(id c.jpg\): label 'maybe'"):
        ds.records("train")


@pytest.mark.integration
def test_shared_hateful_memes(shared_data: Path) -> None:
    ds = get_dataset("hateful_memes", shared_data)
    sizes = {s: len(ds.records(s)) for s in ds.splits()}
    assert sizes == {"train": 8500, "dev_seen": 500, "dev_unseen": 540, "test_seen": 1000}
    assert ds.default_fields == ("text", "caption")
    assert all(r.texts["caption"] for r in ds.records("test_seen"))


@pytest.mark.integration
def test_shared_multioff_missing_image(shared_data: Path) -> None:
    ds = get_dataset("multioff", shared_data)
    assert [len(ds.records(s)) for s in ("train", "val", "test")] == [445, 149, 149]
    with pytest.raises(DataError, match="KbTk7Rq.jpg"):
        select_fields(ds.records("val"), ["image", "text"])
    assert select_fields(ds.records("val"), ["image", "text"], "skip").skipped_missing_images == [
        "KbTk7Rq.jpg"]
    # the registered dataset knows that gap: skipped by default, with a warning
    assert select_fields(ds.records("val"), ["image", "text"], warn=print,
                         known_missing=ds.known_missing_images).skipped_missing_images == [
        "KbTk7Rq.jpg"]


def test_jsonl_folder_dev_split_falls_back_to_val(tiny_jsonl_dataset: Path) -> None:
    assert get_dataset(str(tiny_jsonl_dataset)).dev_split == "dev"
    (tiny_jsonl_dataset / "dev.jsonl").rename(tiny_jsonl_dataset / "val.jsonl")
    assert get_dataset(str(tiny_jsonl_dataset)).dev_split == "val"
