"""Extraction throughput vs the encoder's pure forward throughput, measured side by side.

End to end = ``encode_field`` on MultiOFF images (file read + decode + resize in DataLoader
workers, forward, storage). Pure forward = the same forward on pre-decoded tensors already in
memory. Target: ratio >= 0.7, i.e. decoding is hidden behind the forward pass.

    python -m benchmarks.extract --data-root ../shared/data [--n 256] [--workers 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from memetrm.data import get_dataset, open_image, select_fields
from memetrm.encoders import create_encoder
from memetrm.features import encode_field
from memetrm.features.extract import default_workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--encoder", default="minilm-effnet")
    ap.add_argument("--n", type=int, default=256, help="images per measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    ds = get_dataset("multioff", args.data_root)
    records = select_fields(ds.records("train"), ["image"], "skip").records[: args.n]
    enc = create_encoder(args.encoder)
    tf = enc.image_transform()
    pixels = torch.stack([tf(open_image(r.image)) for r in records])
    enc.encode_images(pixels[: args.batch_size])  # warm-up

    t0 = time.perf_counter()
    for i in range(0, len(records), args.batch_size):
        enc.encode_images(pixels[i:i + args.batch_size])
    forward = len(records) / (time.perf_counter() - t0)

    workers = default_workers() if args.workers is None else args.workers
    t0 = time.perf_counter()
    encode_field(enc, records, "image", tokens=False, batch_size=args.batch_size,
                 num_workers=workers, desc="end to end")
    e2e = len(records) / (time.perf_counter() - t0)

    print(f"images: {len(records)}  batch: {args.batch_size}  decode workers: {workers}  "
          f"torch threads: {torch.get_num_threads()}")
    print(f"pure forward (pre-decoded tensors): {forward:7.1f} img/s")
    print(f"end-to-end extraction:              {e2e:7.1f} img/s")
    print(f"ratio end-to-end / forward:         {e2e / forward:7.2f}  (target >= 0.70)")


if __name__ == "__main__":
    main()
