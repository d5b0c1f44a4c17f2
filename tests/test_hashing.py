"""Perceptual hashes in front of the encoder: the feature memo (reposts reuse features), known-
meme hash lists (answered before any model runs, only for the same meme: picture and text),
their file format and CLI, the answer's source, and /metrics."""

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
from memetrm.serving.hashing import LIST_DISTANCE, PDQ_DISTANCE, ImageHash, normalise_text, pdq
from memetrm.serving.hashlist import MODEL_LIST, Entry, HashList
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
    assert memo.get_image("e", h[0]) == ({"pooled": 0}, 0)  # h[0] is now the most recent
    memo.put_image("e", h[2], {"pooled": 2})
    assert memo.get_image("e", h[1]) is None
    assert memo.get_image("e", h[0]) == ({"pooled": 0}, 0)
    assert memo.stats()["evicted"] == 1 and memo.stats()["image_entries"] == 2


def test_listed_meme_is_answered_from_the_list_before_ocr_and_encoder(model_dir: Path) -> None:
    listed = HashList.read(write_list(model_dir.parent / "known.csv", [(pdq(scene(1)).hex, 1, "case-7")]))
    p = counting_predictor(model_dir, hash_lists=[listed])
    out = p.predict([repost(scene(1)), scene(4)], [None, None])
    assert out[0]["hash_match"]["source_id"] == "case-7" and out[0]["label"] == 1
    assert out[0]["prob"] == 1.0 and 0 < out[0]["hash_match"]["distance"] <= LIST_DISTANCE
    assert out[0]["source"]["kind"] == "list" and out[0]["source"]["id"] == "case-7"
    assert out[1]["hash_match"] is None and out[1]["source"]["kind"] == "model"
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
        rows.append({"id": f"m{i}", "label": i % 2, "img": f"m{i}.png"}
                    | ({"text": f"Meme  {i}"} if i < 3 else {}))
    (tmp_path / "known.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["hashes", "add", "--model", str(model_dir), "--input",
                            str(tmp_path / "known.jsonl")])
    assert r.exit_code == 0, r.output
    assert "1 meme without text, matched by their picture alone: ['m3']" in r.output
    assert [e.text for e in HashList.read(model_dir / MODEL_LIST).entries] == ["meme 0", "meme 1", ""]
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
                            str(tmp_path / "shared.jpg"), "--text", "MEME 1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["hash_match"]["source_id"] == "m1" and out["label"] == 1
    assert out["source"]["kind"] == "list" and out["source"]["id"] == "m1"


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
    assert rows["k"]["source"]["kind"] == "list" and rows["n"]["source"]["kind"] == "model"


def own_list(model: Path, *entries: Entry) -> None:
    HashList(entries).write(model / MODEL_LIST)


def test_a_listed_picture_with_other_text_is_answered_by_the_model(model_dir: Path) -> None:
    """Hateful Memes' confounders: the same picture with other text is another meme. The model
    answers it, and says that the picture is on the list; the listed text (retyped, or with a
    typo) is answered by the list."""
    own_list(model_dir, Entry(pdq(scene(1)), 1, "case-7", normalise_text("Cats RULE the world")))
    p = counting_predictor(model_dir)
    other_text = "these words were never on the listed meme"
    alone = p.run([p.prepare(scene(1), other_text, lists=False)])[0]
    other, same, typo, read = p.predict([scene(1), scene(1), scene(1), repost(scene(1))],
                                        [other_text, "cats rule  the WORLD", "cats rule the wrld",
                                         None])
    assert other["hash_match"] is None and other["prob"] == pytest.approx(alone["prob"])
    assert other["source"]["kind"] == "model" and other["source"]["picture_on_list"] == {
        "label": 1, "source_id": "case-7", "distance": 0, "list": MODEL_LIST}
    assert other["source"]["words"] == (f"model {p.model_id}; picture on list hashes.csv at "
                                        "distance 0; text differs (entry case-7)")
    for listed in (same, typo):
        assert listed["hash_match"]["source_id"] == "case-7" and listed["prob"] == 1.0
        assert listed["source"]["kind"] == "list" and listed["source"]["distance"] == 0
    assert read["ocr_text"] == "ocr text" and read["source"]["picture_on_list"]["source_id"] == "case-7"
    assert OCRCounter.calls == 1  # the text of the meme sent without one, read once

    client = TestClient(create_app(p))
    buf = io.BytesIO()
    scene(1).save(buf, "PNG")
    files = {"image": ("m.png", buf.getvalue(), "image/png")}
    api = client.post("/v1/predict", files=files, data={"text": other_text}).json()
    assert api["hash_match"] is None and api["source"]["words"] == other["source"]["words"]
    api = client.post("/v1/predict", files=files, data={"text": "Cats rule the world"}).json()
    assert api["hash_match"]["source_id"] == "case-7" and api["source"]["kind"] == "list"
    assert api["source"]["words"] == ("known meme case-7 on list hashes.csv (picture at "
                                      "distance 0, text agrees)")


def test_lists_match_within_their_own_distance(tmp_path: Path, model_dir: Path) -> None:
    """A picture 20 bits away (a template with other captions measures 26-30) is not the listed
    meme at the list's default distance; ``--list-distance`` widens it."""
    bits = bytearray(pdq(scene(1)).bits)
    bits[0] ^= 0xFF
    bits[1] ^= 0xFF
    bits[2] ^= 0x0F
    own_list(model_dir, Entry(ImageHash(bytes(bits)), 1, "template"))
    assert counting_predictor(model_dir).predict([scene(1)], ["x"])[0]["source"]["kind"] == "model"
    scene(1).save(tmp_path / "m.png")
    r = CliRunner().invoke(cli, ["predict", "--model", str(model_dir), "--image",
                                 str(tmp_path / "m.png"), "--text", "x", "--list-distance",
                                 str(PDQ_DISTANCE), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["source"] | {"words": ""} == {
        "kind": "list", "list": MODEL_LIST, "id": "template", "distance": 20,
        "picture_on_list": None, "words": ""}


def test_a_meme_listed_twice_counts_once(tmp_path: Path, model_dir: Path) -> None:
    listed = Entry(pdq(scene(1)), 1, "case-7", "hi")
    own_list(model_dir, listed)
    HashList([listed, Entry(pdq(scene(4)), 0, "case-8")]).write(tmp_path / "shared.csv")
    p = counting_predictor(model_dir, hash_lists=[HashList.read(tmp_path / "shared.csv")])
    assert len(p.known) == 2
    assert "memetrm_hash_list_entries 2.0" in TestClient(create_app(p)).get("/metrics").text
    assert p.predict([scene(1)], ["hi"])[0]["hash_match"]["list"] == MODEL_LIST  # listed first


def test_repost_memo_names_itself_in_the_answer(model_dir: Path) -> None:
    p = counting_predictor(model_dir, memo=FeatureMemo(capacity=8))
    first = p.predict([scene(1)], ["cats"])[0]
    again = p.predict([repost(scene(1))], ["CATS"])[0]
    assert first["source"] == {"kind": "model", "list": None, "id": None, "distance": None,
                               "picture_on_list": None, "words": f"model {p.model_id}"}
    d = again["source"]["distance"]
    assert again["source"]["kind"] == "memo" and 0 < d <= PDQ_DISTANCE
    assert again["source"]["words"] == (f"model {p.model_id}; features kept by the repost memo "
                                        f"(picture at distance {d}, text equal once normalised)")


#: ids a line-by-line reader splits (str.splitlines breaks at \u2028 and \x1c too)
ODD_IDS = ["line\nbreak", "para\u2028sep", "file\x1csep", 'comma, "quoted"', "crlf\r\nid",
           "# not a comment", "  spaced  "]


def test_hash_list_round_trips_ids_with_separators_and_quotes(tmp_path: Path) -> None:
    entries = [Entry(ImageHash(bytes([i]) * 32), i % 2, sid, normalise_text(f"text {i}, \"{i}\""))
               for i, sid in enumerate(ODD_IDS)]
    HashList(entries).write(tmp_path / "l.csv")
    assert HashList.read(tmp_path / "l.csv").entries == entries


def test_hash_list_accepts_a_bom_and_the_three_column_format(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + f"pdq,label,source_id\n{'ab' * 32},1,x\n"
                                       .encode())
    assert HashList.read(tmp_path / "bom.csv").entries == [
        Entry(ImageHash(bytes([0xAB]) * 32), 1, "x", "")]


def test_a_pdq_hex_is_checked_by_its_bytes(tmp_path: Path) -> None:
    """64 characters that are not 32 bytes (``bytes.fromhex`` skips inner spaces) are refused,
    naming the line the record starts on (after a record spanning two lines)."""
    spaced = "ab" * 15 + "  " + "ab" * 16
    (tmp_path / "bad.csv").write_text(
        f'pdq,label,source_id\n{"ab" * 32},0,"two\nlines"\n{spaced},1,y\n')
    with pytest.raises(DataError, match=r"bad\.csv:4: .*32 bytes"):
        HashList.read(tmp_path / "bad.csv")


def test_hashes_export_to_a_folder_or_an_unwritable_path_exits_2(tmp_path: Path,
                                                                 model_dir: Path) -> None:
    own_list(model_dir, Entry(pdq(scene(1)), 1, "case-7"))
    (tmp_path / "file").write_text("not a folder")
    runner = CliRunner()
    for output, message in [(tmp_path, "is a folder"),
                            (tmp_path / "file" / "out.csv", "cannot write the hash list")]:
        r = runner.invoke(cli, ["hashes", "export", "--model", str(model_dir), "--output",
                                str(output)])
        assert r.exit_code == 2 and message in r.output, r.output


def test_memory_add_stores_a_listed_meme_as_the_model_reads_it(tmp_path: Path) -> None:
    """The list answers requests; what a memory stores is the model's features of the meme."""
    from memetrm.heads import from_pretrained
    from memetrm.serving.memory import add_to_memory

    from . import fakes  # noqa: F401  (registers test-fake)

    head = create_head("retrieval", {"image": 6, "text": 5})
    head.remember({"image": torch.randn(2, 6), "text": torch.randn(2, 5),
                   "label": torch.tensor([0.0, 1.0])}, ["a", "b"])
    model = save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["image", "text"],
                            tokens=False, threshold=0.5)
    own_list(model, Entry(pdq(scene(1)), 1, "case-7"))
    scene(1).save(tmp_path / "k.png")
    (tmp_path / "add.jsonl").write_text('{"id": "c", "img": "k.png", "text": "hi", "label": 1}\n')
    assert add_to_memory(model, tmp_path / "add.jsonl", device="cpu") == 3
    assert from_pretrained(model)[0].memory_ids == ["a", "b", "c"]


def test_predict_answers_a_listed_meme_without_loading_an_encoder(
        tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memetrm.serving import predictor as predictor_mod

    def no_encoder(*args, **kwargs):
        raise AssertionError("an encoder was loaded")

    monkeypatch.setattr(predictor_mod, "create_encoder", no_encoder)
    own_list(model_dir, Entry(pdq(scene(1)), 1, "case-7", "hello there"))
    scene(1).save(tmp_path / "k.png")
    r = CliRunner().invoke(cli, ["predict", "--model", str(model_dir), "--image",
                                 str(tmp_path / "k.png"), "--text", "Hello  there"])
    assert r.exit_code == 0, r.output
    assert ("answered by known meme case-7 on list hashes.csv (picture at distance 0, text "
            "agrees)") in " ".join(r.stdout.split())  # as the terminal wraps it


def test_a_model_that_reads_no_text_still_matches_the_listed_text(tmp_path: Path) -> None:
    """The API takes the meme text for the lists even when the model reads the image alone."""
    from . import fakes  # noqa: F401  (registers test-fake)

    model = save_pretrained(create_head("linear", {"image": 6}), tmp_path / "img",
                            encoder="test-fake", fields=["image"], tokens=False, threshold=0.5)
    own_list(model, Entry(pdq(scene(1)), 1, "case-7", "cats rule"))
    client = TestClient(create_app(counting_predictor(model)))
    buf = io.BytesIO()
    scene(1).save(buf, "PNG")
    files = {"image": ("m.png", buf.getvalue(), "image/png")}
    kinds = [client.post("/v1/predict", files=files, data=data).json()["source"]["kind"]
             for data in ({"text": "Cats rule"}, {"text": "dogs drool"}, {})]
    assert kinds == ["list", "model", "model"] and OCRCounter.calls == 1  # "ocr text" differs
