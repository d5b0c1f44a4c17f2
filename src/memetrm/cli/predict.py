"""``memetrm predict``: one meme, or a resumable batch (folder, jsonl, Parquet) to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from memetrm.cli.checks import check_one_meme, warn_threshold
from memetrm.cli.options import (
    CacheSize,
    Device,
    Engine,
    GpusPerWorker,
    HashDistance,
    HashLists,
    ListDistance,
    Model,
    RayAddress,
    Runtime,
    Threshold,
    Workers,
    check_engine,
)
from memetrm.cli.policy import Community, PolicyOption
from memetrm.errors import ConfigError, DataError
from memetrm.modelstore import read_config as load_config
from memetrm.progress import console
from memetrm.serving.hashing import LIST_DISTANCE, PDQ_DISTANCE


def make_predictor(model: Path, device: str | None, threshold: float | None,
                   runtime: str | None, hash_lists: list[Path] | None, list_distance: int,
                   distance: int, cache_size: int, policy: Path | None = None) -> Any:
    """The model loaded for scoring, with its runtime, hash lists (matched within
    ``list_distance``), feature memo (reusing images within ``distance``) and policy file. No
    encoder is loaded until a meme needs one."""
    from memetrm.serving.feature_memo import FeatureMemo
    from memetrm.serving.hashlist import HashList
    from memetrm.serving.policy import PolicyFile
    from memetrm.serving.predictor import Predictor  # torch: only once the inputs are known good

    for path in hash_lists or []:
        if not path.is_file():
            raise DataError(f"{path}: no such hash list")
    lists = [HashList.read(path) for path in hash_lists or []]
    return Predictor(model, device=device, threshold=threshold, runtime=runtime,
                     hash_lists=lists, list_distance=list_distance,
                     memo=FeatureMemo(cache_size, distance) if cache_size else None,
                     policy=PolicyFile.read(policy) if policy else None)


def predict(
    model: Model,
    image: Annotated[Path | None, typer.Option(help="One meme image.")] = None,
    text: Annotated[str | None, typer.Option(help="Meme text; omitted: read by OCR.")] = None,
    caption: Annotated[str | None, typer.Option(
        help="One sentence describing the picture, as the training captions were, for models "
             "trained on captions (caption, caption_mean, caption_random: one given caption is "
             "its own mean).")] = None,
    input: Annotated[Path | None, typer.Option(
        help="Folder of images, jsonl (id, img, text) or Parquet (id, img path or bytes, text, "
             "caption).")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Results .jsonl (appended, resumable) or .parquet.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    engine: Engine = "local",
    address: RayAddress = None,
    workers: Workers = 2,
    gpus_per_worker: GpusPerWorker = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the prediction as JSON.")] = False,
    threshold: Threshold = None,
    device: Device = None,
    runtime: Runtime = None,
    hash_list: HashLists = None,
    list_distance: ListDistance = LIST_DISTANCE,
    hash_distance: HashDistance = PDQ_DISTANCE,
    cache_size: CacheSize = 0,
    policy: PolicyOption = None,
    community: Community = None,
) -> None:
    """Score one meme (--image and/or --text, --caption) or a folder/jsonl/Parquet (--input ...
    --output results.jsonl). A model that reads no image scores a meme from its texts alone.
    Every answer carries an action: the label, or with --policy the policy's."""
    one = image is not None or text is not None or caption is not None
    if one == (input is not None):
        raise typer.BadParameter("give one meme (--image and/or --text, --caption) or --input")
    if input is not None and output is None:
        raise typer.BadParameter("--input needs --output")
    if input is not None and community is not None:
        raise typer.BadParameter("--community is for one meme; a batch input names each row's "
                                 "in a 'community' column")
    check_engine(engine)
    for path in (image, input, policy):
        if path is not None and not path.exists():  # checked before the model loads
            raise DataError(f"{path}: no such file or folder")
    config = load_config(model)
    texts = {k: v for k, v in {"text": text, "caption": caption}.items() if v is not None}
    if one:
        check_one_meme(model, config, image is not None, texts)
    warn_threshold(config, threshold)
    if input is not None and engine == "ray":
        from memetrm.serving.ray_batch import predict_ray

        if runtime or hash_list or cache_size or list_distance != LIST_DISTANCE:
            raise ConfigError("--runtime, --hash-list, --list-distance and --cache-size work "
                              "with --engine local")

        summary = predict_ray(model, input, output, address=address, workers=workers,
                              gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                              threshold=threshold, policy=policy)
        console.print(f"{summary} -> {output}")
        return
    predictor = make_predictor(model, device, threshold, runtime, hash_list, list_distance,
                               hash_distance, cache_size, policy)
    if input is not None:
        from memetrm.serving.batch import predict_batch

        try:
            summary = predict_batch(predictor, input, output, batch_size)
        except KeyboardInterrupt:
            console.print(f"interrupted: finished batches are in {output}; "
                          "rerun the same command to resume")
            raise typer.Exit(130) from None
        console.print(f"{summary} -> {output}")
        return
    from memetrm.data.images import open_image

    meme = {**texts, "community": community} if community else texts
    result = predictor.predict([open_image(image) if image else None], [meme])[0]
    if as_json:
        typer.echo(json.dumps({"image": str(image) if image else None, **result}, allow_nan=False))
        return
    show(result, str(image or "meme"), predictor.label_names[1])


def show(result: dict[str, Any], name: str, positive: str) -> None:
    """One prediction for a person: verdict, who answered, and what explains it (OCR, trace,
    neighbours)."""
    out = Console()
    color = "red" if result["label"] else "green"
    raw = "" if result["score_raw"] is None else f" (raw score {result['score_raw']:.3f})"
    out.print(f"{name}: p({positive}) = [bold]{result['prob']:.3f}[/bold]{raw} -> "
              f"[{color}]{result['label_name']}[/{color}] (threshold {result['threshold']:.3f})")
    out.print(f"action: {result['action']} ({result['action_reason']['words']})", markup=False)
    out.print(f"answered by {result['source']['words']}", markup=False)
    if result["ocr_text"] is not None:
        out.print(f"OCR text: {result['ocr_text']!r}")
    if result["trace"]:
        out.print("trace: " + " -> ".join(f"{p:.3f}" for p in result["trace"]))
    if result["steps"] is not None:  # an early-exit head returns steps without a trace
        of = f" of {len(result['trace'])}" if result["trace"] else ""
        out.print(f"halted after {result['steps']}{of} steps")
    for n in result["neighbours"] or []:
        out.print(f"  near {n['id']} (label {n['label']}, similarity {n['similarity']:.3f})")


def register(app: typer.Typer) -> None:
    app.command()(predict)
