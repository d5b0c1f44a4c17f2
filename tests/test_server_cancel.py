"""Work stops when its client is gone, on a live server on loopback: a client that hangs up
while its prediction waits (for OCR, for the model) costs no more work, a trickled body gets
408 at its deadline, and ``serve`` on a busy port fails before loading the model."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typer.testing import CliRunner

from memetrm.cli import serve as serve_cli
from memetrm.cli.main import app as cli
from memetrm.serving.app import Limits, MicroBatcher, create_app

from .test_server_limits import CLIENT, SlowOCR, json_post
from .test_serving import make_predictor, png_bytes

HANG_UPS = 6


def head(length: int) -> bytes:
    """The request line and headers of a JSON prediction of ``length`` bytes."""
    return (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def hang_up(url: str, body: str, after: float) -> None:
    """``HANG_UPS`` clients send a whole prediction, wait ``after`` seconds without reading the
    answer, and close their connections."""
    port = int(url.rsplit(":", 1)[1])
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(HANG_UPS)]
    for s in conns:
        s.sendall(head(len(body)) + body.encode())
    time.sleep(after)
    for s in conns:
        s.close()


def metric(url: str, sample: str) -> float:
    """The value of one sample (a name and its labels) in ``/metrics``; 0 if absent."""
    text = CLIENT.get(f"{url}/metrics").text
    return next((float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                 if ln.startswith(f"{sample} ")), 0.0)


def cancelled(url: str) -> float:
    return metric(url, "memetrm_cancelled_predictions_total")


def answered(url: str, status: int) -> float:
    return metric(url, f'memetrm_requests_total{{path="/v1/predict",status="{status}"}}')


def test_clients_gone_while_queued_for_ocr_get_no_ocr(tmp_path: Path, live_server) -> None:
    predictor = make_predictor(tmp_path)
    ocr = predictor.ocr = SlowOCR(1.0)
    url = live_server(create_app(predictor, Limits(ocr_workers=1)), log_level="error")
    body = json.dumps({"image": base64.b64encode(png_bytes()).decode()})  # no text: OCR
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(json_post, url, body)  # holds the one OCR slot for 1 s
        wait_until(lambda: ocr.active == 1)
        hang_up(url, body, after=0.3)  # they wait for the slot, then leave
        assert first.result().status_code == 200
    time.sleep(1.5)  # long enough for one more OCR call, were any left queued
    assert ocr.calls == 1 and ocr.active == 0
    assert cancelled(url) == answered(url, 499) == HANG_UPS


def test_clients_gone_while_queued_for_the_model_are_not_scored(tmp_path: Path,
                                                                live_server) -> None:
    predictor = make_predictor(tmp_path, delay=1.0)
    scoring, encode = threading.Event(), predictor.encoder.encode_images
    predictor.encoder.encode_images = lambda *a, **k: (scoring.set(), encode(*a, **k))[1]
    url = live_server(create_app(predictor), log_level="error")
    body = json.dumps({"image": base64.b64encode(png_bytes()).decode(), "text": "x"})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(json_post, url, body)  # its batch holds the model for 1 s
        wait_until(scoring.is_set)
        hang_up(url, body, after=0.3)  # they wait in the batch queue, then leave
        assert first.result().status_code == 200
    time.sleep(1.5)  # long enough for one more batch, were any items left queued
    assert sum(size * n for size, n in predictor.batch_sizes.items()) == 1
    assert cancelled(url) == HANG_UPS


class GatedScorer:
    """Stands in for the predictor: the first batch waits for ``gate``; records batch sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.entered, self.gate = threading.Event(), threading.Event()

    def run_each(self, items: list) -> list:
        self.entered.set()
        self.gate.wait(10)
        self.sizes.append(len(items))
        return list(items)


def test_items_gone_take_no_room_in_the_next_batch() -> None:
    scorer = GatedScorer()

    async def scenario() -> None:
        batcher = MicroBatcher(scorer.run_each, max_batch=16)
        first = asyncio.ensure_future(batcher.submit("first"))
        await asyncio.to_thread(scorer.entered.wait, 10)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(18)]
        await asyncio.sleep(0.05)
        for task in queued[:15]:  # their clients left: 15 of the 18 queued
            task.cancel()
        scorer.gate.set()
        assert await first == "first" and await asyncio.gather(*queued[15:]) == [15, 16, 17]

    asyncio.run(scenario())
    assert scorer.sizes == [1, 3]


def trickle(port: int, give_up: float) -> tuple[bytes, float]:
    """Sends a prediction's headers promising 100 kB, then one body byte every 0.1 s; returns
    the start of the server's answer (b"" when it closed without one) and when it came."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head(100_000) + b"{")
        s.settimeout(0.1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < give_up:
            try:
                s.sendall(b" ")
                return s.recv(64), time.monotonic() - t0
            except TimeoutError:
                continue
            except OSError:
                return b"", time.monotonic() - t0
    return b"no answer", give_up


def test_a_trickled_body_gets_408_at_its_deadline_and_frees_its_slot(tmp_path: Path,
                                                                      live_server) -> None:
    url = live_server(create_app(make_predictor(tmp_path), Limits(body_timeout_s=1.0,
                                                                  max_pending=5)),
                      log_level="error")
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"image": base64.b64encode(png_bytes()).decode(), "text": "x"})
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(trickle, port, 5.0) for _ in range(4)]
        time.sleep(0.3)
        assert json_post(url, body).status_code == 200  # the one slot left serves others
        answers = [f.result() for f in slow]
    assert all(reply.startswith(b"HTTP/1.1 408") for reply, _ in answers), answers
    assert all(0.9 <= seconds < 2.5 for _, seconds in answers), answers  # clocks start a moment apart
    assert answered(url, 408) == 4
    with ThreadPoolExecutor(5) as pool:  # every slot is free again
        assert list(pool.map(lambda _: json_post(url, body).status_code, range(5))) == [200] * 5


def test_a_client_gone_mid_body_is_counted_never_a_500(tmp_path: Path, live_server) -> None:
    url = live_server(create_app(make_predictor(tmp_path)), log_level="error")
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.sendall(head(1000) + b'{"text": ')
        time.sleep(0.2)
    wait_until(lambda: cancelled(url) == 1)
    assert answered(url, 499) == 1
    assert answered(url, 500) == 0


def test_serve_on_a_busy_port_exits_2_before_loading_the_model(tmp_path: Path,
                                                               monkeypatch) -> None:
    loaded = threading.Event()

    def load(*args: object) -> None:
        loaded.set()
        raise RuntimeError("the model was loaded")

    monkeypatch.setattr(serve_cli, "make_predictor", load)
    make_predictor(tmp_path)  # a model folder
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        res = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "fake-model"),
                                       "--port", str(port)])
    assert res.exit_code == 2, res.output
    assert f"127.0.0.1:{port}" in res.output and "in use" in res.output
    assert not loaded.is_set()
