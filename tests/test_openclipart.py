"""``data prepare openclipart`` on a handful of SVGs written here, broken ones included."""

from __future__ import annotations

import json
from pathlib import Path

import cairosvg
import pytest
from PIL import Image
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.data import get_dataset
from memetrm.data.openclipart import caption, prepare_openclipart, split_of
from memetrm.features import load_features

from . import fakes  # noqa: F401  (registers the test-fake encoder)

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     xmlns:cc="http://web.resource.org/cc/" xmlns:dc="http://purl.org/dc/elements/1.1/"
     width="{w}" height="{h}" viewBox="0 0 {w} {h}">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
  </cc:Work></rdf:RDF></metadata>
  <rect x="0" y="0" width="{w}" height="{h}" fill="{color}"/>
</svg>
"""


def svg(title: str, keywords: list[str], color: str, w: int = 40, h: int = 20) -> str:
    kws = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return SVG.format(title=title, keywords=kws, color=color, w=w, h=h)


@pytest.fixture
def svg_tree(tmp_path: Path) -> Path:
    src = tmp_path / "svg"
    files = {
        "animals/cat.svg": svg("cat", ["animal", "cat", "hash", "pet"], "orange"),
        "animals/mammal/cat.svg": svg("cat", ["animal", "cat", "hash", "pet"], "orange"),  # copy
        "food/bread.svg": svg("Clipart by Someone - bread", ["food"], "brown", w=10, h=40),
        "shapes/red_square.svg": svg("", [], "red"),
        "shapes/blue.svg": svg("blue box", ["shape"], "blue"),
        "people/face.svg": svg("face", ["person"], "pink"),
        "people/broken.svg": svg("broken", [], "black")[:200],  # truncated XML
        "tools/empty.svg": "",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for s in ("train", "val", "test")
            for line in (out / f"{s}.jsonl").read_text().splitlines()]


def test_prepare_writes_a_dataset_and_counts_failures(svg_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "oc"
    report = prepare_openclipart(svg_tree, out, size=32, workers=0, log=lambda _m: None)
    assert report.found == 8 and report.duplicates == 1
    assert set(report.failed) == {"people/broken.svg", "tools/empty.svg"}
    rows = read_rows(out)
    assert len(rows) == 5 == sum(report.written.values())
    by_source = {r["source"]: r for r in rows}
    assert by_source["animals/cat.svg"]["text"] == "cat (animal, pet)"  # junk + dup keywords gone
    assert by_source["food/bread.svg"]["text"] == "bread (food)"  # byline stripped
    assert by_source["shapes/red_square.svg"]["text"] == "red square"  # no title: file name
    assert by_source["food/bread.svg"]["category"] == "food"
    for r in rows:
        assert r["label"] is None and (out / "{}.jsonl".format(split_of(r["id"]))).is_file()
        img = Image.open(out / r["img"])
        assert img.size == (32, 32) and img.mode == "RGB"
    # tall image: centred on white, painted in the middle column only
    bread = Image.open(out / by_source["food/bread.svg"]["img"])
    white = (255, 255, 255)
    assert bread.getpixel((1, 16)) == white and bread.getpixel((16, 16)) != white
    # deterministic: a second run writes identical splits
    prepare_openclipart(svg_tree, tmp_path / "oc2", size=32, workers=0, log=lambda _m: None)
    for s in ("train", "val", "test"):
        assert (out / f"{s}.jsonl").read_text() == (tmp_path / "oc2" / f"{s}.jsonl").read_text()
    prompts = json.loads((out / "zeroshot.json").read_text())
    assert prompts["field"] == "category" and "animals" in prompts["prompts"]


def test_output_works_as_a_dataset_folder(svg_tree: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "oc"
    prepare_openclipart(svg_tree, out, size=32, workers=0, log=lambda _m: None)
    ds = get_dataset(str(out))
    assert ds.default_fields == ("image", "text")
    split = next(s for s in ("train", "val", "test") if ds.records(s))
    fs = load_features(str(out), split, "test-fake", ["image", "text"])
    assert len(fs) == len(ds.records(split)) and fs.tensors["image"].shape[1] == 6


def test_size_guard_and_timeout(svg_tree: Path, tmp_path: Path, monkeypatch) -> None:
    (svg_tree / "shapes" / "big.svg").write_text(svg("big", [], "green") + " " * 5000)
    real = cairosvg.svg2png

    def slow(*args, **kwargs):
        if b"blue box" in kwargs["bytestring"]:
            while True:  # a pathological file that never finishes
                pass
        return real(*args, **kwargs)

    monkeypatch.setattr(cairosvg, "svg2png", slow)
    report = prepare_openclipart(svg_tree, tmp_path / "oc", size=32, workers=0, timeout=0.5,
                                 max_bytes=4000, log=lambda _m: None)
    assert "larger than" in report.failed["shapes/big.svg"]
    assert "timed out" in report.failed["shapes/blue.svg"]
    assert "ParseError" in report.failed["people/broken.svg"]
    assert sum(report.written.values()) == 9 - 1 - 4  # found - duplicate - failed


def test_cli_prepare_with_worker_pool(svg_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "oc"
    res = CliRunner().invoke(app, ["data", "prepare", "openclipart", "--source", str(svg_tree),
                                   "--out", str(out), "--size", "24", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert len(read_rows(out)) == 5
    assert json.loads((out / "prepare.json").read_text())["failed"].keys() == {
        "people/broken.svg", "tools/empty.svg"}
    res = CliRunner().invoke(app, ["data", "prepare", "openclipart", "--source",
                                   str(tmp_path / "nowhere"), "--out", str(out)])
    assert res.exit_code == 2 and "openclipart-svg" in res.output


def test_caption_dedups_and_caps_keywords() -> None:
    kws = ["Tree", "tree", "green"] + [f"k{i}" for i in range(20)]
    assert caption("tree", kws).startswith("tree (green, k0")
    assert caption("tree", kws).count(",") == 7
