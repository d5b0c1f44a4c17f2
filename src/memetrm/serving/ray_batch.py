"""Batch scoring on Ray Data: the local engine's per-item logic, run by a pool of workers that
each load the model once, from its safetensors directory (nothing is pickled but the inputs).

A worker that dies is restarted by Ray and its batch retried; the driver writes each id once,
so a retried batch never duplicates a row, and ids already in the output are skipped (resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memetrm.serving.batch import (
    BatchSummary,
    InputItem,
    ResultLog,
    pending_inputs,
    score_chunk,
)


class Scorer:
    """A Ray Data worker: the model is loaded once per worker, then scores whole batches."""

    def __init__(self, model_dir: str, device: str, threshold: float | None = None,
                 policy: str | None = None) -> None:
        from memetrm.progress import quiet_third_party
        from memetrm.serving.policy import PolicyFile
        from memetrm.serving.predictor import Predictor

        quiet_third_party()
        self.predictor = Predictor(model_dir, device=device, threshold=threshold,
                                   policy=PolicyFile.read(policy) if policy else None)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [InputItem(i, Path(p) if p else (d or None), json.loads(t), e or None)
                 for i, p, d, t, e in zip(batch["id"], batch["path"], batch["data"],
                                          batch["texts"], batch["error"], strict=True)]
        return {"row": [json.dumps(r, allow_nan=False) for r in score_chunk(self.predictor, items)]}


def _row(item: InputItem) -> dict[str, Any]:
    return {"id": item.id, "path": str(item.image) if isinstance(item.image, Path) else "",
            "data": item.image if isinstance(item.image, bytes) else b"",
            "texts": json.dumps(item.texts), "error": item.error or ""}


def predict_ray(model_dir: str | Path, source: Path, output: Path, *, address: str | None = None,
                workers: int = 2, gpus_per_worker: float = 0, batch_size: int = 16,
                threshold: float | None = None, policy: Path | None = None) -> BatchSummary:
    """Score ``source`` into ``output`` on a Ray cluster (an embedded local one by default)."""
    import ray

    from memetrm.devices import init_ray

    log = ResultLog(output)
    summary = BatchSummary()
    try:
        rows = [_row(it) for it in pending_inputs(source, set(log.done), summary)]
        if rows:
            init_ray(address, num_cpus=max(workers, 1))
            scored = ray.data.from_items(rows).map_batches(
                Scorer, fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()),
                                               "threshold": threshold,
                                               "policy": str(policy.resolve()) if policy else None,
                                               "device": "cuda" if gpus_per_worker else "cpu"},
                batch_size=batch_size, num_gpus=gpus_per_worker,
                # Ray Data restarts a dead actor and retries its batch (its defaults for pools)
                compute=ray.data.ActorPoolStrategy(size=workers))
            for batch in scored.iter_batches(batch_size=batch_size, batch_format="numpy"):
                summary.count(log.write([json.loads(r) for r in batch["row"]]))
    finally:
        log.close()
    return summary
