"""What queueing a meme for review costs a served request: the review database's write.

One model, two apps in one process: one routes every answer to a review queue (SQLite, WAL,
the meme's bytes stored), the other has no queue. Requests alternate between them, so both see
the same machine load; the p50 of the difference is what the write adds. The write itself
(``ReviewStore.route``) is timed alone too.

    python -m benchmarks.review_cost [--model DIR] [--requests 300]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.render.review_cost import DATA, render
from memetrm.utils import atomic_write_text


def meme(seed: int) -> bytes:
    """A 500 x 500 JPEG of shapes and a caption band (about the size of a real meme)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (500, 500), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(20):
        x, y, w, h = (int(v) for v in rng.integers(0, 400, 4))
        draw.rectangle((x, y, x + w // 3, y + h // 3), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw.text((20, 460), f"meme number {seed}", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder [default: a fresh MLP head on "
                                                    "minilm-effnet, as benchmarks.serve makes]")
    parser.add_argument("--requests", type=int, default=300, help="per app")
    parser.add_argument("--json", type=Path, default=DATA)
    args = parser.parse_args(argv)
    from fastapi.testclient import TestClient

    from benchmarks.serve import make_model
    from memetrm.serving.app import create_app
    from memetrm.serving.auth import Tokens
    from memetrm.serving.predictor import Predictor
    from memetrm.serving.review import ReviewStore

    with tempfile.TemporaryDirectory(prefix="memetrm-review-cost-") as tmp:
        model = args.model or make_model(Path(tmp) / "model")
        predictor = Predictor(model, device="cpu")
        store = ReviewStore(str(Path(tmp) / "review.db"), routes=lambda answer: True)
        queued = create_app(predictor, review=store, review_tokens=Tokens({"x" * 32: "bench"}))
        plain = create_app(predictor)
        memes = [meme(i) for i in range(args.requests)]
        times: dict[str, list[float]] = {"plain": [], "queued": []}
        with TestClient(plain) as a, TestClient(queued) as b:
            clients = {"plain": a, "queued": b}
            for i in range(5):  # warm up both
                for c in clients.values():
                    c.post("/v1/predict", files={"image": ("m.jpg", memes[i], "image/jpeg")},
                           data={"text": "warm up"})
            for i, data in enumerate(memes):
                order = ("plain", "queued") if i % 2 else ("queued", "plain")
                for name in order:
                    start = time.perf_counter()
                    r = clients[name].post("/v1/predict", data={"text": f"meme number {i}"},
                                           files={"image": ("m.jpg", data, "image/jpeg")})
                    times[name].append(time.perf_counter() - start)
                    assert r.status_code == 200, r.text
        answer = r.json()
        writes = []
        for data in memes:
            start = time.perf_counter()
            store.route(answer, data, {"text": "meme"})
            writes.append(time.perf_counter() - start)
        queue_len = len(store.queue(limit=10**6))
        store.close()
    ms = {k: 1000 * np.asarray(v) for k, v in times.items()}
    write_ms = 1000 * np.asarray(writes)
    result = {
        "command": "python -m benchmarks.review_cost " + " ".join(argv or sys.argv[1:]),
        "model": str(args.model or "fresh mlp head on minilm-effnet"),
        "requests": args.requests, "queued": queue_len,
        "image_kb": round(float(np.mean([len(m) for m in memes])) / 1024, 1),
        "p50_ms_plain": round(float(np.median(ms["plain"])), 2),
        "p50_ms_queued": round(float(np.median(ms["queued"])), 2),
        "added_p50_ms": round(float(np.median(ms["queued"] - ms["plain"])), 3),
        "write_p50_ms": round(float(np.median(write_ms)), 3),
        "write_p95_ms": round(float(np.percentile(write_ms, 95)), 3),
        "target_ms": 2.0,
        "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
    }
    print(json.dumps(result, indent=2))
    atomic_write_text(args.json, json.dumps(result, indent=2))
    if args.json == DATA:
        render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
