"""Time per epoch: a head on cached features vs re-encoding features every epoch (the seed's loop).

Same encoder (minilm-effnet), same head (mlp), same MultiOFF train split, same batches; the
only difference is whether the frozen encoder runs inside the loop.

    python -m benchmarks.train_speed --data-root ../shared/data [--n 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from memetrm.config import DataOptions
from memetrm.data import get_dataset, open_image, select_fields
from memetrm.encoders import create_encoder
from memetrm.features import FeatureSet, load_features
from memetrm.heads import create_head
from memetrm.training import TrainConfig, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n", type=int, default=128, help="training examples per epoch")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    fields = ["image", "text"]

    cached = load_features("multioff", "train", "minilm-effnet", fields,
                           data=DataOptions(args.data_root))
    sub = FeatureSet(cached.ids[: args.n], {k: v[: args.n] for k, v in cached.tensors.items()},
                     cached.labels[: args.n])
    fit(create_head("mlp", sub.input_dims), sub, sub, TrainConfig(epochs=1))  # warm-up: imports
    head = create_head("mlp", sub.input_dims)
    t0 = time.perf_counter()
    fit(head, sub, sub, TrainConfig(epochs=3, batch_size=args.batch_size, patience=0))
    cached_epoch = (time.perf_counter() - t0) / 3

    # The seed's loop: decode + encode every batch, every epoch, then one head step.
    ds = get_dataset("multioff", args.data_root)
    records = select_fields(ds.records("train"), fields, "skip").records[: args.n]
    enc = create_encoder("minilm-effnet")
    tf = enc.image_transform()
    head = create_head("mlp", sub.input_dims)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for i in range(0, len(records), args.batch_size):
        chunk = records[i:i + args.batch_size]
        batch = {
            # clone: encoders run in inference mode, whose tensors autograd cannot save
            "image": enc.encode_images(torch.stack([tf(open_image(r.image)) for r in chunk])).pooled.clone(),
            "text": enc.encode_texts([r.text for r in chunk]).pooled.clone(),
            "label": torch.tensor([float(r.label) for r in chunk]),
        }
        loss = head.loss(head(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    reencode_epoch = time.perf_counter() - t0

    print(f"examples per epoch: {len(records)}  batch: {args.batch_size}")
    print(f"epoch on cached features (incl. dev eval): {cached_epoch:8.3f} s")
    print(f"epoch re-encoding every batch:             {reencode_epoch:8.3f} s")
    print(f"speed-up cached / re-encode:               {reencode_epoch / cached_epoch:8.1f}x")


if __name__ == "__main__":
    main()
