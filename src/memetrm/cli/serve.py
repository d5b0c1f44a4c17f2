"""``memetrm serve``: the model over HTTP (POST /v1/predict) with a web page at /."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from functools import partial
from pathlib import Path
from typing import Annotated, Any

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
    check_engine,
)
from memetrm.cli.policy import PolicyOption
from memetrm.cli.predict import make_predictor
from memetrm.errors import ConfigError
from memetrm.modelstore import read_config as load_config
from memetrm.progress import console
from memetrm.serving.hashing import LIST_DISTANCE, PDQ_DISTANCE
from memetrm.utils import plural


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will, and let it go: run before the model loads (seconds
    to minutes), so a port in use is an error at once, not after the load."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot serve on {host}:{port}: the host is unknown ({e})") from e
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            # asyncio's own options: a port in TIME_WAIT is free, IPv6 does not claim IPv4
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as e:
                why = ("the port is in use: stop what uses it or pick another --port"
                       if e.errno == errno.EADDRINUSE else
                       f"{e.strerror or e}: pick another --host or --port")
                raise ConfigError(f"cannot serve on {host}:{port}: {why}") from e


def serve(
    model: Model,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    max_upload_mb: Annotated[float, typer.Option()] = 10.0,
    max_text_chars: Annotated[int, typer.Option()] = 2000,
    timeout: Annotated[float, typer.Option(help="Seconds per prediction before 504.")] = 60.0,
    max_connections: Annotated[int, typer.Option(
        help="Open connections above this get 503.")] = 256,
    max_pending: Annotated[int, typer.Option(
        help="Predictions in progress above this get 503 at once.")] = 64,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a client may take to send its headers.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a client may take to send its request body; slower gets 408.")] = 10.0,
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
    review_db: Annotated[str | None, typer.Option(
        help="Queue the answers routed to review in this database: a file (SQLite) or an "
             "SQLAlchemy URL (postgresql+psycopg://...). Reviewers work at /review.")] = None,
    review_store_images: Annotated[bool, typer.Option(
        help="Keep the pictures of queued memes (else only their SHA-256 and PDQ hashes).")] = True,
    review_token: Annotated[str | None, typer.Option(
        envvar="MEMETRM_REVIEW_TOKEN", show_envvar=True,
        help="A reviewer's token (the reviewer 'reviewer'); the environment variable keeps it "
             "out of the process list.")] = None,
    review_tokens: Annotated[Path | None, typer.Option(
        help="File of reviewer tokens: one '<token> <reviewer name>' per line.")] = None,
    api_token: Annotated[str | None, typer.Option(
        envvar="MEMETRM_API_TOKEN", show_envvar=True,
        help="Token the scoring API (/v1/...) requires as 'Authorization: Bearer <token>'; "
             "without it the API is open.")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="local (one process), or ray: --replicas replicas on Ray Serve, on the "
                         "cluster at RAY_ADDRESS or an embedded local one (--max-connections "
                         "and --header-timeout are the local server's).")] = "local",
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas (--engine ray).")] = 1,
    policy: PolicyOption = None,
) -> None:
    """Serve the model over HTTP (POST /v1/predict) with a web page at / (and a review queue at
    /review with --review-db)."""
    check_engine(engine)
    if engine == "local" and replicas != 1:
        raise ConfigError("--replicas needs --engine ray")
    if engine == "ray":
        if device not in (None, "auto", "cpu"):
            raise ConfigError(f"--engine ray places its replicas on CPUs (--device cpu or auto), "
                              f"got --device {device}")
        try:
            from memetrm.serving import ray_serve
        except ImportError as e:
            if (e.name or "").partition(".")[0] != "ray":
                raise
            raise ConfigError("--engine ray needs Ray Serve: pip install 'memetrm[ray]'") from e
    check_port(host, port)
    warn_threshold(load_config(model), threshold)
    import uvicorn

    from memetrm.serving.app import Limits, create_app
    from memetrm.serving.auth import Tokens
    from memetrm.serving.guards import limit_malloc_arenas
    from memetrm.serving.protocol import protocol_with_header_timeout

    reviewers = Tokens.of(review_token, review_tokens)
    if review_db is not None and reviewers is None:
        raise ConfigError("--review-db needs reviewers: --review-token or --review-tokens FILE")
    limits = Limits(int(max_upload_mb * 1024 * 1024), max_text_chars, timeout_s=timeout,
                    body_timeout_s=body_timeout, max_pending=max_pending,
                    ocr_workers=ocr_workers)
    if review_db is not None and "://" not in review_db:
        review_db = str(Path(review_db).resolve())  # every replica opens the same file
    options = partial(app_options, docs, review_db, review_store_images, reviewers,
                      Tokens.of(api_token))
    if engine == "ray":
        # every replica loads the model itself, from paths that do not depend on its cwd
        load = partial(make_predictor, model.resolve(), device, threshold, runtime,
                       [p.resolve() for p in hash_list or []], list_distance, hash_distance,
                       cache_size, policy.resolve() if policy else None)
        with ray_serve.replicas(load, ray_serve.ReplicaSettings(replicas), limits, options,
                                host=host, port=port):
            console.print(f"serving {plural(replicas, 'replica')} of {model} on Ray Serve at "
                          f"http://{host}:{port} (Ctrl-C stops them)")
            # a service manager stops it with SIGTERM: the replicas go as on Ctrl-C
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return
    limit_malloc_arenas()
    predictor = make_predictor(model, device, threshold, runtime, hash_list, list_distance,
                               hash_distance, cache_size, policy)
    app = create_app(predictor, limits, threshold=threshold, **options())
    uvicorn.run(app, host=host, port=port, limit_concurrency=max_connections,
                timeout_keep_alive=5, http=protocol_with_header_timeout(header_timeout))


def app_options(docs: bool, review_db: str | None, store_images: bool, reviewers: Any,
                api_tokens: Any) -> dict[str, Any]:
    """``create_app``'s options past the model and limits, built where the app runs (each Ray
    replica opens its own connection to the review database)."""
    from memetrm.serving.review import ReviewStore

    review = ReviewStore(review_db, store_images=store_images) if review_db else None
    return {"docs": docs, "review": review, "review_tokens": reviewers, "api_tokens": api_tokens}


def register(app: typer.Typer) -> None:
    app.command()(serve)
