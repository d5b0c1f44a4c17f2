"""Prometheus metrics at ``/metrics``: requests by status, latency, queue depth, batch sizes,
predictions cancelled by their client, feature-memo hit rates, hash-list matches, and, to watch
for drift, the score histogram and the answers per action.

Each app has its own registry (several apps may live in one process, as in the tests); the
predictor's counters are read at scrape time, so scoring pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memetrm.serving.predictor import Predictor

#: paths reported by name; any other path is counted as ``other`` (bounded label values)
PATHS = ("/v1/predict", "/v1/model", "/health", "/metrics", "/")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: score histogram buckets: twentieths of [0, 1]
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))
#: memo counter -> (kind, result) labels
MEMO_LOOKUPS = {"image_exact": ("image", "exact"), "image_near": ("image", "near"),
                "image_miss": ("image", "miss"), "image_unhashable": ("image", "unhashable"),
                "text_hit": ("text", "hit"), "text_miss": ("text", "miss")}


class _Measure:
    """ASGI middleware: one count and one latency observation per HTTP response."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in PATHS else "other"
        start, status = time.perf_counter(), ["500"]

        async def tracked(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = str(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, tracked)
        finally:
            self.requests.labels(path, status[0]).inc()
            self.latency.labels(path).observe(time.perf_counter() - start)


class _PredictorCollector(Collector):
    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def collect(self) -> Iterator:
        p = self.predictor
        sizes = dict(p.batch_sizes)
        buckets = [(str(b), sum(n for s, n in sizes.items() if s <= b)) for b in BATCH_BUCKETS]
        hist = HistogramMetricFamily("memetrm_batch_size", "Items per scored model batch")
        hist.add_metric([], [*buckets, ("+Inf", sum(sizes.values()))],
                        sum(s * n for s, n in sizes.items()))
        yield hist
        listed = CounterMetricFamily("memetrm_hash_list_matches",
                                     "Memes answered from a known-meme hash list")
        listed.add_metric([], p.listed)
        yield listed
        entries = GaugeMetricFamily("memetrm_hash_list_entries",
                                    "Known memes on the hash lists (each counted once)")
        entries.add_metric([], len(p.known))
        yield entries
        if p.memo is None:
            return
        stats = p.memo.stats()
        lookups = CounterMetricFamily("memetrm_feature_memo_lookups",
                                      "Feature-memo lookups by kind and result",
                                      labels=["kind", "result"])
        for key, labels in MEMO_LOOKUPS.items():
            lookups.add_metric(list(labels), stats[key])
        yield lookups
        evicted = CounterMetricFamily("memetrm_feature_memo_evictions", "Entries evicted (LRU)")
        evicted.add_metric([], stats["evicted"])
        yield evicted
        size = GaugeMetricFamily("memetrm_feature_memo_entries", "Entries held",
                                 labels=["kind"])
        size.add_metric(["image"], stats["image_entries"])
        size.add_metric(["text"], stats["text_entries"])
        yield size


def add_metrics(app: FastAPI, predictor: Predictor, queue_depth: Callable[[], int]
                ) -> tuple[Counter, Callable[[dict[str, Any]], None]]:
    """Count every request and serve the metrics at ``/metrics`` (text exposition format).
    Returns the counter of predictions whose client disconnected, and ``observe(answer)``, which
    counts one answer's score and action."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    requests = Counter("memetrm_requests", "HTTP requests by path and status",
                       ["path", "status"], registry=registry)
    latency = Histogram("memetrm_request_seconds", "HTTP request latency", ["path"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                        registry=registry)
    Gauge("memetrm_queue_depth", "Predictions waiting for the next model batch",
          registry=registry).set_function(queue_depth)
    registry.register(_PredictorCollector(predictor))
    scores = Histogram("memetrm_score", "Scores (prob) of answered memes, by what answered",
                       ["source"], buckets=SCORE_BUCKETS, registry=registry)
    actions = Counter("memetrm_actions", "Answers by action", ["action"], registry=registry)
    app.add_middleware(_Measure, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def observe(answer: dict[str, Any]) -> None:
        scores.labels(answer["source"]["kind"]).observe(answer["prob"])
        actions.labels(str(answer.get("action"))).inc()

    cancelled = Counter("memetrm_cancelled_predictions", "Predictions dropped because their "
                        "client disconnected before the answer", registry=registry)
    return cancelled, observe
