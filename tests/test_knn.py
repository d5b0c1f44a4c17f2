"""The memory's nearest-neighbour index: exact up to the crossover, HNSW past it with efSearch
set by a recall floor on held-out rows, and that recall holding for fresh queries."""

from __future__ import annotations

import pytest
import torch

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
