"""PDQ hash indexes: both kinds find exactly the hashes within the distance (a scan's answer),
switch kind at the crossover, and a hash list answers through them."""

from __future__ import annotations

import numpy as np
import pytest

from memetrm.serving import hashindex
from memetrm.serving.hashindex import MAX_BYTES_PER_HASH, HashIndex, choose, estimate, layout
from memetrm.serving.hashing import ImageHash, distances
from memetrm.serving.hashlist import Entry, HashList, KnownMemes


def flip(packed: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Each row with ``bits`` distinct bits flipped."""
    unpacked = np.unpackbits(packed, axis=1)
    for row in unpacked:
        row[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(unpacked, axis=1)


@pytest.mark.parametrize("distance", [16, 31])
@pytest.mark.parametrize("kind", ["flat", "multi_hash"])
def test_planted_near_duplicates_are_found_with_their_distance_and_nothing_beyond(
        distance: int, kind: str) -> None:
    rng = np.random.default_rng(distance)
    packed = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    # planted: rows 0-39 at exactly the distance; decoys: rows 40-79 one bit beyond it
    queries = np.concatenate([flip(packed[:40], distance, rng),
                              flip(packed[40:80], distance + 1, rng)])
    index = HashIndex(packed, distance, kind)
    assert index.kind == kind
    rows, dist = index.nearest(queries)
    assert rows[:40].tolist() == list(range(40)) and set(dist[:40].tolist()) == {distance}
    assert rows[40:].tolist() == [-1] * 40 and dist[40:].tolist() == [-1] * 40
    for q, (found, d) in zip(queries, index.within(queries), strict=True):
        scan = distances(ImageHash(q.tobytes()), packed)
        assert found.tolist() == np.flatnonzero(scan <= distance).tolist()  # one row: no ties
        assert d.tolist() == scan[found].tolist()


@pytest.mark.parametrize("kind", ["flat", "multi_hash"])
def test_the_nearest_wins_and_ties_go_to_the_lower_row(kind: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    far, near = flip(base, 9, rng), flip(base, 3, rng)
    packed = np.concatenate([far, near, base, base, rng.integers(0, 256, (50, 32), np.uint8)])
    index = HashIndex(packed, 16, kind)
    (rows, dist), = index.within(base)
    assert rows.tolist() == [2, 3, 1, 0] and dist.tolist() == [0, 0, 3, 9]
    assert [r.tolist() for r in index.nearest(base)] == [[2], [0]]
    assert HashIndex(packed[:0], 16).nearest(base)[0].tolist() == [-1]


def test_the_kind_switches_where_the_multi_hash_beats_a_scan() -> None:
    packed = np.random.default_rng(0).integers(0, 256, (20_000, 32), dtype=np.uint8)
    assert HashIndex(packed[:5000], 16).kind == "flat"
    assert HashIndex(packed, 16).params == {
        "kind": "multi_hash", "distance": 16, "chunks": layout(20_000, 16)[0],
        "bits": layout(20_000, 16)[1], "flips": 1}
    assert HashIndex(packed, 31).kind == "flat"  # one bit flipped per 16-bit chunk costs more
    assert choose(10_000_000, 16) == choose(10_000_000, 31) == "multi_hash"
    # so many flips per chunk that scanning ten million hashes is faster
    assert choose(10_000_000, 64) == "flat"
    with pytest.raises(ValueError, match="not 'ivf'"):
        HashIndex(packed, 16, "ivf")


def test_the_layout_keeps_ten_million_hashes_within_budget_and_beats_sixteen_chunks() -> None:
    n = 10_000_000
    chunks, bits = layout(n, 16)
    ns, size = estimate(n, 16, chunks)
    assert chunks * bits <= 256 and size <= hashindex.FREE_BYTES + MAX_BYTES_PER_HASH * n
    # ThreatExchange's 16 x 16 bits compares ~40,000 candidates a query at this size
    assert ns < estimate(n, 16, 16)[0] / 5


def test_known_memes_answer_through_the_index_past_the_crossover(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    packed = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    entries = [Entry(ImageHash(p.tobytes()), i % 2, f"case-{i}") for i, p in enumerate(packed)]
    monkeypatch.setattr(hashindex, "SCAN_NS", 1e6)  # as if scanning were slow
    known = KnownMemes([HashList(entries, name="big.csv")], distance=16)
    assert known._index.kind == "multi_hash"
    query = ImageHash(flip(packed[7:8], 12, rng).tobytes())
    assert known.match(query, str).as_dict() == {"label": 1, "source_id": "case-7",
                                                 "distance": 12, "list": "big.csv"}
    assert known.match(ImageHash(flip(packed[7:8], 17, rng).tobytes()), str) is None


def test_the_scale_benchmark_runs_tiny_and_renders() -> None:
    from benchmarks.hash_scale import measure
    from benchmarks.render.hash_scale import markdown

    row = measure(3000, 16, queries=40, seconds=0.05)
    assert row["recall"] == 1.0 and row["planted_distance_max"] == 16
    assert row["false_matches"] == 0 and row["lookups_per_s"] > 0 and row["kind"] == "flat"
    table = markdown({"command": "c", "machine": "m", "rows": [row], "crossover": []})
    assert "| 3,000 | 16 | scan |" in table
    assert {"hashes", "bytes", "lookups_per_s", "recall", "build_s"} <= set(row)
