"""The serving path past its old limit: JPEGs decoded at the towers' size, PDQ kept close to
full-size list entries, each tower batched in its own thread with texts bucketed by length
(same probabilities), ONNX Runtime threads from the cores, and the limit benchmark."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from memetrm.data.images import open_image
from memetrm.encoders import EncoderOutput, create_encoder
from memetrm.encoders import runtimes as rt
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.feature_memo import FeatureMemo
from memetrm.serving.hashing import LIST_DISTANCE, distances, pdq
from memetrm.serving.hashlist import Entry, HashList
from memetrm.serving.predictor import Predictor, length_buckets

from .test_serving import FakeEncoder, FakeOCR

ROOT = Path(__file__).resolve().parents[1]


def scene(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A picture with shapes and gradients at every scale, as a meme's has."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    base = np.stack([x, y, (x + y) / 2], -1) * rng.uniform(80, 200, 3)
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
        draw.ellipse((x0, y0, x0 + rng.integers(30, w // 2), y0 + rng.integers(30, h // 2)),
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --- decoding at the towers' size -------------------------------------------------------------


def test_draft_decode_keeps_both_sides_and_leaves_small_jpegs_alone() -> None:
    big = jpeg(scene(0, (1000, 600)))
    small = open_image(big, draft_to=128)
    assert small.size == (250, 150)  # 1/4: the largest scale keeping both sides >= 128
    assert open_image(big, draft_to=256).size == (500, 300)
    same = jpeg(scene(1, (400, 300)))  # shorter side below twice the side: nothing to reduce
    assert np.array_equal(np.asarray(open_image(same, draft_to=256)), np.asarray(open_image(same)))


def test_pdq_of_a_reduced_decode_is_within_list_distance_of_the_full_one() -> None:
    for seed in range(8):
        data = jpeg(scene(seed, (1200, 900)))
        full, reduced = open_image(data), open_image(data, draft_to=256)
        assert reduced.size == (600, 450)
        bits = distances(pdq(full), np.frombuffer(pdq(reduced).bits, np.uint8)[None])[0]
        assert bits <= LIST_DISTANCE, seed


class SizedEncoder(FakeEncoder):
    """The fake towers, resizing to a 64 px side first and recording what they are given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []
        self.threads: set[str] = set()

    def image_side(self) -> int:
        return 64

    def image_transform(self):
        parent = super().image_transform()
        return lambda img: (self.seen.append(img.size), parent(img))[1]

    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        self.threads.add(threading.current_thread().name.rsplit("_", 1)[0])
        return super().encode_images(pixels, tokens)

    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        self.threads.add(threading.current_thread().name.rsplit("_", 1)[0])
        return super().encode_texts(texts, tokens)


def sized_predictor(tmp_path: Path, **kw) -> tuple[Predictor, SizedEncoder]:
    torch.manual_seed(0)
    save_pretrained(create_head("mlp", {"image": 3, "text": 2}, hidden=8), tmp_path / "m",
                    encoder="fake", fields=["image", "text"], tokens=False, threshold=0.5,
                    dataset="multioff")
    enc = SizedEncoder()
    return Predictor(tmp_path / "m", encoder=enc, ocr=FakeOCR(), **kw), enc


def post(client: TestClient, data: bytes, text: str | None = "a meme") -> dict:
    r = client.post("/v1/predict", files={"image": ("m.jpg", data, "image/jpeg")},
                    data={} if text is None else {"text": text})
    assert r.status_code == 200, r.text
    return r.json()


def test_server_decodes_jpegs_at_the_towers_size_unless_full_size_is_needed(
        tmp_path: Path) -> None:
    data = jpeg(scene(2, (640, 480)))
    predictor, enc = sized_predictor(tmp_path)
    with TestClient(create_app(predictor)) as c:
        post(c, data)
        post(c, data, text=None)  # OCR reads the picture: the full one
    assert enc.seen == [(320, 240), (640, 480)]  # 1/2: both sides still >= twice 64
    assert predictor.draft_side(ocr=False) == 128 and predictor.draft_side(ocr=True) is None


def test_hashing_decodes_at_pdq_size_and_full_size_for_lists(tmp_path: Path) -> None:
    memo, _ = sized_predictor(tmp_path / "memo", memo=FeatureMemo(16))
    assert memo.draft_side(ocr=False) == 512  # twice PDQ's square, not the towers' 64
    plain, _ = sized_predictor(tmp_path / "plain")
    assert plain.prepare(scene(3), "a meme").image_hash is None  # nothing to hash for
    assert memo.prepare(scene(3), "a meme").image_hash is not None
    listed = HashList([Entry(pdq(scene(3)), 1, "known-1")], "known")
    lists, enc = sized_predictor(tmp_path / "list", hash_lists=[listed])
    assert lists.draft_side(ocr=False) is None  # list entries are full-size hashes
    with TestClient(create_app(lists)) as c:
        post(c, jpeg(scene(4, (640, 480))))
    assert enc.seen == [(640, 480)]


# --- per-tower batching and length buckets ----------------------------------------------------


def test_length_buckets_group_similar_lengths() -> None:
    texts = ["a" * 200, "b", "c" * 10, "d" * 190, "e" * 12, "f" * 400]
    assert length_buckets(texts) == [[1, 2, 4], [3, 0], [5]]
    assert sorted(i for b in length_buckets(texts) for i in b) == list(range(6))


def test_each_tower_batches_in_its_own_thread(tmp_path: Path) -> None:
    predictor, enc = sized_predictor(tmp_path)
    with TestClient(create_app(predictor)) as c, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: post(c, jpeg(scene(i, (96, 96))), f"meme {i}"), range(4)))
    assert enc.threads == {"memetrm-image", "memetrm-text"}


@pytest.mark.slow
def test_towers_and_buckets_give_the_probabilities_of_one_padded_batch(tmp_path: Path) -> None:
    encoder = create_encoder("minilm-effnet")
    torch.manual_seed(0)
    save_pretrained(create_head("mlp", {"image": 1280, "text": 384}), tmp_path / "mo",
                    encoder="minilm-effnet", fields=["image", "text"], tokens=False,
                    threshold=0.5, dataset="multioff")
    predictor = Predictor(tmp_path / "mo", encoder=encoder)
    texts = ["no", "when the meme is short", "a much longer meme text " * 6,
             "the longest meme text of all, which pads everyone else in one batch " * 4,
             "medium length meme text here", "ok"]
    images = [scene(i, (300, 260)) for i in range(len(texts))]
    with torch.inference_mode():  # the old path: one batch, every text padded to the longest
        pixels = torch.stack([encoder.image_transform()(i) for i in images])
        feats = {"image": encoder.encode_images(pixels).pooled,
                 "text": encoder.encode_texts(texts).pooled}
        before = predictor.head.predict(feats)["prob"].tolist()
    calls = []
    real = encoder.encode_texts
    encoder.encode_texts = lambda ts, **k: (calls.append(len(ts)), real(ts, **k))[1]
    now = [r["prob"] for r in predictor.predict(images, texts)]
    assert len(calls) > 1 and sum(calls) == len(texts)  # bucketed
    data = [jpeg(i, 95) for i in images]
    decoded = [r["prob"] for r in predictor.predict([open_image(d) for d in data], texts)]
    with TestClient(create_app(predictor)) as c, ThreadPoolExecutor(len(texts)) as pool:
        served = list(pool.map(lambda i: post(c, data[i], texts[i])["prob"], range(len(texts))))
    assert now == pytest.approx(before, abs=1e-6)
    assert served == pytest.approx(decoded, abs=1e-6)  # (shorter side < 512: no reduction)


# --- ONNX Runtime threads ---------------------------------------------------------------------


def test_onnx_sessions_take_their_threads_from_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert rt.session_threads() == 1  # a container's one core, not the machine's
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
        assert rt.session_threads() == 2  # torch told to use fewer
    finally:
        torch.set_num_threads(threads)


# --- the benchmark ----------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_limit_quick_writes_its_table(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "serve_limit.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
           "MEMETRM_DATA": str(shared_data)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.serve_limit", "--quick", "--json",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert {"stages", "served", "draft", "load_before", "load_after", "ratio_fresh_8",
            "speedup_vs_torch_8", "provenance"} <= set(r)
    assert {(x["runtime"], x["traffic"], x["clients"]) for x in r["served"]} == {
        (rt_, t, n) for rt_ in ("torch", "onnx-int8") for t in ("fresh", "half reposts", "reposts")
        for n in (1, 8, 32)}
    assert all(x["errors"] == 0 for x in r["served"])
    # a 1 s quick run may end before 32 clients' first answers: one client always gets some
    assert all(x["requests"] > 0 for x in r["served"] if x["clients"] == 1)
    assert {x["stage"] for x in r["stages"]["rows"]} >= {"PDQ", "image transform", "text tower",
                                                         "image tower"}
    assert r["ratio_fresh_8"] > 0 and r["speedup_vs_torch_8"] > 0 and r["reposts_vs_fresh_8"] > 0
