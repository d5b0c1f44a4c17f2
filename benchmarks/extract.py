"""Extraction throughput vs the encoder's pure forward throughput, measured side by side, for
each encoder runtime (torch, onnx, onnx-int8).

End to end = ``encode_field`` on MultiOFF images (file read + decode + resize in DataLoader
workers, forward, storage). Pure forward = the same forward on pre-decoded tensors already in
memory. Target: ratio >= 0.7, i.e. decoding is hidden behind the forward pass.

    python -m benchmarks.extract --data-root ../shared/data [--n 256] [--workers 1]
        [--runtimes torch onnx onnx-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from benchmarks.render.extract import DATA, render
from memetrm.data import get_dataset, open_image, select_fields
from memetrm.encoders import create_encoder
from memetrm.encoders.runtimes import RUNTIMES, with_runtime
from memetrm.features import encode_field
from memetrm.features.extract import default_workers
from memetrm.utils import atomic_write_text


def measure(name: str, records: list, batch_size: int, workers: int) -> dict[str, float]:
    enc = create_encoder(name)
    tf = enc.image_transform()
    pixels = torch.stack([tf(open_image(r.image)) for r in records])
    enc.encode_images(pixels[:batch_size])  # warm-up

    t0 = time.perf_counter()
    for i in range(0, len(records), batch_size):
        enc.encode_images(pixels[i:i + batch_size])
    forward = len(records) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    encode_field(enc, records, "image", tokens=False, batch_size=batch_size,
                 num_workers=workers, desc=f"end to end ({name})")
    e2e = len(records) / (time.perf_counter() - t0)
    return {"forward": forward, "end_to_end": e2e}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--encoder", default="minilm-effnet")
    ap.add_argument("--n", type=int, default=256, help="images per measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    ap.add_argument("--json", type=Path, default=DATA)
    args = ap.parse_args()

    ds = get_dataset("multioff", args.data_root)
    records = select_fields(ds.records("train"), ["image"], "skip").records[: args.n]
    workers = default_workers() if args.workers is None else args.workers
    print(f"images: {len(records)}  batch: {args.batch_size}  decode workers: {workers}  "
          f"torch threads: {torch.get_num_threads()}")
    results = {}
    for runtime in args.runtimes:
        r = results[runtime] = measure(with_runtime(args.encoder, runtime), records,
                                       args.batch_size, workers)
        print(f"{runtime:>10}: pure forward {r['forward']:7.1f} img/s, end to end "
              f"{r['end_to_end']:7.1f} img/s, ratio {r['end_to_end'] / r['forward']:.2f} "
              "(target >= 0.70)", flush=True)
    atomic_write_text(args.json, json.dumps({
        "command": "python -m benchmarks.extract " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
        "images": len(records), "batch": args.batch_size, "workers": workers,
        "threads": torch.get_num_threads(), "runtimes": results}, indent=2))
    if args.json == DATA:
        render()


if __name__ == "__main__":
    main()
