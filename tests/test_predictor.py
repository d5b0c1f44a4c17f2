"""Predictor and ``memetrm predict`` end to end on the real offline encoder (minilm-effnet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.encoders import Encoder, create_encoder
from memetrm.errors import DataError
from memetrm.heads import create_head, save_pretrained
from memetrm.serving import batch as serve_cli
from memetrm.serving import predictor as predictor_mod
from memetrm.serving.predictor import Predictor

DIMS = {"image": 1280, "text": 384}


def counts(summary: serve_cli.BatchSummary) -> tuple[int, int, int]:
    return summary.scored, summary.errors, summary.already_done


def text_image(path: Path, text: str) -> Path:
    """A white meme-like image with big black text, so OCR has something to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (640, 200), "white")
    ImageDraw.Draw(img).text((20, 70), text, fill="black", font=ImageFont.load_default(size=48))
    img.save(path)
    return path


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return create_encoder("minilm-effnet")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(create_head("mlp", DIMS), tmp_path_factory.mktemp("m") / "mlp-multioff",
                           encoder="minilm-effnet", fields=["image", "text"], tokens=False,
                           threshold=0.42, dataset="multioff")


@pytest.fixture(scope="module")
def predictor(model_dir: Path, encoder: Encoder) -> Predictor:
    return Predictor(model_dir, encoder=encoder)


@pytest.fixture
def meme(tmp_path: Path) -> Path:
    return text_image(tmp_path / "meme.png", "STOP THE HATE")


def test_predict_with_text(predictor: Predictor, meme: Path) -> None:
    img = Image.open(meme).convert("RGB")
    a, b, c = predictor.predict([img, img, img], ["i love you", "i love you", "go away now"])
    assert 0 < a["prob"] < 1 and a["label"] == int(a["prob"] >= 0.42)
    assert a["prob"] == pytest.approx(b["prob"], abs=1e-5)  # batched rows are independent
    assert a["prob"] != pytest.approx(c["prob"], abs=1e-5)  # and the text matters
    assert a["ocr_text"] is None and a["trace"] is None
    assert a["model"].startswith("mlp-multioff@") and a["threshold"] == 0.42


def test_predict_without_text_reads_image(predictor: Predictor, meme: Path) -> None:
    [res] = predictor.predict([Image.open(meme).convert("RGB")])
    assert "stop" in res["ocr_text"].lower() and "hate" in res["ocr_text"].lower()
    [given] = predictor.predict([Image.open(meme).convert("RGB")], [res["ocr_text"]])
    assert given["prob"] == pytest.approx(res["prob"], abs=1e-5)


def test_caption_model_needs_caption(tmp_path: Path, encoder: Encoder, meme: Path) -> None:
    save_pretrained(create_head("mlp", {"text": 384, "caption": 384}), tmp_path / "hm",
                    encoder="minilm-effnet", fields=["text", "caption"], tokens=False,
                    threshold=0.5, dataset="hateful_memes")
    p = Predictor(tmp_path / "hm", encoder=encoder)
    img = Image.open(meme).convert("RGB")
    with pytest.raises(DataError, match="caption"):
        p.predict([img], ["some text"])
    [res] = p.predict([None], [{"text": "some text", "caption": "a man holding a sign"}])
    assert 0 < res["prob"] < 1


def test_token_head_and_trace_passthrough(tmp_path: Path, encoder: Encoder, meme: Path,
                                          trace_head: str) -> None:
    img = Image.open(meme).convert("RGB")
    save_pretrained(create_head("cross-attention", DIMS, DIMS, d_model=32, heads=2),
                    tmp_path / "xattn", encoder="minilm-effnet", fields=["image", "text"],
                    tokens=True, threshold=0.5)
    [res] = Predictor(tmp_path / "xattn", encoder=encoder).predict([img], ["hello"])
    assert 0 < res["prob"] < 1

    save_pretrained(create_head(trace_head, DIMS, steps=4), tmp_path / "trace",
                    encoder="minilm-effnet", fields=["image", "text"], tokens=False,
                    threshold=0.5)
    [res] = Predictor(tmp_path / "trace", encoder=encoder).predict([img], ["hello"])
    assert len(res["trace"]) == 4 and res["trace"][-1] == pytest.approx(res["prob"])


def _jsonl_inputs(root: Path) -> Path:
    """Five rows: good (text given), good (OCR), missing image, corrupt image, broken line."""
    text_image(root / "img" / "a.png", "HELLO FRIEND")
    text_image(root / "img" / "b.png", "GOOD MORNING")
    (root / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rows = [json.dumps({"id": "a", "img": "img/a.png", "text": "hello friend"}),
            json.dumps({"id": "b", "img": "img/b.png"}),
            json.dumps({"id": "gone", "img": "img/missing.png", "text": "x"}),
            json.dumps({"id": "bad", "img": "img/bad.png", "text": "x"}),
            "{this is not json"]
    (root / "in.jsonl").write_text("\n".join(rows) + "\n")
    return root / "in.jsonl"


def test_batch_records_errors_and_resumes(tmp_path: Path, predictor: Predictor,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = _jsonl_inputs(tmp_path), tmp_path / "out" / "results.jsonl"
    assert counts(serve_cli.predict_batch(predictor, src, out, batch_size=2, progress=False)) == (
        2, 3, 0)
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in first] == ["a", "b", "gone", "bad", "line 5"]
    assert "ocr_text" in first[1] and "morning" in first[1]["ocr_text"].lower()
    errors = {r["id"]: r["error"] for r in first if r["error"]}
    assert "not found" in errors["gone"] and "not a readable image" in errors["bad"]
    assert "line 5" in errors

    # simulate a kill mid-write: keep the first line plus half of the second ("b")
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:10])
    prepared: list[dict[str, str]] = []
    real_prepare = predictor.prepare
    monkeypatch.setattr(predictor, "prepare",
                        lambda image, texts: prepared.append(texts) or real_prepare(image, texts))
    assert counts(serve_cli.predict_batch(predictor, src, out, progress=False)) == (1, 3, 1)
    assert prepared == [{}]  # only the torn "b" (no text: OCR) was redone, not "a"
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in again] == ["a", "b", "gone", "bad", "line 5"]
    assert again[0] == first[0] and again[1]["prob"] == pytest.approx(first[1]["prob"])
    assert counts(serve_cli.predict_batch(predictor, src, out, progress=False)) == (0, 0, 5)


def test_batch_folder_input(tmp_path: Path, predictor: Predictor) -> None:
    for name in ("x.png", "sub/y.jpg"):
        text_image(tmp_path / "memes" / name, "NO WAY")
    (tmp_path / "memes" / "notes.txt").write_text("not an image")
    out = tmp_path / "r.jsonl"
    assert counts(serve_cli.predict_batch(predictor, tmp_path / "memes", out,
                                          progress=False)) == (2, 0, 0)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["sub/y.jpg", "x.png"]


def test_cli_predict_single_image(model_dir: Path, encoder: Encoder, meme: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor_mod, "create_encoder", lambda *a, **k: encoder)
    runner = CliRunner()
    r = runner.invoke(app, ["predict", "--model", str(model_dir), "--image", str(meme), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert "hate" in res["ocr_text"].lower() and res["image"] == str(meme)

    r = runner.invoke(app, ["predict", "--model", str(model_dir), "--image", str(meme),
                            "--text", "hello"])
    assert r.exit_code == 0 and "p(hateful)" in r.stdout and "OCR" not in r.stdout

    r = runner.invoke(app, ["predict", "--model", str(model_dir), "--image",
                            str(meme.with_name("nope.png"))])
    assert r.exit_code == 2 and "nope.png: no such file" in r.output


def test_cli_predict_from_texts_alone(tmp_path: Path, model_dir: Path, encoder: Encoder,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that reads no image (text + caption) scores a meme from its texts; a model that
    reads the image says so (exit 2) instead of guessing."""
    monkeypatch.setattr(predictor_mod, "create_encoder", lambda *a, **k: encoder)
    save_pretrained(create_head("mlp", {"text": 384, "caption": 384}), tmp_path / "hm",
                    encoder="minilm-effnet", fields=["text", "caption"], tokens=False,
                    threshold=0.5, dataset="hateful_memes")
    runner = CliRunner()
    args = ["predict", "--model", str(tmp_path / "hm"), "--text", "some text", "--json"]
    r = runner.invoke(app, [*args, "--caption", "a man holding a sign"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["image"] is None and 0 < res["prob"] < 1 and res["ocr_text"] is None
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "caption" in r.output
    r = runner.invoke(app, ["predict", "--model", str(model_dir), "--text", "hello"])
    assert r.exit_code == 2 and "reads the image" in r.output and "pass --image" in r.output
    r = runner.invoke(app, ["predict", "--model", str(model_dir), "--text", "hello",
                            "--input", str(tmp_path)])
    assert r.exit_code == 2 and "give one meme" in r.output
