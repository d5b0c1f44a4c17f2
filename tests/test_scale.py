"""Ray and torchrun give the local engine's answers: same ids, errors, scores and caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from memetrm.config import DataOptions
from memetrm.devices import init_ray
from memetrm.features import load_features
from memetrm.features.cache import FeatureCache
from memetrm.features.distributed import extract_ray, merge, shard_bounds
from memetrm.features.extract import plan_extraction
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.batch import predict_batch
from memetrm.serving.predictor import Predictor
from memetrm.serving.ray_batch import predict_ray

from . import fakes  # noqa: F401  (registers the test-fake encoder here; workers use the plugin)
from .conftest import make_image

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install memetrm[ray]")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One embedded 2-CPU cluster for the session; workers import the test encoder."""
    os.environ["MEMETRM_PLUGINS"] = "tests.fakes"
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_pretrained(create_head("mlp", {"image": 6, "text": 5}, hidden=8), tmp_path / "m",
                           encoder="test-fake", fields=["image", "text"], threshold=0.5)


def memes(root: Path, n: int = 20, crash: bool = False) -> Path:
    """``n`` memes as jsonl, plus bad rows: a missing image, a corrupt one, a malformed line,
    a non-string text."""
    rows = []
    for i in range(n):
        make_image(root / "img" / f"{i}.png", i)
        rows.append({"id": f"m{i}", "img": f"img/{i}.png",
                     "text": "CRASH here" if crash and i == 7 else f"meme {i} {'bad' * (i % 3)}"})
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows += [{"id": "gone", "img": "img/nope.png", "text": "x"},
             {"id": "corrupt", "img": "img/broken.png", "text": "x"},
             {"id": "number", "img": "img/0.png", "text": 7}]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    return root / "in.jsonl"


def read(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_shards_cover_every_index_once() -> None:
    for n, k in ((10, 3), (2, 4), (0, 2), (7, 7)):
        bounds = shard_bounds(n, k)
        assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    a = {"x": torch.ones(2, 3), "x.tokens": torch.ones(2, 2, 4), "x.mask": torch.ones(2, 2)}
    b = {"x": torch.zeros(1, 3), "x.tokens": torch.zeros(1, 3, 4), "x.mask": torch.zeros(1, 3)}
    merged = merge([a, b])
    assert merged["x"].shape == (3, 3) and merged["x.tokens"].shape == (3, 3, 4)


def test_ray_scoring_matches_local(ray_cluster, model: Path, tmp_path: Path) -> None:
    src = memes(tmp_path / "in")
    local = tmp_path / "local.jsonl"
    summary = predict_batch(Predictor(model, device="cpu"), src, local, progress=False)
    ray_out = tmp_path / "ray.jsonl"
    ray_summary = predict_ray(model, src, ray_out, workers=2, batch_size=4)
    a, b = read(local), read(ray_out)
    assert a.keys() == b.keys() and len(a) == 24
    assert (summary.scored, summary.errors) == (ray_summary.scored, ray_summary.errors) == (20, 4)
    for i in a:
        assert (a[i]["error"] is None) == (b[i]["error"] is None), i
        if a[i]["error"] is None:
            assert b[i]["prob"] == pytest.approx(a[i]["prob"], abs=1e-6)
    # resuming skips what is done; Parquet output carries the same rows
    assert predict_ray(model, src, ray_out, workers=2).already_done == 24
    pq_out = tmp_path / "ray.parquet"
    predict_ray(model, src, pq_out, workers=2, batch_size=4)
    import pyarrow.parquet as pq

    rows = {r["id"]: r for r in pq.read_table(pq_out).to_pylist()}
    assert rows.keys() == a.keys() and rows["m3"]["prob"] == pytest.approx(a["m3"]["prob"])


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_doubled(
        ray_cluster, model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    os.environ["MEMETRM_TEST_CRASH_MARKER"] = str(marker)
    ray.shutdown()  # restart so the workers see the marker variable
    init_ray(num_cpus=2)
    try:
        src = memes(tmp_path / "in", crash=True)
        out = tmp_path / "out.jsonl"
        summary = predict_ray(model, src, out, workers=2, batch_size=4)
    finally:
        del os.environ["MEMETRM_TEST_CRASH_MARKER"]
    assert marker.exists()  # a worker really died
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24
    assert summary.scored == 20 and read(out)["m7"]["error"] is None


def _local_cache(root: Path, tmp_path: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {s: load_features(str(root), s, "test-fake", ["image", "text"],
                             data=DataOptions(cache_dir=tmp_path / "local"), num_workers=0).tensors
            for s in ("train", "test")}


def _assert_cache_equal(root: Path, cache_dir: Path, local: dict) -> None:
    for split, tensors in local.items():
        fs = load_features(str(root), split, "test-fake", ["image", "text"],
                           data=DataOptions(cache_dir=cache_dir), num_workers=0)
        assert fs.meta["encoded"] == []  # warm: written by the distributed run
        for k, t in tensors.items():
            assert torch.allclose(fs.tensors[k], t), (split, k)


def test_ray_extraction_writes_the_local_cache_entry(ray_cluster, tiny_jsonl_dataset: Path,
                                                     tmp_path: Path) -> None:
    local = _local_cache(tiny_jsonl_dataset, tmp_path)
    cache = FeatureCache(tmp_path / "ray")
    for split in ("train", "test"):
        plan = plan_extraction(str(tiny_jsonl_dataset), split, "test-fake", ["image", "text"])
        assert extract_ray(plan, cache, workers=2) == ["image", "text"]
    _assert_cache_equal(tiny_jsonl_dataset, tmp_path / "ray", local)


def test_torchrun_two_processes_write_the_local_cache_entry(tiny_jsonl_dataset: Path,
                                                           tmp_path: Path) -> None:
    local = _local_cache(tiny_jsonl_dataset, tmp_path)
    env = {**os.environ, "MEMETRM_PLUGINS": "tests.fakes",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "memetrm.features.distributed", "--dataset", str(tiny_jsonl_dataset),
           "--encoder", "test-fake", "--fields", "image,text", "--splits", "train,test",
           "--cache-dir", str(tmp_path / "torchrun")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "merged 2 shards" in res.stdout
    _assert_cache_equal(tiny_jsonl_dataset, tmp_path / "torchrun", local)
