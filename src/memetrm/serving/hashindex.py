"""PDQ hashes searched by Hamming distance through faiss binary indexes, one interface for all sizes.

A small list is scanned in full (``IndexBinaryFlat``: 32 bytes a hash, XOR and popcount). A
large one goes through ``IndexBinaryMultiHash`` (multi-index hashing, as ThreatExchange's
``PDQMultiHashIndex`` does it), which splits each hash into ``t`` chunks of ``b`` bits, each
keyed in its own hash table: two hashes within ``d`` bits differ in some chunk by at most
``d // t`` bits (pigeonhole), so probing every chunk with up to that many bits flipped finds
every entry within ``d`` (recall 1, not an approximation); only those candidates are compared
in full. ThreatExchange always takes 16 chunks of 16 bits; at 10M random hashes a 16-bit key
matches 150 entries, so each query compares 40,000 candidates. ``layout`` picks the chunks
instead for the list's size and distance, from a cost model (table probes and candidates)
with an upper bound on the bytes per hash, and ``choose`` takes the multi-hash where that model
beats a scan: past about 10,000 hashes at distance 16 and 30,000 at 31, never at distances so
far that every chunk needs many flipped bits. ``benchmarks/hash_scale.py`` measures both kinds
against the model's choice.

Both kinds answer the same range search; rows are insertion order, ties go to the lower row (as
``numpy.argmin`` over a scan would). The distance is fixed when the index is built: faiss reads
the multi-hash's probe depth from the index itself, so setting it per query would race between
threads that share one list.
"""

from __future__ import annotations

import math

import numpy as np

#: bits in a PDQ hash, and bytes per packed row
BITS, CODE_BYTES = 256, 32
#: the chunk counts ``layout`` considers: 16 chunks of 16 bits (ThreatExchange's) to 9 of 28
CHUNKS = range(9, 17)
#: cost model of one query, measured with faiss 1.15 on this project's 2-core CPU: a scan's
#: time per hash; a multi-hash's per probe of a table and per candidate (a random read of its
#: code, a set insert, a compare)
SCAN_NS, PROBE_NS, CANDIDATE_NS = 1.4, 65, 210
#: bytes per non-empty key of one table (a node of faiss' unordered_map and its id vector)
KEY_BYTES = 84
#: an index takes at most this many bytes per hash beyond the first ``FREE_BYTES``: HMA's goal
#: of 10M hashes in 8 GB a box leaves half of its 800 bytes a hash to the entries themselves
MAX_BYTES_PER_HASH, FREE_BYTES = 400, 64 * 2**20


def estimate(n: int, distance: int, chunks: int) -> tuple[float, float]:
    """Estimated nanoseconds per query and index bytes of a multi-hash of ``n`` hashes in
    ``chunks`` chunks, searched within ``distance``."""
    bits = BITS // chunks
    probes = chunks * sum(math.comb(bits, i) for i in range(distance // chunks + 1))
    keys = 2 ** bits * -math.expm1(-n / 2 ** bits)  # expected non-empty keys of one table
    return (probes * (PROBE_NS + n / 2 ** bits * CANDIDATE_NS),
            n * CODE_BYTES + chunks * (8 * n + KEY_BYTES * keys))


def layout(n: int, distance: int) -> tuple[int, int]:
    """(chunks, bits per chunk) of the fastest multi-hash for ``n`` hashes searched within
    ``distance`` whose estimated size stays within budget (the smallest if none does)."""
    budget = FREE_BYTES + MAX_BYTES_PER_HASH * n

    def rank(chunks: int) -> tuple[bool, float]:
        ns, size = estimate(n, distance, chunks)
        return (True, size) if size > budget else (False, ns)

    chunks = min(CHUNKS, key=rank)
    return chunks, BITS // chunks


def choose(n: int, distance: int) -> str:
    """"multi_hash" where the cost model says it answers faster than a scan, else "flat"."""
    return ("multi_hash" if estimate(n, distance, layout(n, distance)[0])[0] < SCAN_NS * n
            else "flat")


class HashIndex:
    """Packed PDQ hashes (N, 32) uint8; ``within`` and ``nearest`` search up to ``distance``."""

    def __init__(self, packed: np.ndarray, distance: int, kind: str | None = None) -> None:
        """``kind`` "flat" or "multi_hash"; by default ``choose`` picks it."""
        import faiss

        packed = np.ascontiguousarray(packed, np.uint8).reshape(-1, CODE_BYTES)
        if not 0 <= distance <= BITS:
            raise ValueError(f"a Hamming distance between PDQ hashes is 0..{BITS}, got {distance}")
        self.kind = kind or choose(len(packed), distance)
        #: what searches and how: the kind, and a multi-hash's chunks, bits and flips
        self.params: dict[str, int | str] = {"kind": self.kind, "distance": distance}
        if self.kind == "multi_hash":
            chunks, bits = layout(len(packed), distance)
            self.index = faiss.IndexBinaryMultiHash(BITS, chunks, bits)
            self.index.nflip = distance // chunks
            self.params.update(chunks=chunks, bits=bits, flips=distance // chunks)
        elif self.kind == "flat":
            self.index = faiss.IndexBinaryFlat(BITS)
        else:
            raise ValueError(f"a hash index is 'flat' or 'multi_hash', not {kind!r}")
        self.distance = distance
        if len(packed):
            self.index.add(packed)

    def __len__(self) -> int:
        return self.index.ntotal

    def within(self, queries: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (rows of packed hashes, (B, 32)): the rows within the distance and their
        distances, nearest first (ties: lower row first)."""
        queries = np.ascontiguousarray(queries, np.uint8).reshape(-1, CODE_BYTES)
        if not len(self) or not len(queries):
            return [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in queries]
        # faiss keeps distances strictly below the radius
        limits, dist, rows = self.index.range_search(queries, self.distance + 1)
        out = []
        for lo, hi in zip(limits[:-1], limits[1:], strict=True):
            d, r = dist[lo:hi].astype(np.int64), rows[lo:hi].astype(np.int64)
            order = np.lexsort((r, d))
            out.append((r[order], d[order]))
        return out

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the nearest row within the distance and its distance, (B,) each; row -1
        and distance -1 where nothing is that close."""
        found = self.within(queries)
        rows = np.array([r[0] if len(r) else -1 for r, _ in found], np.int64)
        dist = np.array([d[0] if len(d) else -1 for _, d in found], np.int64)
        return rows, dist
