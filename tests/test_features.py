"""Feature cache: reuse, invalidation on data change, atomic writes, constant-shape output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from memetrm.config import DataOptions
from memetrm.errors import DataError
from memetrm.features import load_features

from .fakes import FakeEncoder


@pytest.fixture(autouse=True)
def _reset_calls():
    FakeEncoder.calls = {"image": 0, "text": 0}
    FakeEncoder.fail_after = None


def _load(root: Path, cache: Path, **kw):
    return load_features(str(root), "train", "test-fake", ["image", "text"],
                         data=DataOptions(cache_dir=cache), num_workers=0, batch_size=8, **kw)


def test_second_run_hits_cache(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    fs = _load(tiny_jsonl_dataset, tmp_path)
    assert fs.meta["encoded"] == ["image", "text"] and FakeEncoder.calls == {"image": 3, "text": 3}
    assert fs.tensors["image"].shape == (24, 6) and fs.tensors["text"].shape == (24, 5)
    fs2 = _load(tiny_jsonl_dataset, tmp_path)
    assert fs2.meta["encoded"] == [] and FakeEncoder.calls == {"image": 3, "text": 3}
    assert all((fs.tensors[k] == fs2.tensors[k]).all() for k in fs.tensors)
    assert fs2.ids == fs.ids and fs2.labels.tolist() == fs.labels.tolist()


def test_data_change_invalidates_only_that_field(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    _load(tiny_jsonl_dataset, tmp_path)
    p = tiny_jsonl_dataset / "train.jsonl"
    rows = [json.loads(x) for x in p.read_text().splitlines()]
    rows[0]["text"] = "an edited text"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    assert _load(tiny_jsonl_dataset, tmp_path).meta["encoded"] == ["text"]
    img = tiny_jsonl_dataset / "img" / "train005.png"
    from .conftest import make_image
    make_image(img, seed=12345)
    assert _load(tiny_jsonl_dataset, tmp_path).meta["encoded"] == ["image"]


def test_interrupted_extraction_leaves_no_entry(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    FakeEncoder.fail_after = 1
    with pytest.raises(KeyboardInterrupt):
        _load(tiny_jsonl_dataset, tmp_path)
    entries = list((tmp_path / "features").glob("*")) if (tmp_path / "features").exists() else []
    assert entries == []  # no partial folder, not even a temp one
    FakeEncoder.fail_after = None
    assert _load(tiny_jsonl_dataset, tmp_path).meta["encoded"] == ["image", "text"]


def test_corrupt_cache_entry_is_recomputed(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    _load(tiny_jsonl_dataset, tmp_path)
    for f in (tmp_path / "features").rglob("features.safetensors"):
        f.write_bytes(b"garbage")
    assert _load(tiny_jsonl_dataset, tmp_path).meta["encoded"] == ["image", "text"]


def test_token_features_and_bad_image_named(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    fs = _load(tiny_jsonl_dataset, tmp_path, tokens=True)
    assert fs.tensors["image.tokens"].shape == (24, 4, 6)
    assert fs.tensors["text.mask"].shape[0] == 24 and fs.token_dims == {"image": 6, "text": 5}
    (tiny_jsonl_dataset / "img" / "train007.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="id train007"):
        _load(tiny_jsonl_dataset, tmp_path / "other")


def test_worker_processes_decode_images(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    fs = load_features(str(tiny_jsonl_dataset), "dev", "test-fake", ["image"],
                       data=DataOptions(cache_dir=tmp_path), num_workers=2, batch_size=4)
    ref = load_features(str(tiny_jsonl_dataset), "dev", "test-fake", ["image"],
                        data=DataOptions(cache_dir=tmp_path / "b"), num_workers=0, batch_size=5)
    assert (fs.tensors["image"] == ref.tensors["image"]).all()


def test_pooled_request_reuses_token_entry(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    with_tokens = _load(tiny_jsonl_dataset, tmp_path, tokens=True)
    calls = dict(FakeEncoder.calls)
    pooled = _load(tiny_jsonl_dataset, tmp_path)
    assert pooled.meta["encoded"] == [] and FakeEncoder.calls == calls
    assert set(pooled.tensors) == {"image", "text"}
    assert (pooled.tensors["image"] == with_tokens.tensors["image"]).all()


@pytest.mark.parametrize("device, precision", [
    ("cpu", "bf16"),
    pytest.param("cuda", "auto", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU; none here")]),
])
def test_mixed_precision_extraction_keeps_the_cache_layout(tiny_jsonl_dataset: Path, tmp_path: Path,
                                                           device: str, precision: str) -> None:
    """Features made under autocast (on any device) are fp32 pooled / fp16 tokens, same shapes."""
    ref = load_features(str(tiny_jsonl_dataset), "train", "test-fake", ["image", "text"], tokens=True,
                        data=DataOptions(cache_dir=tmp_path / "a"), num_workers=0, device="cpu",
                        precision="fp32")
    mixed = load_features(str(tiny_jsonl_dataset), "train", "test-fake", ["image", "text"],
                          tokens=True, data=DataOptions(cache_dir=tmp_path / "b"), num_workers=0,
                          device=device,
                          precision=precision)
    assert mixed.ids == ref.ids
    for key, t in ref.tensors.items():
        assert mixed.tensors[key].dtype == t.dtype and mixed.tensors[key].shape == t.shape, key
        assert mixed.tensors[key].device.type == "cpu"
        if t.is_floating_point():
            assert torch.allclose(mixed.tensors[key].float(), t.float(), rtol=1e-2, atol=1e-2), key
    assert ref.tensors["image"].dtype == torch.float32
    assert ref.tensors["image.tokens"].dtype == torch.float16
