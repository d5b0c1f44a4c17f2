"""Perceptual hashes in front of the encoder: the feature memo (reposts reuse features), known-
meme hash lists (answered before any model runs), their file format and CLI, and /metrics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

from memetrm.cli.main import app as cli
from memetrm.errors import DataError
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.feature_memo import FeatureMemo
from memetrm.serving.hashing import PDQ_DISTANCE, ImageHash, normalise_text, pdq
from memetrm.serving.hashlist import HashList
from memetrm.serving.predictor import Predictor

from .fakes import FakeEncoder


def scene(seed: int, size: int = 320) -> Image.Image:
    """Coloured shapes on a plain ground: a picture with PDQ quality >= 50, unlike noise."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        draw.ellipse((int(x), int(y), int(x + w), int(y + h)),
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def repost(img: Image.Image) -> Image.Image:
    """Resized to 70 % and re-encoded as JPEG quality 50: a re-share PDQ keeps close."""
    img = img.resize((int(img.width * 0.7), int(img.height * 0.7)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=50)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


class OCRCounter:
    calls = 0

    def load(self) -> OCRCounter:
        return self

    def __call__(self, image: Image.Image) -> str:
        OCRCounter.calls += 1
        return "ocr text"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    from . import fakes  # noqa: F401  (registers test-fake)

    torch.manual_seed(0)
    head = create_head("linear", {"image": 6, "text": 5})
    return save_pretrained(head, tmp_path / "model", encoder="test-fake", fields=["image", "text"],
                           tokens=False, threshold=0.5)


def counting_predictor(model_dir: Path, **kwargs) -> Predictor:
    FakeEncoder.calls.update(image=0, text=0)
    OCRCounter.calls = 0
    return Predictor(model_dir, encoder=FakeEncoder(), ocr=OCRCounter(), device="cpu", **kwargs)


def test_pdq_keeps_reposts_within_the_distance_and_others_outside() -> None:
    a, b = scene(1), scene(4)
    assert pdq(a).reliable
    assert pdq(a).bits == pdq(a.copy()).bits
    near = bin(int(pdq(a).hex, 16) ^ int(pdq(repost(a)).hex, 16)).count("1")
    far = bin(int(pdq(a).hex, 16) ^ int(pdq(b).hex, 16)).count("1")
    assert near <= PDQ_DISTANCE < far
    framed = ImageOps.expand(a, 40, fill=(255, 255, 255))  # PDQ hashes the whole frame
    assert bin(int(pdq(a).hex, 16) ^ int(pdq(framed).hex, 16)).count("1") > PDQ_DISTANCE
    assert ImageHash.from_hex(pdq(a).hex).bits == pdq(a).bits
    assert not pdq(Image.new("RGB", (64, 64), (9, 9, 9))).reliable  # flat: no detail to hash


def test_repost_reuses_features_and_texts_match_once_normalised(model_dir: Path) -> None:
    p = counting_predictor(model_dir, memo=FeatureMemo(capacity=8))
    first = p.predict([scene(1)], ["Cats  RULE"])[0]
    again = p.predict([repost(scene(1))], ["cats rule\n"])[0]
    assert FakeEncoder.calls == {"image": 1, "text": 1}
    assert again["prob"] == pytest.approx(first["prob"])
    p.predict([scene(4)], ["dogs"])
    assert FakeEncoder.calls == {"image": 2, "text": 2}
    stats = p.memo.stats()
    assert stats["image_near"] + stats["image_exact"] == 1 and stats["text_hit"] == 1
    assert stats["image_entries"] == 2 and stats["text_entries"] == 2
    assert normalise_text("Ｃats\tRULE ") == "cats rule"


def test_memo_in_a_mixed_batch_scores_like_without_it(model_dir: Path) -> None:
    images, texts = [scene(1), scene(3), repost(scene(1))], ["a", "b", "a"]
    plain = counting_predictor(model_dir).predict(images, texts)
    memo = counting_predictor(model_dir, memo=FeatureMemo(capacity=8))
    memo.predict(images[:1], texts[:1])
    mixed = memo.predict(images, texts)
    assert [r["prob"] for r in mixed[:2]] == pytest.approx([r["prob"] for r in plain[:2]])


def test_memo_evicts_the_least_recently_used_image() -> None:
    memo = FeatureMemo(capacity=2, distance=0)
    h = [ImageHash(bytes([i]) * 32) for i in (1, 2, 3)]
    memo.put_image("e", h[0], {"pooled": 0})
    memo.put_image("e", h[1], {"pooled": 1})
    assert memo.get_image("e", h[0]) == {"pooled": 0}  # h[0] is now the most recent
    memo.put_image("e", h[2], {"pooled": 2})
    assert memo.get_image("e", h[1]) is None
    assert memo.get_image("e", h[0]) == {"pooled": 0}
    assert memo.stats()["evicted"] == 1 and memo.stats()["image_entries"] == 2


def test_listed_meme_is_answered_from_the_list_before_ocr_and_encoder(model_dir: Path) -> None:
    listed = HashList.read(write_list(model_dir.parent / "known.csv", [(pdq(scene(1)).hex, 1, "case-7")]))
    p = counting_predictor(model_dir, hash_lists=[listed])
    out = p.predict([repost(scene(1)), scene(4)], [None, None])
    assert out[0]["hash_match"]["source_id"] == "case-7" and out[0]["label"] == 1
    assert out[0]["prob"] == 1.0 and 0 < out[0]["hash_match"]["distance"] <= PDQ_DISTANCE
    assert out[1]["hash_match"] is None
    assert OCRCounter.calls == 1 and FakeEncoder.calls["image"] == 1  # the unlisted meme only


def write_list(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path.write_text("# known memes\npdq,label,source_id\n"
                    + "".join(f"{h},{label},{sid}\n" for h, label, sid in rows))
    return path


def test_hash_list_rejects_a_bad_row_by_line(tmp_path: Path) -> None:
    good = "ab" * 32
    with pytest.raises(DataError, match=r"bad\.csv:4: .*64 hex digits"):
        HashList.read(write_list(tmp_path / "bad.csv", [(good, 0, "x"), ("abc", 1, "y")]))
    with pytest.raises(DataError, match=r"bad\.csv:3: label must be 0 or 1"):
        HashList.read(write_list(tmp_path / "bad.csv", [(good, 2, "x")]))
    (tmp_path / "nohead.csv").write_text(f"{good},1,x\n")
    with pytest.raises(DataError, match="header line pdq,label,source_id"):
        HashList.read(tmp_path / "nohead.csv")


def test_cli_hashes_add_export_import_and_predict(tmp_path: Path, model_dir: Path) -> None:
    rows = []
    for i in (0, 1, 3):
        scene(i).save(tmp_path / f"m{i}.png")
        rows.append({"id": f"m{i}", "label": i % 2, "img": f"m{i}.png"})
    (tmp_path / "known.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["hashes", "add", "--model", str(model_dir), "--input",
                            str(tmp_path / "known.jsonl")])
    assert r.exit_code == 0, r.output
    again = runner.invoke(cli, ["hashes", "add", "--model", str(model_dir), "--input",
                                str(tmp_path / "known.jsonl")])
    assert again.exit_code == 2 and "already on" in again.output
    r = runner.invoke(cli, ["hashes", "export", "--model", str(model_dir), "--output",
                            str(tmp_path / "out.csv")])
    assert r.exit_code == 0 and len(HashList.read(tmp_path / "out.csv")) == 3
    other = save_pretrained(create_head("linear", {"image": 6, "text": 5}), tmp_path / "other",
                            encoder="test-fake", fields=["image", "text"], tokens=False,
                            threshold=0.5)
    r = runner.invoke(cli, ["hashes", "import", "--model", str(other), "--input",
                            str(tmp_path / "out.csv")])
    assert r.exit_code == 0, r.output
    repost(scene(1)).save(tmp_path / "shared.jpg")
    r = runner.invoke(cli, ["predict", "--model", str(other), "--image",
                            str(tmp_path / "shared.jpg"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["hash_match"]["source_id"] == "m1" and out["label"] == 1


def test_metrics_count_requests_batches_and_memo_hits(model_dir: Path) -> None:
    p = counting_predictor(model_dir, memo=FeatureMemo(capacity=8))
    client = TestClient(create_app(p))
    buf = io.BytesIO()
    scene(1).save(buf, "PNG")
    for _ in range(2):
        r = client.post("/v1/predict", files={"image": ("m.png", buf.getvalue(), "image/png")},
                        data={"text": "hello"})
        assert r.status_code == 200 and r.json()["hash_match"] is None
    client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert 'memetrm_requests_total{path="/v1/predict",status="200"} 2.0' in text
    assert 'memetrm_requests_total{path="/v1/predict",status="422"} 1.0' in text
    assert 'memetrm_feature_memo_lookups_total{kind="image",result="exact"} 1.0' in text
    assert 'memetrm_feature_memo_lookups_total{kind="text",result="hit"} 1.0' in text
    assert "memetrm_batch_size_count 2.0" in text and "memetrm_queue_depth 0.0" in text
    assert 'memetrm_request_seconds_count{path="/v1/predict"} 3.0' in text


def test_memory_add_keeps_the_known_meme_list(tmp_path: Path) -> None:
    from memetrm.serving.memory import add_to_memory

    from . import fakes  # noqa: F401  (registers test-fake)

    head = create_head("retrieval", {"text": 5})
    head.remember({"text": torch.randn(2, 5), "label": torch.tensor([0.0, 1.0])}, ["a", "b"])
    model = save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["text"],
                            threshold=0.5)
    write_list(model / "hashes.csv", [(pdq(scene(1)).hex, 1, "case-7")])
    (tmp_path / "add.jsonl").write_text('{"id": "c", "text": "hi", "label": 1}\n')
    add_to_memory(model, tmp_path / "add.jsonl", device="cpu")
    assert [e.source_id for e in HashList.read(model / "hashes.csv").entries] == ["case-7"]


def test_batch_scoring_records_which_memes_came_from_the_list(tmp_path: Path,
                                                              model_dir: Path) -> None:
    from memetrm.serving.batch import predict_batch

    scene(1).save(tmp_path / "known.png")
    scene(4).save(tmp_path / "new.png")
    (tmp_path / "in.jsonl").write_text(
        '{"id": "k", "img": "known.png", "text": "a"}\n{"id": "n", "img": "new.png", "text": "b"}\n')
    listed = HashList.read(write_list(tmp_path / "list.csv", [(pdq(scene(1)).hex, 0, "case-1")]))
    predict_batch(counting_predictor(model_dir, hash_lists=[listed]), tmp_path / "in.jsonl",
                  tmp_path / "out.jsonl", 4)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert rows["k"]["hash_match"]["source_id"] == "case-1" and rows["k"]["label"] == 0
    assert rows["n"]["hash_match"] is None and FakeEncoder.calls["image"] == 1
