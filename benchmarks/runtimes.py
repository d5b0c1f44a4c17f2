"""Encoder runtimes side by side: torch vs onnx vs onnx-int8, in one process.

1. Tower forward throughput: MultiOFF test texts (batches of 32, and one at a time) and
   pre-decoded images (batches of 16, and one at a time).
2. Quality: the same heads (MLP, 3 seeds, trained and selected on torch features of train/dev)
   score MultiOFF test and Hateful Memes test_seen with features from each runtime: AUROC per
   runtime, the difference to torch per seed (target for int8: within 0.005), and the cosine
   similarity of each runtime's features to torch's.
3. Batch scoring (``predict --input`` path, ``predict_batch``): memes/s on MultiOFF test memes.

    python -m benchmarks.runtimes --data-root ../shared/data [--threads 1] [--seeds 3]

Writes docs/data/runtimes.json, the measured AUROC differences the predictor quotes when a
model is scored with another runtime (src/memetrm/serving/runtime_deltas.json), and the
tables of docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median, pstdev
from typing import Any

import torch

from benchmarks.render.runtimes import DATA, render
from memetrm.config import DataOptions
from memetrm.data import get_dataset, open_image, select_fields
from memetrm.encoders import create_encoder
from memetrm.encoders.runtimes import RUNTIMES, with_runtime
from memetrm.evaluation.metrics import auroc
from memetrm.features import load_features
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.runtime_deltas import DELTAS
from memetrm.training.engine import TrainConfig, fit, predict
from memetrm.utils import atomic_write_text

ENCODER = "minilm-effnet"
#: dataset -> fields, (train, dev, test) splits
DATASETS = {"multioff": (["image", "text"], ("train", "val", "test")),
            "hateful_memes": (["text", "caption"], ("train", "dev_seen", "test_seen"))}


def timed(fn, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def tower_speed(data_root: str | None, n_text: int = 64, n_image: int = 32) -> dict[str, Any]:
    ds = get_dataset("multioff", data_root)
    records = select_fields(ds.records("test"), ["image", "text"], "skip").records
    texts = [r.texts["text"] for r in records[:n_text]]
    images = [open_image(r.image) for r in records[:n_image]]
    out = {}
    for runtime in RUNTIMES:
        enc = create_encoder(with_runtime(ENCODER, runtime), device="cpu")
        pixels = torch.stack([enc.image_transform()(i) for i in images])
        t_text = timed(lambda e=enc: [e.encode_texts(texts[i:i + 32]) for i in range(0, n_text, 32)])
        t_img = timed(lambda e=enc, px=pixels: [e.encode_images(px[i:i + 16])
                                                for i in range(0, n_image, 16)])
        t_text1 = timed(lambda e=enc: [e.encode_texts([t]) for t in texts[:32]])
        t_img1 = timed(lambda e=enc, px=pixels: [e.encode_images(px[i:i + 1]) for i in range(8)])
        out[runtime] = {"texts_per_s": n_text / t_text, "images_per_s": n_image / t_img,
                        "texts_per_s_b1": 32 / t_text1, "images_per_s_b1": 8 / t_img1}
        print(f"{runtime:>10}: " + ", ".join(f"{k} {v:.1f}" for k, v in out[runtime].items()),
              flush=True)
    return out


def features(dataset: str, split: str, runtime: str, fields: list[str], data_root: str | None):
    return load_features(dataset=dataset, split=split, encoder=with_runtime(ENCODER, runtime),
                         fields=fields, data=DataOptions(data_root, on_missing_image="skip"),
                         device="cpu")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).mean())


def quality(dataset: str, seeds: int, data_root: str | None, keep: Path) -> dict[str, Any]:
    fields, (train_s, dev_s, test_s) = DATASETS[dataset]
    train, dev = (features(dataset, s, "torch", fields, data_root) for s in (train_s, dev_s))
    heads = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        head = create_head("mlp", {f: train.tensors[f].shape[1] for f in fields})
        heads.append(fit(head, train, dev, TrainConfig(seed=seed, threads=1),
                         device="cpu").head)
    test = {r: features(dataset, test_s, r, fields, data_root) for r in RUNTIMES}
    y = test["torch"].labels.numpy()
    per_runtime = {}
    for runtime, fs in test.items():
        assert fs.ids == test["torch"].ids
        scores = [auroc(y, predict(h, fs, device="cpu")["prob"].numpy()) for h in heads]
        per_runtime[runtime] = {"auroc": scores, "cosine_to_torch": {
            f: cosine(fs.tensors[f], test["torch"].tensors[f]) for f in fields}}
    base = per_runtime["torch"]["auroc"]
    for runtime, r in per_runtime.items():
        r["delta"] = [a - b for a, b in zip(r["auroc"], base, strict=True)]
        print(f"{dataset}/{test_s} {runtime:>10}: AUROC {mean(r['auroc']):.4f} ± "
              f"{pstdev(r['auroc']):.4f}, delta {mean(r['delta']):+.4f} "
              f"(max |delta| {max(map(abs, r['delta'])):.4f}), cosine {r['cosine_to_torch']}",
              flush=True)
    save_pretrained(heads[0], keep, encoder=ENCODER, fields=fields, tokens=False,
                    threshold=0.5, dataset=dataset)
    return {"split": test_s, "fields": fields, "n": len(y), "runtimes": per_runtime}


def batch_scoring(model: Path, data_root: str | None, n: int, tmp: Path) -> dict[str, float]:
    from memetrm.serving.batch import predict_batch
    from memetrm.serving.predictor import Predictor

    ds = get_dataset("multioff", data_root)
    records = select_fields(ds.records("test"), ["image", "text"], "skip").records[:n]
    source = tmp / "memes.jsonl"
    source.write_text("".join(json.dumps({"id": r.id, "img": str(r.image.resolve()),
                                          "text": r.texts["text"]}) + "\n" for r in records))
    out = {}
    for runtime in ("torch", "onnx-int8"):
        predictor = Predictor(model, runtime=runtime, device="cpu")
        result = tmp / f"scores-{runtime}.jsonl"
        t0 = time.perf_counter()
        predict_batch(predictor, source, result, 16)
        out[runtime] = len(records) / (time.perf_counter() - t0)
        print(f"batch scoring {runtime:>10}: {out[runtime]:.1f} memes/s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-memes", type=int, default=96)
    ap.add_argument("--json", type=Path, default=DATA)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    towers = tower_speed(args.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        results = {ds: quality(ds, args.seeds, args.data_root, Path(tmp) / ds) for ds in DATASETS}
        scoring = batch_scoring(Path(tmp) / "multioff", args.data_root, args.batch_memes, Path(tmp))
    result = {"command": "python -m benchmarks.runtimes " + " ".join(sys.argv[1:]),
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
              "threads": args.threads, "seeds": args.seeds, "towers": towers,
              "quality": results, "batch_scoring": scoring}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    deltas = {f"torch->{rt}": {f"{ds}/{q['split']}": mean(q["runtimes"][rt]["delta"])
                                for ds, q in results.items()} for rt in RUNTIMES[1:]}
    atomic_write_text(DELTAS, json.dumps({ENCODER: deltas}, indent=2) + "\n")
    if args.json == DATA:
        render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
