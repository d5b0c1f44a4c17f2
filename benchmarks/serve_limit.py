"""Where the limit of one box is for serving, and how near ``memetrm serve`` comes to it.

1. Stages, in one process, on MultiOFF memes as the server receives them, each at its best
   batch: JPEG decode (at the size the server decodes to, and at full size), PDQ, the image
   transform, the text tower (length-bucketed, as the predictor batches) and the image tower,
   for the torch and onnx-int8 runtimes. The limit is a meme's serial cost: 1000 / (decode +
   PDQ + transform + text + image) memes/s per runtime.
2. The reduced decode against the full one, on the memes it reduces, as served and scaled up
   2x: decode time, PDQ distance, and the largest change of a probability.
3. A real ``memetrm serve`` (its defaults: the repost memo on) per runtime and traffic on
   127.0.0.1: 1, 8 and 32 closed-loop clients sending fresh memes (all distinct), then, on a
   new server, half reposts (an earlier meme at 70 % and JPEG q50, its text in capitals), then
   on that server only reposts (of the memes it has seen): what a repost costs alone.

    python -m benchmarks.serve_limit --model models/mo-mlp --data-root ../shared/data [--quick]

Writes docs/data/serve_limit.json (stage and served tables, the load average before and after,
``ratio_fresh_8``, ``speedup_vs_torch_8``, ``reposts_vs_fresh_8`` from the reposts-only
rows and ``half_reposts_vs_fresh_8``) and its tables in docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from benchmarks.render.serve_limit import DATA, render
from benchmarks.runtimes import timed
from benchmarks.serve import MemeStream, jpeg, make_model, meme_png, run_load, start_server
from memetrm.data.images import open_image
from memetrm.provenance import provenance
from memetrm.serving.app import Limits
from memetrm.serving.feature_memo import FeatureMemo
from memetrm.serving.hashing import distances, pdq
from memetrm.serving.predictor import Predictor, length_buckets
from memetrm.utils import atomic_write_text

RUNTIMES = ("torch", "onnx-int8")
BATCHES = (1, 4, 8, 16, 32)
#: (memes, repeats, clients, seconds per client count) of a full run and of ``--quick``
FULL = {"memes": None, "stage_memes": 32, "repeats": 2, "clients": (1, 8, 32), "duration": 6.0}
QUICK = {"memes": 48, "stage_memes": 8, "repeats": 1, "clients": (1, 8, 32), "duration": 1.0}


def per_meme_ms(fn: Callable[[Any], Any], items: Sequence[Any], repeats: int) -> float:
    return 1000 * timed(lambda: [fn(x) for x in items], repeats) / len(items)


def best_batch(fn: Callable[[Any], Any], items: Any, repeats: int) -> tuple[int, float]:
    """(batch size, ms per meme) of the fastest batch size for ``fn(items[i:i + batch])``."""
    ms = {b: 1000 * timed(lambda b=b: [fn(items[i:i + b]) for i in range(0, len(items), b)],
                          repeats) / len(items)
          for b in BATCHES if b <= len(items)}
    best = min(ms, key=ms.__getitem__)
    return best, ms[best]


def stages(model: Path, jpegs: list[bytes], texts: list[str], repeats: int) -> dict[str, Any]:
    """Each stage's ms per meme; the decode, PDQ and transform are the runtimes' shared steps."""
    # as `memetrm serve` runs them: the repost memo on, so the decode is sized for PDQ too
    predictors = {r: Predictor(model, runtime=r, memo=FeatureMemo()) for r in RUNTIMES}
    reduce_to, side = Limits().reduce_to, predictors[RUNTIMES[0]].draft_side(ocr=False)
    transform = predictors[RUNTIMES[0]].encoder.image_transform()
    images = [open_image(d, reduce_to=reduce_to, draft_to=side) for d in jpegs]
    shared = {"JPEG decode at full size": (lambda d: open_image(d, reduce_to=reduce_to), jpegs),
              f"JPEG decode drafted to {side} px": (
                  lambda d: open_image(d, reduce_to=reduce_to, draft_to=side), jpegs),
              "PDQ": (pdq, images), "image transform": (transform, images)}
    rows = [{"stage": name, "runtime": None, "batch": 1, "ms": per_meme_ms(fn, items, repeats),
             "in_limit": name != "JPEG decode at full size"}
            for name, (fn, items) in shared.items()]
    pixels = torch.stack([transform(i) for i in images])
    sums = {}
    for runtime, predictor in predictors.items():
        enc = predictor.encoder
        text_batch, text_ms = best_batch(
            lambda ts, e=enc: [e.encode_texts([ts[j] for j in b]) for b in length_buckets(ts)],
            texts, repeats)
        image_batch, image_ms = best_batch(enc.encode_images, pixels, repeats)
        rows += [{"stage": "text tower", "runtime": runtime, "batch": text_batch, "ms": text_ms,
                  "in_limit": True},
                 {"stage": "image tower", "runtime": runtime, "batch": image_batch,
                  "ms": image_ms, "in_limit": True}]
        sums[runtime] = sum(r["ms"] for r in rows if r["in_limit"]
                            and r["runtime"] in (None, runtime))
        print(f"{runtime}: text {text_ms:.1f} ms (batch {text_batch}), image {image_ms:.1f} ms "
              f"(batch {image_batch}), stage sum {sums[runtime]:.1f} ms", flush=True)
    return {"rows": rows, "stage_sum_ms": sums, "draft_side": side,
            "limit": {r: 1000 / ms for r, ms in sums.items()}}


def draft_effect(model: Path, jpegs: list[bytes], texts: list[str],
                 repeats: int) -> dict[str, Any]:
    """The reduced decode against the full one, on the memes it reduces (the others decode
    to the same pixels): decode time, PDQ distance, and the change of each probability."""
    predictor = Predictor(model, memo=FeatureMemo())
    side, reduce_to = predictor.draft_side(ocr=False), Limits().reduce_to
    predictor.memo = None  # the side is the memo's; the features must come from each decode
    pairs = [(open_image(d, reduce_to=reduce_to), open_image(d, reduce_to=reduce_to,
                                                              draft_to=side), d, t)
             for d, t in zip(jpegs, texts, strict=True)]
    pairs = [p for p in pairs if p[0].size != p[1].size]
    out: dict[str, Any] = {"memes": len(jpegs), "reduced": len(pairs), "side": side}
    if not pairs:
        return out
    reduced = [d for *_, d, _ in pairs]
    bits = [int(distances(pdq(full), np.frombuffer(pdq(small).bits, np.uint8)[None])[0])
            for full, small, *_ in pairs]
    dp = []
    for i in range(0, len(pairs), 32):
        chunk = pairs[i:i + 32]
        a = predictor.run([predictor.prepare(f, t, lists=False) for f, _, _, t in chunk])
        b = predictor.run([predictor.prepare(s, t, lists=False) for _, s, _, t in chunk])
        dp += [abs(x["prob"] - y["prob"]) for x, y in zip(a, b, strict=True)]
    return {**out, "pdq_max": max(bits), "pdq_mean": mean(bits), "dp_max": max(dp),
            "dp_mean": mean(dp),
            "decode_full_ms": per_meme_ms(lambda d: open_image(d, reduce_to=reduce_to),
                                          reduced, repeats),
            "decode_drafted_ms": per_meme_ms(
                lambda d: open_image(d, reduce_to=reduce_to, draft_to=side), reduced, repeats)}


def scaled_up(jpegs: list[bytes], factor: int = 2) -> list[bytes]:
    """The memes at ``factor`` times their size (phone-photo sizes: MultiOFF's are at most
    640 px), re-encoded at JPEG quality 90."""
    out = []
    for d in jpegs:
        img = open_image(d)
        out.append(jpeg(img.resize((img.width * factor, img.height * factor), Image.BICUBIC)))
    return out


def served(model: Path, stream: MemeStream, clients: Sequence[int],
           duration: float) -> list[dict[str, Any]]:
    """One ``memetrm serve`` per (runtime, traffic), each with memes it has not seen."""
    rows = []
    for runtime in RUNTIMES:
        for traffics in ((("fresh", 0.0),), (("half reposts", 0.5), ("reposts", 1.0))):
            proc, base = start_server(model, "--runtime", runtime, cli=True)
            try:
                run_load(base + "/v1/predict", 1, min(2.0, duration), meme_png(), False)
                stream.restart(traffics[0][1])
                for traffic, reposts in traffics:
                    stream.share(reposts)
                    for n in clients:
                        r = {"runtime": runtime, "traffic": traffic, "clients": n,
                             **run_load(base + "/v1/predict", n, duration, b"", False, stream)}
                        rows.append(r)
                        print(f"{runtime:>10} {traffic:>13} {n:>3} clients: {r['rps']:6.1f} "
                              f"req/s, p50 {r['p50']:.0f} ms, errors {r['errors']}", flush=True)
                model_id = httpx.get(base + "/v1/model").json()["model"]
            finally:
                proc.terminate()
                proc.wait(30)
    for r in rows:
        r["model"] = model_id
    return rows


def summary(limit: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ratios the issue of serving past one box set targets for."""
    def rps(runtime: str, traffic: str, clients: int) -> float:
        return next(r["rps"] for r in rows if (r["runtime"], r["traffic"], r["clients"])
                    == (runtime, traffic, clients))

    fast = "onnx-int8"
    p50_1 = next(r["p50"] for r in rows if (r["runtime"], r["traffic"], r["clients"])
                 == (fast, "fresh", 1))
    return {"ratio_fresh_8": rps(fast, "fresh", 8) / limit["limit"][fast],
            "speedup_vs_torch_8": rps(fast, "fresh", 8) / rps("torch", "fresh", 8),
            "reposts_vs_fresh_8": rps(fast, "reposts", 8) / rps(fast, "fresh", 8),
            "half_reposts_vs_fresh_8": rps(fast, "half reposts", 8) / rps(fast, "fresh", 8),
            "p50_1_minus_stage_sum_ms": p50_1 - limit["stage_sum_ms"][fast]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model dir (default: an untrained MLP head on "
                                               "minilm-effnet: the encoder dominates the cost)")
    ap.add_argument("--data-root", default=None, help="holds multioff/ (default: MEMETRM_DATA)")
    ap.add_argument("--quick", action="store_true", help="few memes, 1 s runs (a smoke test)")
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp) / "bench-mlp")
        stream = MemeStream(args.data_root, plan["memes"])
        distinct = len(stream.memes) // 3  # as published; then mirrored, then flipped
        jpegs = [m[0] for m in stream.memes[:distinct]]
        texts = [m[2] for m in stream.memes[:distinct]]
        limit = stages(model, jpegs[:plan["stage_memes"]], texts[:plan["stage_memes"]],
                       plan["repeats"])
        big = plan["stage_memes"]
        draft = {"as served": draft_effect(model, jpegs, texts, plan["repeats"]),
                 "scaled up 2x": draft_effect(model, scaled_up(jpegs[:big]), texts[:big],
                                              plan["repeats"])}
        print(f"reduced decode: {json.dumps(draft)}", flush=True)
        rows = served(model, stream, plan["clients"], plan["duration"])
    result = {"provenance": provenance(threads=torch.get_num_threads(),
                                       cores=len(os.sched_getaffinity(0))),
              "quick": args.quick, "memes": distinct, "duration": plan["duration"],
              "load_before": list(load_before), "load_after": list(os.getloadavg()),
              "stages": limit, "draft": draft, "served": rows, **summary(limit, rows)}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("_8", "_ms"))}))
    if args.json == DATA:
        render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
