"""``memetrm extract``: features once per (split, encoder, field), cached for every head."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from memetrm.cli.options import (
    AllowOutside,
    BadLine,
    CacheDir,
    DataRoot,
    Dataset,
    Device,
    Encoder,
    Engine,
    Fields,
    GpusPerWorker,
    MissingImages,
    Precision,
    RayAddress,
    Runtime,
    Workers,
    check_engine,
    split_csv,
)
from memetrm.config import load_run_config
from memetrm.progress import console


def extract(
    dataset: Dataset = None,
    encoder: Encoder = None,
    splits: Annotated[str | None, typer.Option(help="Comma-separated (default: all).")] = None,
    fields: Fields = None,
    tokens: Annotated[bool, typer.Option(help="Also store token-level features.")] = False,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    on_missing_image: MissingImages = None,
    on_bad_line: BadLine = None,
    allow_outside_images: AllowOutside = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    num_workers: Annotated[int | None, typer.Option(help="Image-decoding workers.")] = None,
    device: Device = None,
    precision: Precision = None,
    engine: Engine = "local",
    address: RayAddress = None,
    workers: Workers = 2,
    gpus_per_worker: GpusPerWorker = 0.0,
    runtime: Runtime = None,
) -> None:
    """Compute features once per (split, encoder, field) and cache them."""
    from memetrm.data import get_dataset
    from memetrm.devices import resolve_device
    from memetrm.encoders import DEFAULT_ENCODER
    from memetrm.encoders.runtimes import with_runtime
    from memetrm.features import load_features

    check_engine(engine)
    encoder = with_runtime(encoder or DEFAULT_ENCODER, runtime) if runtime else encoder
    cfg = load_run_config(typed={
        "dataset": dataset, "encoder": encoder, "data_root": data_root, "cache_dir": cache_dir,
        "on_missing_image": on_missing_image, "on_bad_line": on_bad_line,
        "allow_outside_images": allow_outside_images, "device": device,
        "precision": precision})
    resolve_device(cfg.device)
    enc = cfg.encoder or DEFAULT_ENCODER
    ds = get_dataset(cfg.dataset, cfg.data_root, on_bad_line=cfg.on_bad_line,
                     allow_outside_images=cfg.allow_outside_images)
    field_list = split_csv(fields) or list(ds.default_fields)
    for split in split_csv(splits) or ds.splits():
        t0 = time.perf_counter()
        if engine == "ray":
            from memetrm.devices import init_ray
            from memetrm.features.cache import FeatureCache
            from memetrm.features.distributed import extract_ray
            from memetrm.features.extract import plan_extraction

            init_ray(address, num_cpus=workers)
            plan = plan_extraction(cfg.dataset, split, enc, field_list, tokens, cfg.data)
            extract_ray(plan, FeatureCache(cfg.cache_dir), workers, gpus_per_worker,
                        cfg.precision, batch_size)
        fs = load_features(cfg.dataset, split, enc, field_list, tokens=tokens, data=cfg.data,
                           batch_size=batch_size, num_workers=num_workers, device=cfg.device,
                           precision=cfg.precision)
        state = f"encoded {', '.join(fs.meta['encoded'])}" if fs.meta["encoded"] else "cached"
        console.print(f"{ds.identity}/{split}: {len(fs)} records, {state} "
                      f"({time.perf_counter() - t0:.1f}s)")


def register(app: typer.Typer) -> None:
    app.command()(extract)
