"""Hostile input and hostile clients against a real uvicorn server on loopback: a bad request
fails alone, degenerate images cost nothing, slow clients do not starve anyone."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from memetrm.encoders import EncoderOutput
from memetrm.serving.app import Limits, create_app
from memetrm.serving.protocol import protocol_with_header_timeout

from .test_serving import FakeEncoder, make_predictor, png_bytes

POISON = "POISON"


class PoisonEncoder(FakeEncoder):
    """Fails on one text, as a tokenizer or model might on one pathological input."""

    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        if any(POISON in t for t in texts):
            raise RuntimeError("encoder blew up on this text")
        time.sleep(self.delay)
        return super().encode_texts(texts, tokens)


@pytest.fixture
def serve(tmp_path: Path, live_server):
    """Start a server (header deadline, connection cap, pending cap); returns its URL."""

    def start(limits: Limits, delay: float = 0.0, header_timeout: float = 1.0,
              connections: int = 256) -> str:
        predictor = make_predictor(tmp_path)
        predictor.encoder = PoisonEncoder()
        predictor.encoder.delay = delay
        return live_server(create_app(predictor, limits), log_level="error",
                           limit_concurrency=connections,
                           http=protocol_with_header_timeout(header_timeout))

    return start


def post(url: str, text: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"image": ("m.png", png_bytes(), "image/png")},
                      data={"text": text}, timeout=timeout)


def test_a_poisoned_item_fails_alone_in_a_shared_batch(serve) -> None:
    # the encoder's delay makes requests pile up so they share batches
    url = serve(Limits(), delay=0.05)
    texts = [f"good meme {i}" for i in range(12)] + [f"{POISON} meme"]
    with ThreadPoolExecutor(13) as pool:
        for _ in range(3):
            codes = list(pool.map(lambda t: post(url, t).status_code, texts))
            assert codes[:12] == [200] * 12 and codes[12] == 500


def test_full_server_answers_503_at_once(serve) -> None:
    url = serve(Limits(max_pending=1), delay=1.0)
    with ThreadPoolExecutor(3) as pool:
        slow = pool.submit(post, url, "first")
        time.sleep(0.3)
        t0 = time.monotonic()
        busy = post(url, "second")
        waited = time.monotonic() - t0
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert waited < slow.result().elapsed.total_seconds()  # not queued behind the first
        assert slow.result().status_code == 200


def _slow_client(port: int, stop: threading.Event, closed: list[bool]) -> None:
    """Sends a request line, then one header byte every 200 ms until stopped or cut off."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                s.sendall(b"X")
                if s.recv(1) == b"":
                    closed.append(True)
                    return
            except TimeoutError:
                continue
            except OSError:
                closed.append(True)
                return


def test_slow_clients_do_not_starve_health_and_are_cut_off(serve) -> None:
    url = serve(Limits(), header_timeout=1.0, connections=64)
    port = int(url.rsplit(":", 1)[1])
    stop, closed = threading.Event(), []
    threads = [threading.Thread(target=_slow_client, args=(port, stop, closed), daemon=True)
               for _ in range(40)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        for _ in range(5):  # while they hold connections, probes still answer at once
            r = httpx.get(f"{url}/health", timeout=1.0)
            assert r.status_code == 200
        time.sleep(1.5)  # past the header deadline: the server has closed them
        assert len(closed) == len(threads)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield TestClient(create_app(make_predictor(tmp_path)))


def test_degenerate_aspect_ratio_is_refused_from_the_header(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"image": ("strip.png", png(400_000, 10), "image/png")},
                    data={"text": "x"})
    assert r.status_code == 400 and "aspect ratio" in r.json()["detail"]


def test_large_images_are_reduced_before_the_model(tmp_path: Path) -> None:
    predictor = make_predictor(tmp_path)
    seen: list[tuple[int, int]] = []
    original = predictor.prepare
    predictor.prepare = lambda image, texts: (seen.append(image.size), original(image, texts))[1]
    client = TestClient(create_app(predictor, Limits(reduce_to=512)))
    r = client.post("/v1/predict", files={"image": ("big.png", png(3000, 2000), "image/png")},
                    data={"text": "x"})
    assert r.status_code == 200, r.text
    assert max(seen[0]) <= 1024  # an integer box reduction, at most twice the target


@pytest.mark.parametrize("body, message", [
    ({"text": "\ud800"}, "lone surrogate"),
    ({"text": 7}, "must be a string"),
    ({"text": ["a"]}, "must be a string"),
])
def test_bad_text_is_422_before_batching(client: TestClient, body: dict, message: str) -> None:
    import base64
    import json

    payload = json.dumps({"image": base64.b64encode(png_bytes()).decode(), **body})
    r = client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 422 and message in r.json()["detail"]
    assert client.get("/health").status_code == 200


def test_non_finite_score_is_a_500_never_a_label(tmp_path: Path) -> None:
    predictor = make_predictor(tmp_path)
    client = TestClient(create_app(predictor))
    real = predictor.head.predict
    predictor.head.predict = lambda b: {"prob": torch.full_like(real(b)["prob"], float("nan"))}
    r = client.post("/v1/predict", files={"image": ("m.png", png_bytes(), "image/png")},
                    data={"text": "x"})
    assert r.status_code == 500 and "non-finite" in r.json()["detail"]


def test_security_headers_docs_and_favicon(client: TestClient) -> None:
    for path in ("/", "/health", "/v1/model"):
        h = client.get(path).headers
        assert "default-src 'self'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: off by default
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/favicon.ico").status_code == 204
