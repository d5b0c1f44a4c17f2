"""Batch scoring throughput: the local engine vs Ray Data at 1 and 2 workers, on the same input.

Input: MultiOFF's test split (images + their text, so no OCR), repeated ``--repeat`` times with
fresh ids. Each engine scores it into a fresh output; items/s count the whole call (Ray's
cluster is started before the clock starts; every worker's model load is included).

    python -m benchmarks.scale --model /tmp/models/mo-mlp --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.render.scale import DATA, render
from memetrm.data import resolve_data_root
from memetrm.devices import init_ray
from memetrm.serving.batch import predict_batch
from memetrm.serving.predictor import Predictor
from memetrm.serving.ray_batch import predict_ray
from memetrm.utils import atomic_write_text


def write_input(data_root: str | None, out: Path, repeat: int) -> int:
    root = (resolve_data_root(data_root) / "multioff").resolve()
    with open(root / "test.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (root / "images" / r["image_name"]).is_file()]
    with open(out, "w") as f:
        for k in range(repeat):
            for r in rows:
                f.write(json.dumps({"id": f"{k}-{r['image_name']}",
                                    "img": str(root / "images" / r["image_name"]),
                                    "text": r["sentence"]}) + "\n")
    return repeat * len(rows)


def count_errors(output: Path) -> int:
    with open(output) as f:
        return sum(json.loads(line)["error"] is not None for line in f)


def agreement(a: Path, b: Path) -> dict[str, float | bool]:
    """Same ids (and errors) in both outputs, and the largest probability difference."""
    ra, rb = ({r["id"]: r for r in map(json.loads, p.read_text().splitlines())} for p in (a, b))
    both = [i for i in ra if ra[i]["prob"] is not None and rb.get(i, {}).get("prob") is not None]
    return {"same_ids": ra.keys() == rb.keys(),
            "same_errors": all((ra[i]["error"] is None) == (rb[i]["error"] is None) for i in ra
                               if i in rb),
            "max_abs_prob_diff": max((abs(ra[i]["prob"] - rb[i]["prob"]) for i in both), default=0)}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=DATA)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        n = write_input(args.data_root, src, args.repeat)
        engines = {}
        seconds = timed(lambda: predict_batch(Predictor(args.model, device="cpu"), src,
                                              Path(tmp) / "local.jsonl", args.batch_size,
                                              progress=False))
        engines["local"] = {"seconds": seconds, "items_per_s": n / seconds,
                            "errors": count_errors(Path(tmp) / "local.jsonl")}
        init_ray(num_cpus=2)  # started before the clock
        for workers in (1, 2):
            out = Path(tmp) / f"ray{workers}.jsonl"
            seconds = timed(lambda w=workers, o=out: predict_ray(args.model, src, o, workers=w,
                                                                 batch_size=args.batch_size))
            engines[f"ray, {workers} worker{'s' * (workers > 1)}"] = {
                "seconds": seconds, "items_per_s": n / seconds, "errors": count_errors(out),
                "vs_local": agreement(Path(tmp) / "local.jsonl", out)}
            print(f"ray {workers}: {n / seconds:.2f} items/s", flush=True)
    local = engines["local"]["items_per_s"]
    for name, e in engines.items():
        print(f"{name:>16}: {e['items_per_s']:6.2f} items/s ({e['items_per_s'] / local:.2f}x local)"
              + (f"; vs local: {e['vs_local']}" if "vs_local" in e else ""))
    per_worker = engines["local"]["items_per_s"]
    result = {"command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]), "items": n,
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
              "engines": engines,
              "estimate_1m": {"per_worker_items_per_s": per_worker,
                              "hours_per_worker": 1e6 / per_worker / 3600}}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    if args.json == DATA:
        render()
    print(f"1M memes at {per_worker:.2f} items/s per worker: "
          f"{result['estimate_1m']['hours_per_worker']:.1f} worker-hours (estimate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
