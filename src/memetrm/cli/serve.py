"""``memetrm predict`` (one meme, or a resumable batch to jsonl) and ``memetrm serve``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from memetrm.cli.options import Device, Threshold
from memetrm.data.images import open_image
from memetrm.errors import ConfigError, DataError
from memetrm.progress import console


def predict(
    model: Path = typer.Option(..., "--model", help="model directory from `memetrm train --save`"),
    image: Path | None = typer.Option(None, "--image", help="one meme image"),
    text: str | None = typer.Option(None, "--text", help="meme text; omitted -> OCR"),
    caption: str | None = typer.Option(None, "--caption",
                                       help="caption, for models trained with one"),
    input: Path | None = typer.Option(
        None, "--input", help="folder of images, jsonl (id, img, text) or Parquet (id, img "
                              "path or bytes, text, caption)"),
    output: Path | None = typer.Option(
        None, "--output", help="results .jsonl (appended, resumable) or .parquet"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    engine: str = typer.Option("local", "--engine", help="local, or ray (Ray Data workers)"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: start an embedded local one)"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray workers, each loads the model"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0),
    as_json: bool = typer.Option(False, "--json", help="print the prediction as JSON"),
    threshold: Threshold = None,
    device: Device = None,
) -> None:
    """Score one meme (--image and/or --text, --caption) or a folder/jsonl/Parquet (--input ...
    --output results.jsonl). A model that reads no image scores a meme from its texts alone."""
    one = image is not None or text is not None or caption is not None
    if one == (input is not None):
        raise typer.BadParameter("give one meme (--image and/or --text, --caption) or --input")
    if input is not None and output is None:
        raise typer.BadParameter("--input needs --output")
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, got {engine!r}")
    for path in (image, input):
        if path is not None and not path.exists():  # checked before the model loads
            raise DataError(f"{path}: no such file or folder")
    if input is not None and engine == "ray":
        from memetrm.serving.ray_batch import predict_ray

        summary = predict_ray(model, input, output, address=address, workers=workers,
                              gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                              threshold=threshold)
        console.print(f"{summary} -> {output}")
        return
    from memetrm.serving.predictor import Predictor  # torch: only once the inputs are known good

    predictor = Predictor(model, device=device or "auto", threshold=threshold)
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
    texts = {k: v for k, v in {"text": text, "caption": caption}.items() if v is not None}
    result = predictor.predict([open_image(image) if image else None], [texts])[0]
    if as_json:
        typer.echo(json.dumps({"image": str(image) if image else None, **result}, allow_nan=False))
        return
    color = "red" if result["label"] else "green"
    verdict = f"[{color}]{result['label_name']}[/{color}]"
    Console().print(f"{image or 'meme'}: p({predictor.label_names[1]}) = [bold]{result['prob']:.3f}[/bold] "
                    f"-> {verdict} "
                    f"(threshold {result['threshold']:.3f}, model {result['model']})")
    if result["ocr_text"] is not None:
        Console().print(f"OCR text: {result['ocr_text']!r}")
    if result["trace"]:
        Console().print("trace: " + " -> ".join(f"{p:.3f}" for p in result["trace"]))
    if result["steps"] is not None:  # an early-exit head returns steps without a trace
        of = f" of {len(result['trace'])}" if result["trace"] else ""
        Console().print(f"halted after {result['steps']}{of} steps")
    for n in result["neighbours"] or []:
        Console().print(f"  near {n['id']} (label {n['label']}, similarity {n['similarity']:.3f})")


def serve(
    model: Path = typer.Option(..., "--model", help="model directory from `memetrm train --save`"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb"),
    max_text_chars: int = typer.Option(2000, "--max-text-chars"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds per prediction before 504"),
    max_connections: int = typer.Option(256, "--max-connections",
                                        help="open connections above this get 503"),
    max_pending: int = typer.Option(64, "--max-pending",
                                    help="predictions in progress above this get 503 at once"),
    header_timeout: float = typer.Option(10.0, "--header-timeout",
                                         help="seconds a client may take to send its headers"),
    docs: bool = typer.Option(False, "--docs", help="serve /docs (Swagger UI, from its CDN)"),
    threshold: Threshold = None,
    device: Device = None,
) -> None:
    """Serve the model over HTTP (POST /v1/predict) with a web page at /."""
    import uvicorn

    from memetrm.serving.app import Limits, create_app
    from memetrm.serving.protocol import protocol_with_header_timeout

    limits = Limits(int(max_upload_mb * 1024 * 1024), max_text_chars, timeout_s=timeout,
                    max_pending=max_pending)
    app = create_app(model, limits, device=device or "auto", docs=docs, threshold=threshold)
    uvicorn.run(app, host=host, port=port, limit_concurrency=max_connections,
                timeout_keep_alive=5, http=protocol_with_header_timeout(header_timeout))


memory = typer.Typer(help="A retrieval head's memory of labelled memes.", no_args_is_help=True)


@memory.command("add")
def memory_add(
    model: Path = typer.Option(..., "--model", help="a saved `retrieval` model directory"),
    input: Path = typer.Option(..., "--input", help="jsonl: id, label (0/1), text fields, "
                                                    "optional img path"),
    device: Device = None,
) -> None:
    """Add labelled memes to a saved retrieval head without retraining (all rows or none)."""
    if not input.is_file():
        raise DataError(f"{input}: no such file")
    from memetrm.serving.memory import add_to_memory

    size = add_to_memory(model, input, device=device or "auto")
    console.print(f"{model}: memory now holds {size} memes")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("serve")(serve)
    app.add_typer(memory, name="memory")
