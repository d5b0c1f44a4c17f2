"""How well the PDQ repost cache / hash lists find reposts, and how often they confuse memes.

Every MultiOFF image is hashed as published and after each re-share transform (JPEG quality
50, resized to 70 %, cropped 5 % (2.5 % per side), a 10-pixel white border, and all four
together). Recall = share of transformed copies within the distance of their original;
false-match rate = share of all pairs of distinct MultiOFF images within the distance.

    python -m benchmarks.near_dup --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks.render.near_dup import DATA, render
from memetrm.data import get_dataset, open_image, select_fields
from memetrm.serving.hashing import PDQ_DISTANCE, pdq
from memetrm.utils import atomic_write_text

#: distances measured at; the renderer reads them from the JSON, the first as the match distance
DISTANCES = (PDQ_DISTANCE, 47, 63)


def jpeg50(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=50)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize70(img: Image.Image) -> Image.Image:
    return img.resize((max(1, int(img.width * 0.7)), max(1, int(img.height * 0.7))))


def crop5(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((w // 40, h // 40, w - w // 40, h - h // 40))


def border10(img: Image.Image) -> Image.Image:
    return ImageOps.expand(img, 10, fill=(255, 255, 255))


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "JPEG q50": jpeg50, "resize 70%": resize70, "crop 5%": crop5, "10 px border": border10,
    "all four": lambda img: jpeg50(border10(resize70(crop5(img)))),
}


def packed(hashes: list) -> np.ndarray:
    return np.array([np.frombuffer(h.bits, np.uint8) for h in hashes])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", type=Path, default=DATA)
    args = ap.parse_args()

    ds = get_dataset("multioff", args.data_root)
    paths = sorted({r.image for s in ds.splits()
                    for r in select_fields(ds.records(s), ["image"], "skip").records})
    images = [open_image(p) for p in paths]
    t0 = time.perf_counter()
    originals = [pdq(img) for img in images]
    hash_ms = (time.perf_counter() - t0) / len(images) * 1000
    reliable = np.array([h.reliable for h in originals])
    base = packed(originals)
    recall = {}
    for name, fn in TRANSFORMS.items():
        d = np.bitwise_count(packed([pdq(fn(img)) for img in images]) ^ base).sum(1)
        recall[name] = {"median_distance": float(np.median(d)),
                        **{str(t): float(((d <= t) & reliable).mean()) for t in DISTANCES}}
        print(f"{name:>13}: median distance {np.median(d):.0f}, recall "
              + ", ".join(f"<={t}: {recall[name][str(t)]:.3f}" for t in DISTANCES), flush=True)
    i, j = np.triu_indices(len(base), 1)
    pair_d = np.bitwise_count(base[i] ^ base[j]).sum(1)
    false = {str(t): {"rate": float((pair_d <= t).mean()), "pairs": int((pair_d <= t).sum())}
             for t in DISTANCES}
    close = np.flatnonzero(pair_d <= PDQ_DISTANCE)
    matched = sorted(([paths[i[k]].name, paths[j[k]].name, int(pair_d[k])] for k in close),
                     key=lambda m: m[2])
    print(f"{len(pair_d)} pairs; false matches "
          + ", ".join(f"<={t}: {false[str(t)]['pairs']}" for t in DISTANCES)
          + f"; hash {hash_ms:.1f} ms/image; {int((~reliable).sum())} low-quality", flush=True)
    result = {"command": "python -m benchmarks.near_dup " + " ".join(sys.argv[1:]),
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
              "images": len(images), "low_quality": int((~reliable).sum()),
              "hash_ms": hash_ms, "pairs": len(pair_d), "recall": recall, "false": false,
              "matched_pairs": matched}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    if args.json == DATA:
        render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
