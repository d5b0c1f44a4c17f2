"""Replicas on Ray Serve: ``memetrm serve --engine ray --replicas N`` runs the app that
``create_app`` builds, unchanged, in N replicas behind Serve's HTTP proxy.

Each replica loads the model from its folder itself (a shared filesystem on a cluster; nothing
is pickled but the options), and the app's lifespan starts the folder watcher in every replica,
so each one picks up ``memory add``, ``hashes add`` and new training revisions on its own. The
towers sit behind ``@serve.batch`` in place of the local ``MicroBatcher``. ``/health`` and
``/metrics`` answer for the replica that serves them, named in the ``x-memetrm-replica``
response header (every response carries it).

Ray is imported with this module: import it only for ``--engine ray``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memetrm.devices import init_ray
from memetrm.progress import quiet_third_party
from memetrm.serving.app import Limits, create_app
from memetrm.serving.guards import limit_malloc_arenas
from memetrm.serving.predictor import Predictor, Prepared

#: the Serve application's name, so that stopping it leaves other applications on a cluster
APP_NAME = "memetrm"
#: the response header naming the replica that answered
REPLICA_HEADER = "x-memetrm-replica"


@dataclass
class ReplicaSettings:
    """How many replicas run, what each reserves from Ray, and how each batches."""

    replicas: int = 1
    #: Ray CPUs each replica reserves (a scheduling share: 2 replicas fit a 2-core machine)
    cpus_per_replica: float = 0.5
    #: the local ``MicroBatcher``'s batch size
    max_batch_size: int = 16
    #: how long a batch waits to fill on an idle replica; while a batch runs, the next one
    #: fills for as long as the last one took (``ServeBatcher``)
    batch_wait_s: float = 0.0


class ServeBatcher:
    """The app's batcher on a replica: ``@serve.batch`` gathers concurrent predictions into
    one ``Predictor.run_each`` call (a failing batch is rescored item by item there).

    Serve forms the next batch while one runs, so with a fixed short wait a busy replica would
    score one item per batch. As the local ``MicroBatcher`` takes whatever queued while the
    last batch ran, the wait while a batch runs is the last batch's time; an idle replica waits
    ``batch_wait_s``.
    """

    def __init__(self, predictor: Predictor, settings: ReplicaSettings) -> None:
        self.predictor, self.settings = predictor, settings
        #: predictions submitted and not yet in a batch (ids of their items)
        self._queued: set[int] = set()
        self._last_batch_s = 0.0
        # its own thread: scoring never blocks the replica's event loop nor queues behind
        # decode/OCR work in the shared pool
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="memetrm-score")
        self._score = serve.batch(max_batch_size=settings.max_batch_size,
                                  batch_wait_timeout_s=settings.batch_wait_s)(self._run)

    def depth(self) -> int:
        return len(self._queued)

    async def submit(self, item: Prepared) -> dict[str, Any]:
        self._queued.add(id(item))
        try:
            result = await self._score(item)
        finally:  # a request cancelled while queued never reaches a batch
            self._queued.discard(id(item))
        if isinstance(result, Exception):
            raise result
        return result

    async def _run(self, items: list[Prepared]) -> list[dict[str, Any] | Exception]:
        self._queued.difference_update(map(id, items))
        idle_wait = self.settings.batch_wait_s
        self._score.set_batch_wait_timeout_s(max(idle_wait, self._last_batch_s))
        start = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._scorer, self.predictor.run_each, items)
        finally:
            self._last_batch_s = time.perf_counter() - start
            self._score.set_batch_wait_timeout_s(idle_wait)


class ReplicaHeader:
    """ASGI middleware: names the replica in every response, so that ``/health``,
    ``/metrics`` and each prediction say which replica answered."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), self.header]}
            await send(msg)

        await self.app(scope, receive, named)


@serve.ingress()
class Replica:
    """One Serve replica: the model loaded from its folder and the app built around it, once,
    when the replica starts (Serve then runs the app's lifespan: the folder watcher)."""

    def __init__(self, make_predictor: Callable[[], Predictor], limits: Limits,
                 app_options: Callable[[], dict[str, Any]], settings: ReplicaSettings) -> None:
        quiet_third_party()
        limit_malloc_arenas()
        predictor = make_predictor()
        self._app = create_app(predictor, limits, batcher=ServeBatcher(predictor, settings),
                               **app_options())
        self._app.add_middleware(ReplicaHeader,
                                 replica=serve.get_replica_context().replica_tag)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app


@contextlib.contextmanager
def replicas(make_predictor: Callable[[], Predictor], settings: ReplicaSettings,
             limits: Limits, app_options: Callable[[], dict[str, Any]] = dict, *,
             host: str = "127.0.0.1", port: int = 8000) -> Iterator[None]:
    """Serve ``settings.replicas`` replicas at ``host:port`` while the block runs; returns
    once every replica is up, and removes them after the block.

    Joins the Ray cluster at ``RAY_ADDRESS``, or starts an embedded local one (no dashboard, no
    usage stats) with one Ray CPU per core, or more where the replicas' shares need them, that
    ends with the block. Serve's HTTP proxy listens at ``host:port``.
    ``make_predictor`` runs in every replica, and once here first: a model that fails to load
    fails here, with its message, not in N replicas' logs, retried. ``app_options`` gives each
    replica the rest of ``create_app``'s options (docs, review queue, tokens).
    """
    make_predictor()
    address = os.environ.get("RAY_ADDRESS") or None
    embedded = not ray.is_initialized() and address is None
    init_ray(address, num_cpus=max(os.cpu_count() or 1,
                                   math.ceil(settings.replicas * settings.cpus_per_replica)))
    try:
        serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": 5})
        deployment = serve.deployment(Replica).options(
            num_replicas=settings.replicas,
            ray_actor_options={"num_cpus": settings.cpus_per_replica},
            # a replica holds as many requests as its app admits; each proxy queues as many
            # more and answers 503 beyond
            max_ongoing_requests=limits.max_pending, max_queued_requests=limits.max_pending)
        serve.run(deployment.bind(make_predictor, limits, app_options, settings), name=APP_NAME,
                  route_prefix="/")
        yield
    finally:
        if embedded:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(APP_NAME)
