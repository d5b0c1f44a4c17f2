"""Shared limits of a live server on loopback: OCR and large images cannot starve it, hostile
JSON is a 400, query strings stay out of the log, ``/health`` answers at the connection limit."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from memetrm.heads import create_head, save_pretrained
from memetrm.serving import app as app_module
from memetrm.serving.app import Limits, create_app
from memetrm.serving.protocol import protocol_with_header_timeout

from .test_serving import FakeOCR, make_predictor, png_bytes


class SlowOCR(FakeOCR):
    """Stands in for RapidOCR: each call takes a while; records how many ran at once and how
    many ran in all."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.active, self.peak, self.calls = seconds, 0, 0, 0
        self._count = threading.Lock()

    def __call__(self, image: Image.Image) -> str:
        with self._count:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.seconds)
            return super().__call__(image)
        finally:
            with self._count:
                self.active -= 1


#: one client for all test requests: a client per request costs the test process (which also
#: runs the server) more than the server's own work
CLIENT = httpx.Client(limits=httpx.Limits(max_connections=100), timeout=30)


def probe_health(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(timeout=5) as probe:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                ok = probe.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.monotonic() - t0 if ok else float("inf"))
            time.sleep(0.05)


def under_attack(url: str, attack, workers: int) -> tuple[list, list[float]]:
    """Runs ``attack`` ``workers`` times at once while ``/health`` is probed; returns the
    attack results and every probe's latency."""
    stop, latencies = threading.Event(), []
    CLIENT.get(f"{url}/health")  # connections and TLS-free setup paid before the clock starts
    prober = threading.Thread(target=probe_health, args=(url, stop, latencies))
    prober.start()
    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda _: attack(), range(workers)))
    finally:
        stop.set()
        prober.join(10)
    return results, latencies


def json_post(url: str, body: bytes | str, timeout: float = 30) -> httpx.Response:
    return CLIENT.post(f"{url}/v1/predict", content=body, timeout=timeout,
                      headers={"content-type": "application/json"})


def test_ocr_flood_is_bounded_and_skipped_once_timed_out(tmp_path: Path, live_server) -> None:
    predictor = make_predictor(tmp_path)
    ocr = predictor.ocr = SlowOCR(0.3)
    url = live_server(create_app(predictor, Limits(timeout_s=1.5, ocr_workers=2)),
                      log_level="error")
    body = json.dumps({"image": base64.b64encode(png_bytes()).decode()})  # no text: OCR
    codes, health = under_attack(url, lambda: json_post(url, body).status_code, 48)
    time.sleep(0.5)
    assert set(codes) <= {200, 504} and 504 in codes and 200 in codes
    assert ocr.peak <= 2 and ocr.active == 0
    assert ocr.calls <= codes.count(200) + 4  # OCR only for requests still in time
    assert max(health) < 1.0


def test_large_images_share_a_pixel_budget(tmp_path: Path, live_server, monkeypatch) -> None:
    decoding, peak = [0], [0]
    real = app_module.open_image
    lock = threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            decoding[0] += 1
            peak[0] = max(peak[0], decoding[0])
        try:
            time.sleep(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                decoding[0] -= 1

    monkeypatch.setattr(app_module, "open_image", counted)
    url = live_server(create_app(make_predictor(tmp_path), Limits(pixel_budget=10_000_000)),
                      log_level="error")
    buf = io.BytesIO()
    Image.new("L", (3000, 3000), 255).save(buf, "PNG")  # 9 MP: one fits the budget at a time
    big = buf.getvalue()

    def send() -> int:
        return CLIENT.post(f"{url}/v1/predict", files={"image": ("b.png", big, "image/png")},
                          data={"text": "x"}, timeout=60).status_code

    codes, health = under_attack(url, send, 6)
    assert codes == [200] * 6 and peak[0] == 1
    assert max(health) < 1.0


@pytest.mark.parametrize("body", [
    '{"image": "x", "text": ' + "[" * 1000 + "]" * 1000 + "}",
    '{"image": "x", "text": ' + "9" * 4500 + "}",
    b'{"image": "\xff\xfe"}',
])
def test_hostile_json_is_400_never_500(tmp_path: Path, live_server, body) -> None:
    url = live_server(create_app(make_predictor(tmp_path)), log_level="error")
    r = json_post(url, body)
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]


def test_big_json_bodies_are_refused_without_blocking_health(tmp_path: Path,
                                                            live_server) -> None:
    url = live_server(create_app(make_predictor(tmp_path), Limits(timeout_s=30)),
                      log_level="error")
    image = base64.b64encode(png_bytes()).decode()
    body = json.dumps({"image": image, "text": "x", **{f"k{i}": i for i in range(400_000)}})
    codes, health = under_attack(url, lambda: json_post(url, body).status_code, 6)
    assert codes == [422] * 6
    assert max(health) < 1.0


def test_query_strings_are_not_logged(tmp_path: Path, live_server) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    url = live_server(create_app(make_predictor(tmp_path)), log_level="info")
    handler = Keep()
    logging.getLogger("uvicorn.access").addHandler(handler)
    try:
        assert httpx.get(f"{url}/health?api_key=SECRET123").status_code == 200
        time.sleep(0.2)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
    assert any("/health" in m for m in seen) and not any("SECRET123" in m for m in seen)


def test_health_answers_while_connections_are_at_the_limit(tmp_path: Path, live_server) -> None:
    url = live_server(create_app(make_predictor(tmp_path)), log_level="error",
                      limit_concurrency=8, http=protocol_with_header_timeout(30))
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        time.sleep(0.2)
        assert [httpx.get(f"{url}/health", timeout=2).status_code for _ in range(5)] == [200] * 5
        assert httpx.get(f"{url}/v1/model", timeout=2).status_code == 503  # the limit holds
    finally:
        for s in idle:
            s.close()


def test_a_rewritten_model_folder_is_served_without_restart(tmp_path: Path, live_server) -> None:
    url = live_server(create_app(make_predictor(tmp_path)), log_level="error")
    before = CLIENT.get(f"{url}/health").json()["model"]
    torch.manual_seed(1)
    save_pretrained(create_head("mlp", {"image": 3, "text": 2}, hidden=8), tmp_path / "fake-model",
                    encoder="fake", fields=["image", "text"], tokens=False, threshold=0.42)
    deadline = time.monotonic() + 10
    while (now := CLIENT.get(f"{url}/health").json()["model"]) == before:
        assert time.monotonic() < deadline, "the new model was not picked up"
        time.sleep(0.2)
    r = CLIENT.post(f"{url}/v1/predict", files={"image": ("m.png", png_bytes(), "image/png")},
                    data={"text": "x"})
    assert r.status_code == 200 and r.json()["model"] == now


@pytest.mark.parametrize("mode, fmt", [("P", "GIF"), ("1", "PNG"), ("I;16", "PNG")])
def test_large_images_of_every_mode_are_scored(tmp_path: Path, live_server, mode: str,
                                               fmt: str) -> None:
    url = live_server(create_app(make_predictor(tmp_path)), log_level="error")
    buf = io.BytesIO()
    Image.new(mode, (4200, 300)).save(buf, fmt)
    r = CLIENT.post(f"{url}/v1/predict", files={"image": (f"big.{fmt.lower()}", buf.getvalue())},
                    data={"text": "x"})
    assert r.status_code == 200, r.text
