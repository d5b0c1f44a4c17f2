"""Hash lists at scale: build time, memory, lookups/s on one core, recall of planted near-duplicates.

Random 256-bit hashes (PDQ hashes of unrelated images look alike: independent bits, about half
set) fill a ``HashIndex`` of each size, built for each match distance (16, a list's stricter
setting, and 31, the repost memo's and ThreatExchange's). The queries are planted near-duplicates,
stored hashes with exactly ``distance`` bits flipped (the farthest a match may be), and as many
fresh random hashes (misses: most memes are on no list), looked up one at a time through
``HashIndex.nearest`` (what ``HashList.match`` calls) with faiss on one thread.
``lookups_per_s`` counts per second of that thread's CPU time, what one core of its own would
answer on a machine that others share (``lookups_per_wall_s`` is the rate at the recorded load). Recall is the
share of planted hashes answered with their own row. Each build runs in a fresh process, so its
``bytes`` are the resident memory the index added (RSS after the build minus before it).
``--crossover`` times a full scan against a multi-index hash at small sizes, beside the kind
``hashindex.choose`` picks there from its cost model. Writes ``docs/data/hash_scale.json``; the table in
``docs/serving.md`` is rendered from it.

    python -m benchmarks.hash_scale --sizes 10000,1000000,10000000 --crossover
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks.render.hash_scale import DATA, render
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.serving import hashindex
from memetrm.serving.hashindex import HashIndex
from memetrm.utils import atomic_write_text

DISTANCES = (16, 31)
CROSSOVER_SIZES = (5_000, 10_000, 20_000, 50_000, 100_000)


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def planted(packed: np.ndarray, rows: np.ndarray, bits: int, rng: np.random.Generator
            ) -> np.ndarray:
    """``packed[rows]`` with ``bits`` distinct bits flipped in each."""
    unpacked = np.unpackbits(packed[rows], axis=1)
    for row in unpacked:
        row[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(unpacked, axis=1)


def lookups_per_s(index: HashIndex, queries: np.ndarray, seconds: float
                  ) -> tuple[float, float]:
    """One query at a time, round the queries until ``seconds`` of CPU time have passed; per
    second of this thread's CPU time (a core of its own, whatever else the machine runs) and
    per second of wall time."""
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.process_time() - c0 < seconds:
        for q in queries[:100]:
            index.nearest(q)
        done += 100
        queries = np.roll(queries, -100, axis=0)
    return done / (time.process_time() - c0), done / (time.perf_counter() - t0)


def measure(n: int, distance: int, queries: int, seconds: float, seed: int = 0
            ) -> dict[str, Any]:
    """One size and distance, in this (fresh) process."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rows = rng.choice(n, queries, replace=False)
    near = planted(packed, rows, distance, rng)
    fresh = rng.integers(0, 256, (queries, 32), dtype=np.uint8)
    before = rss()
    t0, c0 = time.perf_counter(), time.process_time()
    index = HashIndex(packed, distance)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    grown = rss() - before
    cpu_rate, wall_rate = lookups_per_s(index, np.concatenate([near, fresh])[
        rng.permutation(2 * queries)], seconds)
    found, dist = index.nearest(near)
    misses = index.nearest(fresh)[0]
    return {"hashes": n, "distance": distance, **index.params, "build_s": round(build, 3),
            "build_cpu_s": round(build_cpu, 3), "bytes": grown,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "lookups_per_s": round(cpu_rate, 1), "lookups_per_wall_s": round(wall_rate, 1),
            "recall": float(np.mean(found == rows)), "planted": queries,
            "planted_distance_max": int(dist.max()), "false_matches": int((misses >= 0).sum()),
            "fresh": queries, "load_average": round(os.getloadavg()[0], 2)}


def crossover(seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """Lookups/s of a full scan and of a multi-index hash at small sizes, one thread."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    out = []
    for n in CROSSOVER_SIZES:
        packed = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        for distance in DISTANCES:
            queries = planted(packed, rng.choice(n, 200, replace=False), distance, rng)
            rates = {kind: round(lookups_per_s(HashIndex(packed, distance, kind), queries,
                                               seconds)[0], 1) for kind in ("flat", "multi_hash")}
            out.append({"hashes": n, "distance": distance, **rates,
                        "chosen": hashindex.choose(n, distance)})
            console.print(out[-1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,1000000,10000000")
    ap.add_argument("--distances", default=",".join(map(str, DISTANCES)))
    ap.add_argument("--queries", type=int, default=1000, help="planted (and as many fresh)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="CPU seconds of timing per size and distance")
    ap.add_argument("--crossover", action="store_true", help="also time scan vs multi-hash")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        command = (f"python -m benchmarks.hash_scale --sizes {args.sizes} --distances "
                   f"{args.distances} --queries {args.queries} --seconds {args.seconds}"
                   + " --crossover" * args.crossover)
        rows: list[dict[str, Any]] = []
        result = {"provenance": provenance(threads=1), "command": command, "rows": rows,
                  "crossover": []}

        def save() -> None:
            """After every size, so a run stopped at its time limit keeps what it measured."""
            result["machine"] = (f"{os.cpu_count()} CPU cores, load average "
                                 f"{os.getloadavg()[0]:.1f}")
            atomic_write_text(DATA, json.dumps(result, indent=1))

        if args.crossover:
            result["crossover"] = crossover(args.seconds / 3)
            save()
        spawn = multiprocessing.get_context("spawn")
        for n in map(int, args.sizes.split(",")):
            for distance in map(int, args.distances.split(",")):
                console.print(f"{n:,} hashes within {distance} ...")
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    rows.append(pool.submit(measure, n, distance, min(args.queries, n),
                                            args.seconds).result())
                console.print(rows[-1])
                save()
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
