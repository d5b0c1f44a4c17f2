"""Feature extraction over many processes: Ray workers, or torchrun ranks on a multi-GPU node.

A split's records are cut into contiguous shards (no padding, no duplicates: unlike
``DistributedSampler``, which pads the last shard with repeats); each worker encodes its shard,
and the driver (or rank 0) concatenates the shards in order and writes the same cache entry,
same key, ids order and format, that ``load_features`` writes, so ``train`` finds it warm.

    torchrun --nproc_per_node 2 -m memetrm.features.distributed --dataset multioff --encoder ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from memetrm.config import DataOptions
from memetrm.data.records import MemeRecord
from memetrm.devices import resolve_device
from memetrm.features.cache import FeatureCache
from memetrm.features.extract import ExtractionPlan, encode_field, plan_extraction


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering ``range(n)`` exactly once, sizes within 1."""
    base, extra = divmod(n, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def encode_shard(encoder: str, records: Sequence[MemeRecord], field: str, tokens: bool,
                 device: str = "auto", precision: str = "auto",
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """One worker's part: its records encoded in order (the encoder is built in the worker)."""
    from memetrm.encoders import create_encoder

    enc = create_encoder(encoder, device=resolve_device(device))
    return encode_field(enc, records, field, tokens, batch_size, num_workers=0,
                        desc=f"{field} shard", precision=precision)


def merge(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Shards back into one entry, in order; token tensors are padded to the longest shard."""
    out = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].ndim >= 2 and key.endswith((".tokens", ".mask")):
            length = max(t.shape[1] for t in tensors)
            tensors = [torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, length - t.shape[1]))
                       for t in tensors]
        out[key] = torch.cat(tensors)
    return out


def extract_ray(plan: ExtractionPlan, cache: FeatureCache, workers: int = 2,
                gpus_per_worker: float = 0, precision: str = "auto",
                batch_size: int = 32) -> list[str]:
    """Encode the plan's uncached fields on Ray workers and cache them; returns those fields."""
    import ray

    device = "cuda" if gpus_per_worker else "cpu"
    remote = ray.remote(num_gpus=gpus_per_worker, max_retries=3)(encode_shard)
    done = []
    for field in plan.fields:
        if plan.cached(cache, field) is not None:
            continue
        refs = [remote.remote(plan.encoder, plan.records[a:b], field, plan.tokens, device,
                              precision, batch_size)
                for a, b in shard_bounds(len(plan.records), workers) if b > a]
        cache.save(plan.keys[field], merge(ray.get(refs)),
                   plan.cache_meta(field, f"ray:{workers}x{device}", precision))
        done.append(field)
    return done


def extract_torchrun(plan: ExtractionPlan, cache: FeatureCache, precision: str = "auto",
                     batch_size: int = 32, log: Callable[[str], Any] = print) -> list[str]:
    """Run in every rank of a ``torchrun`` job: each encodes its shard, rank 0 merges."""
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file

    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    done = []
    for field in plan.fields:
        if plan.cached(cache, field) is not None:
            continue
        shards = cache.root / "shards" / plan.keys[field]
        shards.mkdir(parents=True, exist_ok=True)
        a, b = shard_bounds(len(plan.records), world)[rank]
        part = encode_shard(plan.encoder, plan.records[a:b], field, plan.tokens, device,
                            precision, batch_size)
        save_file({k: v.contiguous() for k, v in part.items()}, str(shards / f"{rank}.safetensors"))
        dist.barrier()
        if rank == 0:
            parts = [load_file(str(shards / f"{r}.safetensors")) for r in range(world)]
            cache.save(plan.keys[field], merge(parts),
                       plan.cache_meta(field, f"torchrun:{world}x{device}", precision))
            shutil.rmtree(shards, ignore_errors=True)
            log(f"{plan.dataset.identity}/{plan.split} {field}: merged {world} shards")
        dist.barrier()
        done.append(field)
    return done


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: every split (or ``--splits``) of a dataset into the cache."""
    import torch.distributed as dist

    ap = argparse.ArgumentParser(description="Feature extraction sharded over torchrun ranks.")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--encoder", default="minilm-effnet")
    ap.add_argument("--splits", default=None, help="comma-separated (default: all)")
    ap.add_argument("--fields", default=None, help="comma-separated (default: the dataset's)")
    ap.add_argument("--tokens", action="store_true")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--on-missing-image", default="error")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        from memetrm.data import get_dataset

        ds = get_dataset(args.dataset, args.data_root)
        fields = args.fields.split(",") if args.fields else list(ds.default_fields)
        cache = FeatureCache(Path(args.cache_dir) if args.cache_dir else None)
        for split in args.splits.split(",") if args.splits else ds.splits():
            plan = plan_extraction(args.dataset, split, args.encoder, fields, args.tokens,
                                   DataOptions(args.data_root, on_missing_image=args.on_missing_image))
            extract_torchrun(plan, cache, args.precision, args.batch_size,
                             log=print if dist.get_rank() == 0 else lambda _m: None)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
