"""``memetrm serve``: the model over HTTP (POST /v1/predict) with a web page at /."""

from __future__ import annotations

from typing import Annotated

import typer

from memetrm.cli.checks import warn_threshold
from memetrm.cli.options import (
    CacheSize,
    Device,
    HashDistance,
    HashLists,
    ListDistance,
    Model,
    Runtime,
    Threshold,
)
from memetrm.cli.policy import PolicyOption
from memetrm.cli.predict import make_predictor
from memetrm.modelstore import read_config as load_config
from memetrm.serving.hashing import LIST_DISTANCE, PDQ_DISTANCE


def serve(
    model: Model,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    max_upload_mb: Annotated[float, typer.Option()] = 10.0,
    max_text_chars: Annotated[int, typer.Option()] = 2000,
    timeout: Annotated[float, typer.Option(help="Seconds per prediction before 504.")] = 60.0,
    max_connections: Annotated[int, typer.Option(
        help="Open connections above this get 503.")] = 256,
    max_pending: Annotated[int, typer.Option(
        help="Predictions in progress above this get 503 at once.")] = 64,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a client may take to send its headers.")] = 10.0,
    ocr_workers: Annotated[int, typer.Option(
        min=1, help="OCR calls run at once; more wait within --timeout.")] = 2,
    docs: Annotated[bool, typer.Option(help="Serve /docs (Swagger UI, from its CDN).")] = False,
    threshold: Threshold = None,
    device: Device = None,
    runtime: Runtime = None,
    hash_list: HashLists = None,
    list_distance: ListDistance = LIST_DISTANCE,
    hash_distance: HashDistance = PDQ_DISTANCE,
    cache_size: CacheSize = 4096,
    policy: PolicyOption = None,
) -> None:
    """Serve the model over HTTP (POST /v1/predict) with a web page at /."""
    warn_threshold(load_config(model), threshold)
    import uvicorn

    from memetrm.serving.app import Limits, create_app
    from memetrm.serving.guards import limit_malloc_arenas
    from memetrm.serving.protocol import protocol_with_header_timeout

    limits = Limits(int(max_upload_mb * 1024 * 1024), max_text_chars, timeout_s=timeout,
                    max_pending=max_pending, ocr_workers=ocr_workers)
    limit_malloc_arenas()
    predictor = make_predictor(model, device, threshold, runtime, hash_list, list_distance,
                               hash_distance, cache_size, policy)
    app = create_app(predictor, limits, docs=docs, threshold=threshold)
    uvicorn.run(app, host=host, port=port, limit_concurrency=max_connections,
                timeout_keep_alive=5, http=protocol_with_header_timeout(header_timeout))


def register(app: typer.Typer) -> None:
    app.command()(serve)
