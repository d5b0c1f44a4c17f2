"""The memory's nearest-neighbour index: exact up to the crossover, HNSW past it with efSearch
set by a recall floor on held-out rows, and that recall holding for fresh queries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from memetrm.heads import create_head, from_pretrained, registry, save_pretrained
from memetrm.layers import memory as memory_layer
from memetrm.layers.memory import (
    EF_SEARCH,
    RECALL_FLOOR,
    InnerProductIndex,
    MemoryBank,
    exact_top_k,
    recall_at_k,
)


def unit(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=-1)


def test_hnsw_raises_ef_search_to_the_recall_floor_and_fresh_queries_keep_it() -> None:
    # isotropic random rows: the hardest case for a graph index, so efSearch must rise
    keys, fresh = unit(4000, 128, 0), unit(300, 128, 1)
    index = InnerProductIndex(keys, approximate_after=1000)
    params = index.params
    assert params["kind"] == "hnsw" and params["links"] == 32 and params["held_out"] == 200
    assert params["held_out_recall"] >= RECALL_FLOOR and params["ef_search"] > EF_SEARCH[0]
    assert index.index.hnsw.efSearch == params["ef_search"] and len(index) == 4000
    exact = exact_top_k(fresh.numpy(), keys.numpy(), 10)
    assert recall_at_k(index.search(fresh, 10)[1].numpy(), exact) >= RECALL_FLOOR
    assert torch.equal(index.search(keys[-5:], 1)[1][:, 0], torch.arange(3995, 4000))


def test_an_unreachable_floor_takes_the_largest_ef_search_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_layer, "EF_SEARCH", (16, 32))
    monkeypatch.setattr(memory_layer, "RECALL_FLOOR", 1.01)
    params = InnerProductIndex(unit(2000, 64, 4), approximate_after=1000).params
    assert params["ef_search"] == 32 and params["held_out_recall"] < 1.01


def test_the_exact_index_is_exact_up_to_the_crossover(monkeypatch: pytest.MonkeyPatch) -> None:
    keys, queries = unit(300, 16, 2), unit(20, 16, 3)
    exact = InnerProductIndex(keys)
    assert exact.params == {"kind": "exact"}
    assert recall_at_k(exact.search(queries, 10)[1].numpy(),
                       exact_top_k(queries.numpy(), keys.numpy(), 10)) == 1.0
    monkeypatch.setattr(memory_layer, "APPROXIMATE_AFTER", 299)
    bank = MemoryBank(16)
    bank.add(keys, torch.zeros(300), [str(i) for i in range(300)])
    bank.search(queries, 10)
    assert bank._index.params["kind"] == "hnsw"


def test_the_memory_benchmark_reports_recall_for_both_kinds() -> None:
    from benchmarks.memory_scale import crossover, measure
    from benchmarks.render.memory_scale import markdown

    row = measure(600, queries=20, dim=16, data="clustered")
    assert row["index"] == {"kind": "exact"} and row["recall_at_10"] == 1.0
    cross = crossover(1500, queries=20, dim=16, data="gaussian")
    assert cross["exact"]["recall_at_10"] == 1.0 and cross["hnsw"]["kind"] == "hnsw"
    assert cross["hnsw"]["recall_at_10"] >= 0.8
    text = markdown({"approximate_after": 10, "recall_floor": 0.95, "runs": [
        {"command": "c", "machine": "m", "data": "clustered", "rows": [
            row, {**row, "index": cross["hnsw"]}]}], "crossover": {
                "command": "c", "machine": "m", "data": "gaussian", "rows": [cross]}})
    assert "| 600 | 16 | exact |" in text and "HNSW 32 links, efSearch" in text


def test_a_saved_hnsw_index_loads_without_a_rebuild_grows_and_is_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_layer, "APPROXIMATE_AFTER", 299)
    head = create_head("retrieval", {"text": 16})
    head.remember({"text": unit(400, 16, 5), "label": (torch.arange(400) % 2).float()},
                  [f"m{i}" for i in range(400)])
    queries = unit(20, 16, 6)
    expected = head.bank.search(queries, 10)
    save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["text"])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    entry = config["memory_index"]["bank"]
    assert entry["file"] == "bank.faiss" and "bank.faiss" in config["manifest"]
    assert entry["kind"] == "hnsw" and entry["links"] == 32 and entry["ef_search"] in EF_SEARCH
    data = (tmp_path / "m" / "bank.faiss").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()

    def no_build(*_: object) -> None:
        raise AssertionError("the index was built again")

    monkeypatch.setattr(InnerProductIndex, "calibrate", no_build)
    loaded, meta = from_pretrained(tmp_path / "m")
    for got, want in zip(loaded.bank.search(queries, 10), expected, strict=True):
        assert torch.equal(got, want)
    # rows added after loading extend the saved graph, which is saved again with them
    new = {"text": queries[:3], "label": torch.ones(3)}
    loaded.add(new, ["q0", "q1", "q2"])
    save_pretrained(loaded, tmp_path / "m", **{k: meta[k] for k in ("encoder", "fields")})
    grown, _ = from_pretrained(tmp_path / "m")
    assert grown.bank._index is not None and len(grown.bank._index) == 403
    assert grown.neighbours(new, 1)[1][:, 0].tolist() == [400, 401, 402]

    # an index that changed, or that holds another memory's rows, is named and built anew
    warned: list[str] = []
    monkeypatch.setattr(registry, "warn", warned.append)
    monkeypatch.undo()
    monkeypatch.setattr(memory_layer, "APPROXIMATE_AFTER", 299)
    monkeypatch.setattr(registry, "warn", warned.append)
    index_file = tmp_path / "m" / "bank.faiss"
    index_file.write_bytes(b"\0" * len(index_file.read_bytes()))
    rebuilt, _ = from_pretrained(tmp_path / "m")
    assert "bank.faiss changed since the model was saved" in warned[-1]
    assert rebuilt.neighbours(new, 1)[1][:, 0].tolist() == [400, 401, 402]
    with pytest.raises(ValueError, match="a graph over other rows"):
        InnerProductIndex.from_bytes(data, entry, unit(400, 16, 7))
    with pytest.raises(ValueError, match="not a faiss index"):
        InnerProductIndex.from_bytes(b"junk" * 64, entry, unit(400, 16, 5))

    # below the crossover again: no index file, and no stale record of one
    small = create_head("retrieval", {"text": 16})
    small.remember({"text": unit(10, 16, 8), "label": torch.zeros(10)}, list("abcdefghij"))
    save_pretrained(small, tmp_path / "m", memory_index=config["memory_index"])
    assert not index_file.exists()
    assert "memory_index" not in json.loads((tmp_path / "m" / "config.json").read_text())
